"""How far one PPO step is from the irreducible work of its batch, phase by phase, and what the frozen-trunk cache
saves of it.

    python -m benchmarks.step_floor [--config configs/offline_default.yaml] [--steps 4] [--threads 2] [--profile DIR]
    python -m benchmarks.step_floor --trunk_cost --config configs/offline_profanity.yaml [--steps 3] [--repeats 2] \
        -- --lora.enabled false --model.num_shared_layers 20

For each measured step it runs `PPOTrainer.step()` (our step as users run it) and then, on the very same prompts
and sampled responses, the floor of each phase:
- generate: the model calls of generation alone: one prefill over the prompts and one cached forward per new
  token, greedy, with no sampling, stopping or decoding logic around them;
- forward: one policy forward (logits of the response positions, values) and one reference forward;
- update: `ppo_epochs` x (forward + backward + optimiser step) per mini-batch, with a trivial loss.
Scoring is the reward's own cost and is reported, not floored. It prints the medians and our/floor ratios per phase
(target: total <= 1.5x). `--profile DIR` also writes a torch profiler trace (Chrome JSON) of one step per phase.

With `--trunk_cost` it times our step alone, with the frozen-trunk cache on and off: the same run built afresh for
each, alternating `--repeats` times so that a change in the machine's load hits both alike, medians over the measured
steps and then over the repeats. The cache applies to full fine-tuning of a Llama-style decoder whose reference shares
its lower layers (the offline SmolLM2 with 20 of its 30 layers shared, above). Sharded runs (FSDP, DeepSpeed ZeRO-3)
need LoRA, where the cache never applies; this is what a run gives up when it is off.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import detox.trainer as trainer_module
from benchmarks.harness import REPO
from detox.jobs import train_ppo
from detox.models import causal_lm_forward, position_ids

PHASES = ("generate", "score", "forward", "update")
TRUNK_PHASES = ("generate", "forward", "update", "step")
"""The phases the frozen-trunk cache can change (scoring never runs the policy), and the whole step."""


@contextmanager
def timer(out: dict, key: str):
    start = time.perf_counter()
    yield
    out[key] = time.perf_counter() - start


def capture_samples(trainer_module):
    """Wrap the trainer's `sample` so the benchmark sees the exact responses the step sampled."""
    seen = {}
    original = trainer_module.sample

    def recording(*args, **kwargs):
        seen["samples"] = original(*args, **kwargs)
        return seen["samples"]

    trainer_module.sample = recording
    return seen


def generation_floor(lm, samples) -> None:
    """Prefill + one cached forward per response position, greedy: the model calls generation cannot avoid."""
    with torch.no_grad():
        mask = samples.query_mask
        out = lm(input_ids=samples.query_ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=True,
                 logits_to_keep=1)
        cache, token = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(samples.response_ids.shape[1] - 1):
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            out = lm(input_ids=token, attention_mask=mask, position_ids=mask.sum(1, keepdim=True) - 1,
                     cache=cache, use_cache=True)
            cache, token = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)


def forward_floor(models, input_ids, attention_mask, response_length: int) -> None:
    """One policy pass (response logits and values) and one reference pass over the whole batch."""
    with torch.no_grad():
        models.policy(input_ids, attention_mask, logits_to_keep=response_length + 1)
        causal_lm_forward(models.reference_lm(), input_ids, attention_mask, response_length + 1)


def update_floor(trainer, optimizer, input_ids, attention_mask, response_length: int) -> None:
    """ppo_epochs x mini-batches x (forward, backward of a trivial loss, optimiser step).

    The loss is zero and `optimizer` is the floor's own AdamW (same kind as the trainer's), whose moments stay zero,
    so its steps cost what a real step costs but leave the weights where the trainer left them.
    """
    cfg = trainer.cfg.ppo
    trainer.model.train()
    for _ in range(cfg.ppo_epochs):
        for start in range(0, cfg.batch_size, cfg.mini_batch_size):
            rows = slice(start, start + cfg.mini_batch_size)
            logits, values, _ = trainer.model(input_ids[rows], attention_mask[rows],
                                              logits_to_keep=response_length + 1)
            loss = logits.float().logsumexp(-1).mean() * 0.0 + values.mean() * 0.0
            trainer.accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)


def measure_step(run, seen: dict, optimizer, profile_dir: Path | None, index: int) -> tuple[dict, dict]:
    """Our step's phase times, then the floor's on the same samples."""
    trainer = run.trainer
    stats, _ = trainer.step()
    ours = {p: stats[f"time/{p}"] for p in PHASES}
    samples = seen["samples"]
    input_ids = torch.cat([samples.query_ids, samples.response_ids], dim=1)
    attention_mask = torch.cat([samples.query_mask, samples.response_mask], dim=1)
    length = samples.response_ids.shape[1]
    floor: dict[str, float] = {}
    lm = trainer.models.policy.lm
    lm.eval()
    work = {
        "generate": lambda: generation_floor(lm, samples),
        "forward": lambda: forward_floor(trainer.models, input_ids, attention_mask, length),
        "update": lambda: update_floor(trainer, optimizer, input_ids, attention_mask, length),
    }
    for phase, fn in work.items():
        if profile_dir is not None and index == 0:
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                fn()
            prof.export_chrome_trace(str(profile_dir / f"floor_{phase}.json"))
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
        with timer(floor, phase):
            fn()
    return ours, floor


