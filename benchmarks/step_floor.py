"""How far one PPO step is from the irreducible work of its batch, phase by phase.

    python benchmarks/step_floor.py [--config configs/offline_default.yaml] [--steps 4] [--threads 2] [--profile DIR]

For each measured step it runs `PPOTrainer.step()` (our step as users run it) and then, on the very same prompts
and sampled responses, the floor of each phase:
- generate: the model calls of generation alone: one prefill over the prompts and one cached forward per new
  token, greedy, with no sampling, stopping or decoding logic around them;
- forward: one policy forward (logits of the response positions, values) and one reference forward;
- update: `ppo_epochs` x (forward + backward + optimiser step) per mini-batch, with a trivial loss.
Scoring is the reward's own cost and is reported, not floored. It prints the medians and our/floor ratios per phase
(target: total <= 1.5x). `--profile DIR` also writes a torch profiler trace (Chrome JSON) of one step per phase.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PHASES = ("generate", "score", "forward", "update")


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
    import torch

    from detox.models import position_ids

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
    import torch

    from detox.models import causal_lm_forward

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
    import torch

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
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                fn()
            prof.export_chrome_trace(str(profile_dir / f"floor_{phase}.json"))
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
        with timer(floor, phase):
            fn()
    return ours, floor


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "offline_default.yaml"))
    parser.add_argument("--steps", type=int, default=4, help="measured steps (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--profile", type=Path, default=None, help="write torch profiler traces of the floors here")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="extra train_ppo.py flags after --")
    args = parser.parse_args(argv)
    os.environ["DETOX_CPU_THREADS"] = str(args.threads)
    import torch

    import detox.trainer as trainer_module
    from detox.jobs import train_ppo

    torch.set_num_threads(args.threads)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        extra = [a for a in args.train_args if a != "--"]
        run = train_ppo.build(["--config", args.config, "--logging.report_to", "none", "--logging.probes", "[]",
                               "--checkpoint.output_dir", tmp, "--ppo.steps", str(args.steps + 1), *extra])
        seen = capture_samples(trainer_module)
        params = [p for p in run.trainer.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=run.cfg.ppo.learning_rate, weight_decay=0.0,
                                      fused=run.accelerator.device.type == "cpu" or None)
        run.trainer.step()  # warm-up: first-call allocations and lazy initialisation
        rows = [measure_step(run, seen, optimizer, args.profile, i) for i in range(args.steps)]
    report(rows, args)


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
    main(sys.argv[1:])
