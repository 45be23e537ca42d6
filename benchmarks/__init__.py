"""Benchmarks: modules that measure and print their figures. Run each from the repository root as
`python -m benchmarks.<name>` (`--help` gives its flags); the commands they start run from the root too.

Detox effect and wall-clock to it:
- detox_default: train the offline default (or `--config`), then base against detoxified model on held-out toxic and
  non-toxic prompts, under several judges, with the targets met or not; `--seeds`: once per PPO seed, with the
  changes' t-interval over seeds.
- detox_per_minute: every trainer (ours, TRL GRPO and RLOO, TRL 0.11.4 PPO, gradient difference) for the same
  wall-clock budget, a model each quarter, all scored on the same held-out prompts; seeds combine into t-intervals.
- judge_floor: what each toxicity judge says of human-written text binned by Perspective toxicity.

Unlearning:
- obscene_numbers: the obscene_numbers recipe end to end (data, counting fine-tune, PPO, evaluation, probes).
- unlearning: PPO at several KL strengths against gradient ascent, gradient difference, NPO and WHP on one recipe.
- forget_gap: where a forget_text gap lies, per speech or passage and per token group.
- relearn: a few steps of fine-tuning on part of the forget set (or on retain records): how much of the
  unlearning gap comes back on the rest, step by step.
- forget_reward_selectivity: how well a forget_likelihood reward tells the play from other plays (penalties, AUC).

Speed and memory:
- step_floor: our PPO step phase by phase against the model calls it cannot avoid; `--trunk_cost`: the step with the
  frozen-trunk cache on and off.
- vs_trl_ppo: our PPO step against TRL 0.11.4's PPOTrainer on the same work.
- rewards_speed: milliseconds per batch of each reward component.
- scale: a preset's architecture with random weights: peak memory and seconds per phase of PPO steps.
- memory_model: a preset's peak memory at full depth, fitted from scale runs at a few depths.

What they share, not benchmarks themselves:
- harness: running a command from the root (its failure shows the tail of its output), seeds, intervals.
- budget_clock: a wall-clock budget cut into parts, a model saved at each (standard library only).
- timed_train: detox_per_minute's worker for the trainers of this environment.
- trl011_env, trl011_worker: TRL 0.11.4's own virtual environment, and its PPOTrainer driven inside it.
"""