def build(args, output_dir: str):
    """train_ppo's run for a warm-up step and `--steps` measured ones, with the extra flags after --."""
    extra = [a for a in args.train_args if a != "--"]
    return train_ppo.build(["--config", args.config, "--logging.report_to", "none", "--logging.probes", "[]",
                            "--checkpoint.output_dir", output_dir, "--ppo.steps", str(args.steps + 1), *extra])


def floor(args) -> list[tuple[dict, dict]]:
    """(ours, floor) phase seconds of each measured step."""
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        run = build(args, tmp)
        seen = capture_samples(trainer_module)
        params = [p for p in run.trainer.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=run.cfg.ppo.learning_rate, weight_decay=0.0,
                                      fused=run.accelerator.device.type == "cpu" or None)
        run.trainer.step()  # warm-up: first-call allocations and lazy initialisation
        return [measure_step(run, seen, optimizer, args.profile, i) for i in range(args.steps)]


def our_phases(args, trunk: bool) -> dict[str, float]:
    """Median seconds of each of TRUNK_PHASES over the measured steps of a fresh run, the trunk cache on or off."""
    with tempfile.TemporaryDirectory(prefix="trunk-") as tmp:
        run = build(args, tmp)
        if trunk and not run.trainer.models.trunk_layers:
            flags = " ".join(a for a in args.train_args if a != "--") or "no extra flags"
            raise SystemExit(f"--trunk_cost: the frozen-trunk cache does not apply to {args.config} with {flags}; it "
                             "needs full fine-tuning with layers shared with the reference: add -- --lora.enabled "
                             "false --model.num_shared_layers 20.")
        if not trunk:
            run.trainer.models.trunk_layers = 0
        layers = run.trainer.models.trunk_layers
        run.trainer.step()  # warm-up, as for the floor
        rows = [run.trainer.step()[0] for _ in range(args.steps)]
    return {"trunk_layers": layers, **{p: statistics.median(r[f"time/{p}"] for r in rows) for p in TRUNK_PHASES}}


def trunk_cost(args) -> None:
    """Our step with the cache on and off, alternating `--repeats` times; medians over the repeats."""
    runs: dict[str, list[dict[str, float]]] = {"cache on": [], "cache off": []}
    for _ in range(args.repeats):
        for name in runs:
            runs[name].append(our_phases(args, trunk=name == "cache on"))
    results = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    print(f"\n## The frozen-trunk cache on and off ({args.steps} steps after a warm-up, {args.repeats} runs each, "
          f"{args.threads} threads, {Path(args.config).name})\n")
    for name, r in results.items():
        phases = ", ".join(f"{p} {r[p]:.2f} s" for p in TRUNK_PHASES)
        print(f"{name} (trunk layers {r['trunk_layers']:.0f}): {phases}")
    on, off = results["cache on"]["step"], results["cache off"]["step"]
    print(f"turning the cache off costs {off - on:+.2f} s per step ({off / on - 1:+.1%})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "offline_default.yaml"))
    parser.add_argument("--steps", type=int, default=4, help="measured steps (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--profile", type=Path, default=None, help="write torch profiler traces of the floors here")
    parser.add_argument("--trunk_cost", action="store_true",
                        help="time our step with the frozen-trunk cache on and off instead of against its floor")
    parser.add_argument("--repeats", type=int, default=2, help="--trunk_cost: runs with the cache on and off, each")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="extra train_ppo.py flags after --")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error(f"--steps ({args.steps}) and --repeats ({args.repeats}) must be at least 1.")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["DETOX_CPU_THREADS"] = str(args.threads)  # read by train_ppo.build
    torch.set_num_threads(args.threads)
    if args.trunk_cost:
        trunk_cost(args)
    else:
        report(floor(args), args)


def report(rows: list[tuple[dict, dict]], args) -> None:
    print(f"\n## Our PPO step against its floor ({args.steps} steps after a warm-up, {args.threads} threads, "
          f"{Path(args.config).name})\n")
    print("| phase | ours (median s) | floor (median s) | ours / floor |")
    print("|---|---|---|---|")
    total_ours = total_floor = 0.0
    for phase in PHASES:
        ours = statistics.median(r[0][phase] for r in rows)
        total_ours += ours
        if phase == "score":
            print(f"| {phase} | {ours:.2f} | (the reward's own cost) | — |")
            continue
        floor = statistics.median(r[1][phase] for r in rows)
        total_floor += floor
        print(f"| {phase} | {ours:.2f} | {floor:.2f} | {ours / floor:.2f} |")
    print(f"| total (without score) | {total_ours - statistics.median(r[0]['score'] for r in rows):.2f} | "
          f"{total_floor:.2f} | {(total_ours - statistics.median(r[0]['score'] for r in rows)) / total_floor:.2f} |")


if __name__ == "__main__":
    main()
