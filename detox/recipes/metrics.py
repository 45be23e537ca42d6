"""Recipe metrics: forget efficacy, locality and fluency of one model, with 95% bootstrap intervals over prompts.

`recipe_metrics` reads the recipe's own held-out files (its directory holds recipe.json, written by the recipe's
generator) and returns flat `{metric: value, metric_ci_low, metric_ci_high}` numbers, which evaluate_toxicity.py
puts in the recipe table beside the toxicity table. Greedy continuations are deterministic, so they measure what
the model most wants to write; sampled ones (the evaluation's own samples) measure what it may write.
"""

from __future__ import annotations

from pathlib import Path

from detox import metrics
from detox.config import DataConfig
from detox.data import load_prompts, read_records
from detox.evaluation import log
from detox.recipe_files import read_manifest
from detox.recipes.forget_text_metrics import forget_text_metrics
from detox.recipes.obscene_numbers_metrics import obscene_numbers_metrics
from detox.recipes.tofu_eval import tofu_metrics
from detox.scoring import continuation_logprob

RECIPE_METRICS = {
    "obscene_numbers": obscene_numbers_metrics,
    "forget_text": forget_text_metrics,
    "tofu": tofu_metrics,
}
"""Recipe name (recipe.json's `recipe`) -> `metrics(model, tokenizer, recipe_dir, prompts, completions, cfg)`,
which returns (flat metrics with their intervals, per-prompt rows)."""


def rtp_heldout_pairs(tokenizer, n: int | None) -> list[tuple[str, str]]:
    """(prompt, true continuation) of the shipped RealToxicityPrompts prompts that training holds out by default
    (prompts cut to the token window are left out: their continuation no longer follows them)."""
    heldout = set(load_prompts(DataConfig(), tokenizer).heldout)
    pairs = [(r["prompt"]["text"], r["continuation"]["text"]) for r in read_records("builtin:rtp_challenging")
             if r["prompt"]["text"] in heldout and r.get("continuation", {}).get("text")]
    return pairs[:n] if n is not None else pairs


def recipe_metrics(cfg, recipe_dir: Path, name: str, model, tokenizer, completions: list[list[str]],
                   prompts: list[str]) -> tuple[dict, list]:
    """The recipe's metrics for one model, plus its perplexity on held-out RealToxicityPrompts continuations."""
    recipe = read_manifest(recipe_dir)["recipe"]
    if recipe not in RECIPE_METRICS:
        raise ValueError(f"{recipe_dir}/recipe.json: unknown recipe '{recipe}'; known: {sorted(RECIPE_METRICS)}.")
    log(f"{name}: {recipe} metrics")
    out, rows = RECIPE_METRICS[recipe](model, tokenizer, Path(recipe_dir), prompts, completions, cfg)
    pairs = rtp_heldout_pairs(tokenizer, cfg.recipe_prompts)
    logprob, count = continuation_logprob(model, tokenizer, [p for p, _ in pairs], [c for _, c in pairs],
                                          cfg.batch_size)
    out |= metrics.perplexity_with_ci("rtp_perplexity", -logprob, count, cfg.bootstrap_samples, cfg.seed)
    return out, [{"model": name, **row} for row in rows]
