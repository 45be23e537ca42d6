"""Detoxify a causal language model with PPO against reward models.

    accelerate launch train_ppo.py                                  # offline default (SmolLM2, CPU-friendly)
    accelerate launch train_ppo.py --config configs/gpt-j-6b.yaml   # the TRL toxicity example's setup
    accelerate launch train_ppo.py --config configs/X.yaml --ppo.steps 100 --checkpoint.resume_from_checkpoint latest
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


@dataclass
class Run:
    """Everything a run is made of, built before the first step."""

    cfg: Any
    accelerator: Any
    trainer: Any
    tracker: Any
    probes: Any
    output_dir: Path
    config: dict


def build(argv: list[str] | None = None) -> Run:
    """Parse the config, then load prompts, rewards, models and, when asked, the checkpoint to resume from."""
    from detox.config import TrainConfig, parse_config

    cfg: TrainConfig = parse_config(argv)  # an unknown or mistyped field fails here, before any model loads
    if cfg.checkpoint.push_to_hub:
        from detox.export import hub_token

        hub_token(cfg.checkpoint.push_to_hub)  # offline or without a token: fail now, not after training
    output_dir = prepare_output_dir(Path(cfg.checkpoint.output_dir))
    guard_earlier_run(output_dir, cfg.checkpoint)

    use_gloo_without_gpus()
    use_every_core_when_alone()
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from detox import tracking
    from detox.checkpoint import resolve_checkpoint
    from detox.data import check_held_out, load_prompts
    from detox.models import build_models, load_tokenizer
    from detox.probes import ProbeRecorder
    from detox.sharding import sharding_on_cpu
    from detox.state import config_dict, load_policy_weights, load_training_checkpoint
    from detox.trainer import PPOTrainer
    from rewards import RewardComposer

    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.ppo.gradient_accumulation_steps,
        log_with=tracking.accelerate_log_with(cfg.logging),
        project_dir=str(output_dir),
    )
    sharding_on_cpu(accelerator)
    accelerator.print(f"engine: {accelerator.distributed_type.value}, {accelerator.num_processes} process(es)")
    set_seed(cfg.ppo.seed, device_specific=True)  # each rank samples differently, reproducibly
    checkpoint = None
    if cfg.checkpoint.resume_from_checkpoint:
        checkpoint = resolve_checkpoint(cfg.checkpoint.resume_from_checkpoint, output_dir)
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
    prompts = load_prompts(cfg.data, tokenizer)
    accelerator.print(f"prompts: {len(prompts.train)} train, {len(prompts.heldout)} held out; {prompts.stats}")
    composer = RewardComposer(cfg.rewards)
    check_held_out(prompts.heldout, composer.fitted_prompts())
    models = build_models(cfg.model, cfg.lora)
    accelerator.print("memory: " + ", ".join(f"{k} {v:.3f}" for k, v in models.memory_report.items()))
    if checkpoint is not None:
        load_policy_weights(models.policy, checkpoint)  # before a sharding engine slices the weights
    trainer = PPOTrainer(cfg, accelerator, models, tokenizer, prompts.train, composer)
    if checkpoint is not None:
        load_training_checkpoint(trainer, checkpoint)
        if accelerator.is_main_process:
            trim_logs(output_dir, trainer.step_index)
        accelerator.print(f"resumed from {checkpoint} at step {trainer.step_index}")
    write_heldout(output_dir, prompts.heldout, accelerator)
    config = config_dict(cfg)
    tracker = tracking.make_tracker(cfg.logging, accelerator, output_dir, config)
    probes = ProbeRecorder(tokenizer, cfg.logging.probes, accelerator.device)
    return Run(cfg, accelerator, trainer, tracker, probes, output_dir, config)


def run(r: Run) -> Path:
    """Train to `ppo.steps`, save the final model (merged and uploaded when asked) and draw the run's pictures."""
    from detox.probes import probe_images
    from detox.state import save_final
    from detox.trainer import train

    train(r.trainer, r.tracker, r.probes, r.output_dir, r.config)
    final = save_final(r.trainer, r.output_dir, r.config)
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
    from detox.export import export_merged, push_to_hub

    target = final
    if ckpt.export == "merged" and (final / "adapter_config.json").is_file():
        target = export_merged(final, final.parent / "merged")
        print(f"saved {target} (LoRA merged into the base)", flush=True)
    if ckpt.push_to_hub:
        print(f"uploaded {target} to {push_to_hub(target, ckpt.push_to_hub)}", flush=True)


