"""Our PPO step against TRL 0.11.4's classic PPOTrainer: same model, prompts, sizes and steps, side by side.

    HF_HUB_OFFLINE=1 python -m benchmarks.vs_trl_ppo [--steps 6] [--threads 2] [--output_dir outputs/vs_trl_ppo]

Both sides fully fine-tune SmolLM2-135M-Instruct on CPU with a reference model sharing its lower `num_shared_layers`
layers (frozen in the policy too), train on the same ordered prompt batches (ours: builtin:rtp_challenging, toxicity
> 0.3, windowed to 10-15 tokens, in the order `PPOTrainer.batch_prompts` gives), draw response lengths from the same
range, and are rewarded by the same function (rewards/toxicity.py OfflineToxicity, logit output). Ours runs in this
process through `train_ppo.build`; TRL's runs in its own virtual environment (.venv-trl011/, made on first use by
benchmarks/trl011_env.py) through benchmarks/trl011_worker.py, which drives PPOTrainer as TRL's toxicity example does.
A step is timed from prompts to updated weights (generation + scoring + optimisation) on both sides, in wall-clock and
in process CPU time; the first step is a warm-up and left out. On a machine shared with other work, wall-clock times
swing with the load: run with `--threads 1` and read the CPU-time column. The reward gain (mean reward of the last
third of the steps minus the first third) is sampling noise over a few steps; it needs tens of steps to say which side
learns faster.

Known differences, kept because they are each library's own behaviour: TRL's `generate` samples 4 prompts at a time
with one drawn length per group of 4 (its default), ours samples the whole batch at once with one length per sample;
TRL right-pads each prompt + response to the batch's longest pair, ours left-pads prompts and right-pads responses
(longest prompt + longest response, a few tokens more); TRL computes logits over prompt and response, ours over the
response only.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import REPO, run
from benchmarks.trl011_env import ensure_venv, trl_model_dir, worker_command
from detox.jobs import train_ppo


def our_argv(args, output_dir: Path) -> list[str]:
    flags = {
        "lora.enabled": "false",
        "model.num_shared_layers": args.num_shared_layers,
        "ppo.steps": args.steps,
        "ppo.batch_size": args.batch_size,
        "ppo.mini_batch_size": args.mini_batch_size,
        "ppo.ppo_epochs": args.ppo_epochs,
        "ppo.learning_rate": args.learning_rate,
        "ppo.max_grad_norm": args.max_grad_norm,
        "ppo.seed": args.seed,
        "generation.min_new_tokens": args.min_new_tokens,
        "generation.max_new_tokens": args.max_new_tokens,
        "logging.report_to": "none",
        "logging.judges": "[]",  # TRL's loop has no judges: time the same work
        "rewards": "[{type: offline_toxicity, options: {output: logit}}]",  # the reward TRL's side is given
        "checkpoint.output_dir": output_dir,
    }
    return ["--config", str(REPO / "configs" / "offline_profanity.yaml")] + [
        item for key, value in flags.items() for item in (f"--{key}", str(value))
    ]


def run_ours(args, output_dir: Path) -> tuple[list[dict], list[list[str]], str]:
    """Our steps' metrics, the prompt batches they trained on (in step order) and the model directory."""
    torch.set_num_threads(args.threads)
    r = train_ppo.build(our_argv(args, output_dir))
    batches = [r.trainer.batch_prompts(step) for step in range(args.steps)]  # pure: derived from the step alone
    rows = []
    for _ in range(args.steps):  # the loop of detox.trainer.train, without the checkpoint saves between steps
        cpu_start = time.process_time()
        stats, _ = r.trainer.step()
        rows.append({k: v for k, v in stats.items() if k.startswith(("time/", "reward/total", "objective/kl"))})
        rows[-1] |= {"step": r.trainer.step_index, "time/step_cpu": time.process_time() - cpu_start}
        print("ours", json.dumps(rows[-1]), flush=True)
    return rows, batches, r.trainer.models.base_path


def run_trl(args, python: Path, model_dir: Path, batches: list[list[str]], output_dir: Path) -> list[dict]:
    output_dir.mkdir(parents=True, exist_ok=True)
    prompts_file, out = output_dir / "prompts.json", output_dir / "steps.jsonl"
    prompts_file.write_text(json.dumps(batches, indent=1))
    names = ("batch_size", "mini_batch_size", "ppo_epochs", "seed", "num_shared_layers", "threads", "min_new_tokens",
             "max_new_tokens", "learning_rate", "max_grad_norm")
    run(worker_command(python, {"model_dir": model_dir, "prompts": prompts_file, "out": out,
                                "reward_file": REPO / "rewards" / "toxicity.py",
                                **{name: getattr(args, name) for name in names}}),
        env={"HF_HUB_OFFLINE": "1", "PYTHONPATH": None})
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def reward_slope(rewards: list[float]) -> tuple[float, float]:
    """Least-squares slope of the reward against the step, and its standard error (nan below 3 steps)."""
    steps = np.arange(len(rewards), dtype=float)
    if len(rewards) < 3:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(steps, rewards, 1)
    residuals = np.asarray(rewards) - (slope * steps + intercept)
    spread = np.sum((steps - steps.mean()) ** 2)
    return float(slope), float(np.sqrt(np.sum(residuals**2) / (len(rewards) - 2) / spread))


