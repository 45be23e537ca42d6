"""What every entry point does around its job: the output directory and the guard against overwriting a run, process
setup on CPU machines, the held-out prompts file, sharing a final model, and the command-line error path.

Every script (`train_ppo.py`, `train_unlearn.py`, `train_grpo.py`, `evaluate_toxicity.py`) and the recipes use these
functions, so that a run refuses, reports and exits the same way whichever trainer made it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import sys
import time
from pathlib import Path

import psutil
import torch
import torch.distributed as dist

from detox.export import export_merged, hub_token, push_to_hub
from detox.probes import probe_images


def start_run(ckpt) -> Path:
    """What a trainer does before it loads anything: check the Hub token when the run will upload (offline or without
    a token it fails now, not after training), make the output directory, refuse to overwrite an earlier run, and set
    up CPU processes. Returns the output directory."""
    if ckpt.push_to_hub:
        hub_token(ckpt.push_to_hub)
    output_dir = prepare_output_dir(Path(ckpt.output_dir))
    guard_earlier_run(output_dir, ckpt)
    use_gloo_without_gpus()
    use_every_core_when_alone()
    return output_dir


def finish(r, final: Path) -> Path:
    """What a run does once its final model is saved: the probe pictures go to the tracker, the tracker closes, and
    the model is merged and uploaded when `checkpoint.export` and `checkpoint.push_to_hub` ask. `r` is a
    detox.jobs.train_ppo.Run (a loss-based run has the same parts)."""
    if r.accelerator.is_main_process:
        images = probe_images(r.probes.save(r.output_dir, r.cfg.logging.probe_gamma))
        r.tracker.log_images(images, step=r.trainer.step_index)
    r.tracker.finish()
    r.accelerator.print(f"saved {final}")
    if r.accelerator.is_main_process:
        share(final, r.cfg.checkpoint)
    return final


def share(final: Path, ckpt) -> None:
    """`checkpoint.export merged` and `checkpoint.push_to_hub`: everything trained is already saved in `final`."""
    target = final
    if ckpt.export == "merged" and (final / "adapter_config.json").is_file():
        target = export_merged(final, final.parent / "merged")
        print(f"saved {target} (LoRA merged into the base)", flush=True)
    if ckpt.push_to_hub:
        print(f"uploaded {target} to {push_to_hub(target, ckpt.push_to_hub)}", flush=True)


def trim_logs(output_dir: Path, step: int) -> None:
    """Drop the rows an interrupted run logged after its last checkpoint: the resumed run logs those steps again."""
    for name in ("metrics.jsonl", "samples.jsonl"):
        path = output_dir / name
        if path.is_file():
            rows = path.read_text(encoding="utf-8").splitlines(keepends=True)
            path.write_text("".join(r for r in rows if json.loads(r).get("step", 0) <= step), encoding="utf-8")


def use_gloo_without_gpus() -> None:
    """Several processes started by torchrun (or `accelerate launch` with accelerate_configs/multi_cpu.yaml) on a
    machine without CUDA: tell accelerate to join them over gloo on the CPU instead of running each one alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "true"


def use_every_core_when_alone() -> None:
    """Give a lone CPU process every core.

    `accelerate launch` without a config sets OMP_NUM_THREADS=1 for its one process, which halves the offline
    default's speed on a 2-core machine. When this is the only process, there is no GPU and the launcher left one
    thread, take all physical cores instead, unless DETOX_CPU_THREADS says how many to use.
    """
    chosen = os.environ.get("DETOX_CPU_THREADS")
    if chosen is not None:
        if not chosen.isdigit() or int(chosen) < 1:
            raise ValueError(f"DETOX_CPU_THREADS ({chosen!r}) must be a positive whole number of threads.")
        torch.set_num_threads(int(chosen))
        return
    alone = int(os.environ.get("WORLD_SIZE", "1")) == 1 and not torch.cuda.is_available()
    from_launcher = "ACCELERATE_MIXED_PRECISION" in os.environ and os.environ.get("OMP_NUM_THREADS") == "1"
    if alone and from_launcher:
        cores = min(psutil.cpu_count(logical=False) or 1, len(os.sched_getaffinity(0)))
        if cores > 1:
            torch.set_num_threads(cores)
            print(f"accelerate launch left 1 CPU thread; using {cores} (set DETOX_CPU_THREADS to choose)", flush=True)


RUN_FILES = ("latest", "metrics.jsonl", "samples.jsonl")