def main(argv: list[str] | None = None) -> Path:
    return run(build(argv))


def trim_logs(output_dir: Path, step: int) -> None:
    """Drop the rows an interrupted run logged after its last checkpoint: the resumed run logs those steps again."""
    import json

    for name in ("metrics.jsonl", "samples.jsonl"):
        path = output_dir / name
        if path.is_file():
            rows = path.read_text(encoding="utf-8").splitlines(keepends=True)
            path.write_text("".join(r for r in rows if json.loads(r).get("step", 0) <= step), encoding="utf-8")


def use_gloo_without_gpus() -> None:
    """Several processes started by torchrun (or `accelerate launch` with accelerate_configs/multi_cpu.yaml) on a
    machine without CUDA: tell accelerate to join them over gloo on the CPU instead of running each one alone."""
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "true"


def use_every_core_when_alone() -> None:
    """Give a lone CPU process every core.

    `accelerate launch` without a config sets OMP_NUM_THREADS=1 for its one process, which halves the offline
    default's speed on a 2-core machine. When this is the only process, there is no GPU and the launcher left one
    thread, take all physical cores instead, unless DETOX_CPU_THREADS says how many to use.
    """
    import torch

    chosen = os.environ.get("DETOX_CPU_THREADS")
    if chosen is not None:
        if not chosen.isdigit() or int(chosen) < 1:
            raise ValueError(f"DETOX_CPU_THREADS ({chosen!r}) must be a positive whole number of threads.")
        torch.set_num_threads(int(chosen))
        return
    alone = int(os.environ.get("WORLD_SIZE", "1")) == 1 and not torch.cuda.is_available()
    from_launcher = "ACCELERATE_MIXED_PRECISION" in os.environ and os.environ.get("OMP_NUM_THREADS") == "1"
    if alone and from_launcher:
        import psutil

        cores = min(psutil.cpu_count(logical=False) or 1, len(os.sched_getaffinity(0)))
        if cores > 1:
            torch.set_num_threads(cores)
            print(f"accelerate launch left 1 CPU thread; using {cores} (set DETOX_CPU_THREADS to choose)", flush=True)


RUN_FILES = ("latest", "metrics.jsonl", "samples.jsonl")


def guard_earlier_run(output_dir: Path, ckpt) -> None:
    """Refuse to start a fresh run on top of an earlier one unless told to resume it or to overwrite it."""
    import shutil

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


def write_heldout(output_dir: Path, heldout: list[str], accelerator) -> None:
    """The held-out prompts, one JSON record a line, for evaluate_toxicity.py --prompts."""
    import json

    if accelerator.is_main_process:
        with (output_dir / "heldout_prompts.jsonl").open("w") as handle:
            for text in heldout:
                handle.write(json.dumps({"prompt": {"text": text}}) + "\n")


def cli(entry) -> None:
    """Run `entry(argv)` and exit 0; a user error (bad config, missing file, unreachable Hub...) prints one line and
    exits 1. Anything else raises with its traceback."""
    try:
        entry(sys.argv[1:])
        code = 0
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        code = 1
    exit_process(code)


def exit_process(code: int) -> None:
    """Exit with `code`; a process that joined a process group (a launched multi-process run) skips the interpreter's
    finalization.

    A sharding engine keeps its process groups referenced until the interpreter tears down (DeepSpeed ZeRO-3 pins
    them on every parameter and keeps the model in a module-level list), so destroying the groups cannot join their
    gloo worker threads. When such a thread frees a finished collective's tensors while the interpreter finalizes, it
    aborts the process ("terminate called without an active exception", SIGABRT) after the run has saved everything,
    and `accelerate launch` reports the run failed (3 launches in 55 of the ZeRO-3 test here). Once the run's work is
    done, the process leaves the groups, does what the exit hooks it skips would do (W&B's teardown, which finishes
    any run left open with this exit code; flushing logs and output), and exits at once.
    """
    import logging

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        sys.exit(code)
    dist.destroy_process_group()
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown(exit_code=code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    cli(main)