def summarise(rows: list[dict], k: int) -> dict[str, float]:
    """Step time over the steps after the first (warm-up), reward gain = mean of the last k - mean of the first k,
    and the reward's slope per step with its standard error."""
    timed = rows[1:] or rows
    rewards = [r["reward/total"] for r in rows]
    out = {
        "median": statistics.median(r["time/step"] for r in timed),
        "mean": statistics.fmean(r["time/step"] for r in timed),
        "cpu": statistics.median(r["time/step_cpu"] for r in timed),
        "first": rewards[0],
        "last": rewards[-1],
        "gain": statistics.fmean(rewards[-k:]) - statistics.fmean(rewards[:k]),
        "kl": rows[-1]["objective/kl"],
    }
    out["slope"], out["slope_se"] = reward_slope(rewards)
    for phase in ("generate", "score", "forward", "update"):
        out[phase] = statistics.median(r[f"time/{phase}"] for r in timed)
    return out


def report(ours: dict, trl: dict, k: int, target: float) -> str:
    lines = [
        f"| side | s/step median | s/step mean | CPU s/step median | reward first → last "
        f"| gain (last {k} − first {k}) | slope ± s.e. (reward/step) | KL last |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in (("ours", ours), ("TRL 0.11.4", trl)):
        lines.append(f"| {name} | {s['median']:.2f} | {s['mean']:.2f} | {s['cpu']:.2f} "
                     f"| {s['first']:+.3f} → {s['last']:+.3f} | {s['gain']:+.3f} "
                     f"| {s['slope']:+.4f} ± {s['slope_se']:.4f} | {s['kl']:.3f} |")
    lines += ["", "| side | generate | score | forward (policy+ref) | update | (median s, steps after the first)",
              "|---|---|---|---|---|"]
    for name, s in (("ours", ours), ("TRL 0.11.4", trl)):
        lines.append(f"| {name} | {s['generate']:.2f} | {s['score']:.3f} | {s['forward']:.2f} | {s['update']:.2f} |")
    ratio = ours["median"] / trl["median"]
    speed = "met" if ratio <= target else "NOT met"
    reward = "met" if ours["gain"] >= trl["gain"] else "NOT met"
    cpu_ratio = ours["cpu"] / trl["cpu"]
    difference = ours["slope"] - trl["slope"]
    difference_se = math.hypot(ours["slope_se"], trl["slope_se"])
    lines += ["", f"ratio ours/TRL = {ratio:.2f} (median s/step; in CPU time {cpu_ratio:.2f}); target ≤ {target}: "
              f"{speed}; reward gain ours {ours['gain']:+.3f} ≥ TRL {trl['gain']:+.3f}: {reward}",
              f"reward slope ours − TRL = {difference:+.4f} ± {difference_se:.4f} per step "
              f"({abs(difference) / difference_se:.1f} standard errors from equal)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--mini_batch_size", type=int, default=4)
    parser.add_argument("--ppo_epochs", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, default=1.41e-5, help="the TRL example's full fine-tuning lr")
    parser.add_argument("--max_grad_norm", type=float, default=1.0, help="ours' default; applied to TRL's too")
    parser.add_argument("--num_shared_layers", type=int, default=20, help="of SmolLM2's 30 layers")
    parser.add_argument("--min_new_tokens", type=int, default=20)
    parser.add_argument("--max_new_tokens", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads, both sides")
    parser.add_argument("--target", type=float, default=0.7, help="the ours/TRL time ratio to beat")
    parser.add_argument("--output_dir", type=Path, default=REPO / "outputs" / "vs_trl_ppo")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error(f"--steps ({args.steps}) must be at least 2: the first step is a warm-up and is not timed.")
    os.environ.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(args.threads))

    python = ensure_venv()  # before our run, so a failed install costs no training time
    ours_rows, batches, model_path = run_ours(args, args.output_dir / "ours")
    gc.collect()  # our models are unreachable once run_ours returns; free them before TRL loads its own
    model_dir = trl_model_dir(Path(model_path), args.output_dir / "model_trl011")
    trl_rows = run_trl(args, python, model_dir, batches, args.output_dir / "trl011")
    k = max(1, args.steps // 3)
    table = report(summarise(ours_rows, k), summarise(trl_rows, k), k, args.target)
    (args.output_dir / "table.md").write_text(table + "\n")
    print(f"\n{args.steps} steps, batch {args.batch_size}, mini-batch {args.mini_batch_size}, "
          f"{args.ppo_epochs} PPO epochs, torch threads: {args.threads}\n\n{table}")


if __name__ == "__main__":
    main()
