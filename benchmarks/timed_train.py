"""One trainer of this environment, trained for a wall-clock budget, with a model saved at each quarter of it.

    python -m benchmarks.timed_train --trainer ours_ppo|trl_grpo|trl_rloo|gd --budget_minutes M --seed S --threads T \
        --run_dir DIR [--config configs/offline_profanity.yaml] [--num_generations 4] [-- extra run-config flags]

The worker side of benchmarks/detox_per_minute.py (TRL 0.11.4's PPOTrainer has its own, benchmarks/trl011_worker.py).
Every trainer reads the same run config: our PPO through train_ppo.build, TRL's GRPO and RLOO through
train_grpo.build (the same prompts, rewards, LoRA and generation settings). `gd` is the loss-based route instead:
train_unlearn.py's gradient difference with `--gd_config` (configs/detox_gradient_difference.yaml), which learns from
labelled continuations and reads no reward. Models land in DIR/part-<k>/model and
DIR/checkpoints.jsonl says how many training minutes, steps and completions each holds (benchmarks/budget_clock.py).
Training judges and W&B are off: only the training itself is timed.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from transformers import TrainerCallback

from benchmarks.budget_clock import BudgetClock
from benchmarks.harness import REPO
from detox.jobs import train_grpo, train_ppo
from detox.jobs.train_unlearn import build as build_unlearn
from detox.jobs.train_unlearn import write_lm
from detox.sharding import full_model_state
from detox.state import write_model

PARTS = 4
NO_STEP_LIMIT = 1_000_000  # the clock ends the run; the schedules are constant, so this changes nothing else


def common_flags(args, run_dir: Path) -> list[str]:
    return ["--config", args.config, "--ppo.seed", str(args.seed), "--ppo.steps", str(NO_STEP_LIMIT),
            "--logging.report_to", "none", "--logging.judges", "[]", "--logging.probes", "[]",
            "--checkpoint.output_dir", str(run_dir / "train"), "--checkpoint.save_every", str(NO_STEP_LIMIT)]


def ours_ppo(args, extra: list[str]) -> None:
    r = train_ppo.build(common_flags(args, args.run_dir) + ["--checkpoint.overwrite", "true", *extra])
    trainer = r.trainer
    clock = BudgetClock(args.budget_minutes, PARTS, args.run_dir,
                        lambda directory: write_model(directory, trainer, full_model_state(trainer), r.config))
    spend_budget(clock, args.run_dir, lambda: (trainer.step()[0], trainer.step_index), r.cfg.ppo.batch_size,
                 ("reward/total", "objective/kl", "objective/kl_coef", "time/step"))


def spend_budget(clock: BudgetClock, run_dir: Path, step, per_step: int, keep: tuple[str, ...]) -> None:
    """Call `step() -> (stats, steps done)` until `clock`'s budget is spent, each step's `keep` stats in
    run_dir/steps.jsonl; a step counts `per_step` examples (completions, or labelled records for gd)."""
    with (run_dir / "steps.jsonl").open("w", encoding="utf-8") as log:
        clock.start()
        while True:
            stats, steps = step()
            log.write(json.dumps({"step": steps, "minutes": clock.seconds() / 60,
                                  **{k: stats[k] for k in keep if k in stats}}) + "\n")
            log.flush()
            if clock.after_step(steps, steps * per_step):
                break


def trl_group(args, extra: list[str]) -> None:
    algo = args.trainer.removeprefix("trl_")
    cfg, trainer, output_dir = train_grpo.build(
        common_flags(args, args.run_dir) + ["--algo", algo, "--num_generations", str(args.num_generations), *extra]
    )

    def save(directory: Path) -> None:
        trainer.model.save_pretrained(directory / "model", safe_serialization=True)  # the LoRA adapter
        trainer.processing_class.save_pretrained(directory / "model")
        train_grpo.write_run_config(directory / "model", cfg)

    clock = BudgetClock(args.budget_minutes, PARTS, args.run_dir, save)
    per_step = trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps

    class Budget(TrainerCallback):
        def on_train_begin(self, *_, **__):
            clock.start()

        def on_step_end(self, _args, state, control, **__):
            # one optimiser step sees `per_step` completions; each completion is reused num_iterations times
            completions = state.global_step * per_step // trainer.args.num_iterations
            if clock.after_step(state.global_step, completions):
                control.should_training_stop = True

    trainer.add_callback(Budget())
    trainer.train()
    with (args.run_dir / "steps.jsonl").open("w", encoding="utf-8") as log:
        for row in trainer.state.log_history:
            log.write(json.dumps(row) + "\n")


def gradient_difference(args, extra: list[str]) -> None:
    r = build_unlearn([
        "--config", args.gd_config, "--optim.seed", str(args.seed), "--optim.steps", str(NO_STEP_LIMIT),
        "--logging.report_to", "none", "--logging.judges", "[]", "--logging.probes", "[]",
        "--checkpoint.output_dir", str(args.run_dir / "train"), "--checkpoint.save_every", str(NO_STEP_LIMIT),
        "--checkpoint.overwrite", "true", *extra,
    ])
    trainer = r.trainer
    clock = BudgetClock(args.budget_minutes, PARTS, args.run_dir, lambda directory: write_lm(
        directory / "model", r.accelerator.unwrap_model(trainer.model), trainer.tokenizer, r.config))
    spend_budget(clock, args.run_dir, lambda: (trainer.step(), trainer.step_index), r.cfg.optim.batch_size,
                 ("loss/total", "forget/nll", "retain/nll", "time/step"))


TRAINERS = {"ours_ppo": ours_ppo, "trl_grpo": trl_group, "trl_rloo": trl_group, "gd": gradient_difference}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainer", choices=sorted(TRAINERS), required=True)
    parser.add_argument("--budget_minutes", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True, help="torch CPU threads")
    parser.add_argument("--run_dir", type=Path, required=True)
    parser.add_argument("--config", default=str(REPO / "configs" / "offline_profanity.yaml"))
    parser.add_argument("--num_generations", type=int, default=4, help="GRPO/RLOO: completions per prompt")
    parser.add_argument("--gd_config", default=str(REPO / "configs" / "detox_gradient_difference.yaml"),
                        help="gd: the train_unlearn.py config")
    parser.add_argument("extra", nargs="*", help="run-config flags for this trainer, after --")
    args = parser.parse_args(argv)
    os.environ["DETOX_CPU_THREADS"] = str(args.threads)  # read by train_ppo.build
    torch.set_num_threads(args.threads)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    TRAINERS[args.trainer](args, args.extra)


if __name__ == "__main__":
    main()