def guard_earlier_run(output_dir: Path, ckpt) -> None:
    """Refuse to start a fresh run on top of an earlier one unless told to resume it or to overwrite it."""
    earlier = [name for name in RUN_FILES if (output_dir / name).exists()]
    if not earlier or ckpt.resume_from_checkpoint:
        return
    if not ckpt.overwrite:
        raise FileExistsError(
            f"checkpoint.output_dir '{output_dir}' already holds a run ({', '.join(earlier)}). Continue it with "
            f"--checkpoint.resume_from_checkpoint latest, choose another output_dir, or set "
            f"--checkpoint.overwrite true to delete it and start afresh."
        )
    for path in [*output_dir.glob("checkpoint-*"), *(output_dir / name for name in earlier)]:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def prepare_output_dir(path: Path) -> Path:
    """Create the output directory and prove it is writable before anything expensive happens."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"checkpoint.output_dir '{path}' cannot be written ({err.strerror}); choose a writable directory."
        ) from None
    return path


def write_heldout(output_dir: Path, heldout: list, accelerator) -> None:
    """The held-out prompts, one JSON record a line, for evaluate_toxicity.py --prompts: text as {"prompt": {"text"}},
    chat messages as {"prompt": [messages]}, so evaluation renders them as training did."""
    if accelerator.is_main_process:
        with (output_dir / "heldout_prompts.jsonl").open("w") as handle:
            for prompt in heldout:
                handle.write(json.dumps({"prompt": prompt if isinstance(prompt, list) else {"text": prompt}}) + "\n")


USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError)
"""What bad input raises: a bad setting or value, a missing file, a run already in the output directory, a directory
that cannot be written."""
PROJECT_PACKAGES = ("detox", "rewards")


def is_user_error(err: BaseException) -> bool:
    """Whether `err` reports bad input or a stop the run explains, which the command line shows as one line.

    Those are USER_ERRORS and every error class the project defines (a setting of the wrong type, an unreachable Hub,
    a checkpoint that cannot be read, a reward that broke, a NaN loss the run was told to stop on, non-finite
    weights): each message says what happened and what to do. A plain RuntimeError, TypeError or KeyError comes from
    torch (out of memory, a shape mismatch) or from a bug, and keeps its traceback.
    """
    return isinstance(err, USER_ERRORS) or type(err).__module__.split(".")[0] in PROJECT_PACKAGES


def cli(entry) -> None:
    """Run `entry(argv)` and exit 0; a user error (`is_user_error`) prints `error: <message>` as the last line and
    exits 1. Anything else raises with its traceback."""
    try:
        entry(sys.argv[1:])
        code = 0
    except Exception as err:
        if not is_user_error(err):
            raise
        print(f"error: {err}", file=sys.stderr, flush=True)
        code = 1
    exit_process(code)


def exit_process(code: int) -> None:
    """Exit with `code`; a process that joined a process group (a launched multi-process run) skips the interpreter's
    finalization, and a failed process that `accelerate launch` started alone stops its launcher first.

    A sharding engine keeps its process groups referenced until the interpreter tears down (DeepSpeed ZeRO-3 pins
    them on every parameter and keeps the model in a module-level list), so destroying the groups cannot join their
    gloo worker threads. When such a thread frees a finished collective's tensors while the interpreter finalizes, it
    aborts the process ("terminate called without an active exception", SIGABRT) after the run has saved everything,
    and `accelerate launch` reports the run failed (3 launches in 55 of the ZeRO-3 test here). Once the run's work is
    done, the process leaves the groups, does what the exit hooks it skips would do (W&B's teardown, which finishes
    any run left open with this exit code; flushing logs and output), and exits at once.
    """
    grouped = dist.is_available() and dist.is_initialized()
    launcher = lone_accelerate_launcher() if code else None
    if not (grouped or launcher):
        sys.exit(code)
    if grouped:
        dist.destroy_process_group()
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown(exit_code=code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    if launcher:
        stop_launcher(launcher)
    os._exit(code)


def lone_accelerate_launcher():
    """The `accelerate launch` process (psutil.Process) that started this one as its only process, else None.

    Multi-process launches (torchrun's agent inside the launcher: WORLD_SIZE > 1, TORCHELASTIC_RUN_ID) are left as
    they are: their agent reports which ranks failed.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or "TORCHELASTIC_RUN_ID" in os.environ:
        return None

    try:
        parent = psutil.Process(os.getppid())
        words = [Path(arg).name for arg in parent.cmdline()[:4]]
    except psutil.Error:
        return None
    launch = any(w in ("accelerate-launch", "accelerate.commands.launch") for w in words) or any(
        w in ("accelerate", "accelerate.commands.accelerate_cli") and after == "launch"
        for w, after in zip(words, words[1:]))
    return parent if launch else None


def stop_launcher(launcher) -> None:
    """Stop `accelerate launch` quietly, so that this process's `error: ...` line stays the last one printed.

    A launcher whose only process exits non-zero raises CalledProcessError, whose traceback buries the line (unless
    launched with --quiet). On SIGTERM it exits 143 without one instead: accelerate 1.16 handles the signal by
    stopping its process and exiting; a launcher without a handler dies of it. The launcher copies this process's
    stderr through a pipe, which must be drained first: a chunk it has read but not yet written when the signal lands
    is lost. This process ignores the launcher's own SIGTERM, so that it still exits with its code.
    """
    if stat.S_ISFIFO(os.fstat(sys.stderr.fileno()).st_mode):
        import fcntl  # lazy: POSIX only, and only a launched process that failed needs them
        import struct
        import termios

        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            unread = struct.unpack("i", fcntl.ioctl(sys.stderr.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
            if not unread:
                break
            time.sleep(0.01)
        time.sleep(0.05)  # the launcher has read the last chunk; let it write it out
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    launcher.send_signal(signal.SIGTERM)
