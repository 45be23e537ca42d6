"""detox: train language models away from what they must not say, with PPO against reward models.

The modules stand on five layers. A module imports only from its own layer or the layers below it, never in a circle,
and never a script; project imports stand at the top of the module. tests/test_layers.py reads every import and keeps
it so. From the bottom up:

0. Foundation: what every other layer needs, and nothing from above.
   config (the run dataclasses; baselines.config for the loss-based baselines) and config_help (--help and the
   unknown-setting suggestions), judge_specs (judge names and specs),
   hub (model and cache paths), sharding (DeepSpeed and FSDP helpers), ppo (PPO's math: GAE, losses, KL), losses
   (every other method's loss: NLL, gradient ascent and difference, NPO, SimNPO, WHP, RMU's hidden-state losses),
   metrics (table statistics, bootstrap intervals), validity (a judge's agreement with human labels: AUC, Spearman, calibration), tofu_metrics (TOFU's unlearning
   metrics: truth ratio, forget quality, model utility), number_words (numbers written in English words), checkpoint, tracking, plots, memory_model.
1. Middle: data, models and text.
   data (prompts), corpus (texts of a corpus), models (policy, LoRA, value head, reference), generation (sampling),
   scoring (NLL, perplexity, greedy continuations), blocks (token blocks of a corpus), probes, recipe_files (what a
   recipe directory holds), tofu_data (TOFU's question/answer sets).
2. Rewards and judges: the top-level `rewards` package (one file per reward, its registry and the composer) and
   judges (the toxicity judges, built from their specs) with independence (which data sources a judge, a reward or a
   training set learned from).
3. Loops: trainer (the PPO loop) with experience, ptx and forget_loss; group (TRL's GRPO and RLOO); baselines.trainer
   and baselines.whp (the loss-based baselines); evaluation; state, export and model_card (what a run leaves behind).
4. Top: recipes (a target's data, rewards, preset and metrics), launch (what every entry point shares) and jobs (one
   job per script).

Outside the package: the scripts (train_ppo.py, train_unlearn.py, train_grpo.py, evaluate_toxicity.py), benchmarks/
and tests/, which may import anything in the package and never a script.
"""

__version__ = "0.1.0"
