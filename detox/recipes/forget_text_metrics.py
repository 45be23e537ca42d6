"""Metrics of the forget_text recipe: anchor-term rate and ROUGE-L on held-out prompts from the play, perplexity on
the play and on held-out retain text."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detox import metrics
from detox.recipes.metrics import greedy_completions, read_jsonl, with_ci

GREEDY_NEW_TOKENS = 30
"""Tokens of each greedy continuation of a held-out speech (about two lines of verse)."""


def passage_perplexity(model, tokenizer, corpus: Path, n: int, seed: int, batch_size: int) -> float:
    """Perplexity of n passages (48 words each) drawn from `corpus`."""
    from detox.evaluation import forget_passages, sequence_nll

    texts = [head + tail for head, tail in forget_passages(str(corpus), n, seed)]
    nll, count = sequence_nll(model, tokenizer, [""] * len(texts), texts, batch_size, f"perplexity {corpus.name}")
    return metrics.perplexity(nll, count)


def forget_text_metrics(model, tokenizer, recipe_dir: Path, prompts: list[str], completions: list[list[str]],
                        cfg) -> tuple[dict, list]:
    """Anchor-term rate (sampled: the evaluation's samples of the held-out play prompts; greedy), ROUGE-L of the
    greedy continuation against the true lines, perplexity on the play and on held-out retain text."""
    from rewards.forget import AnchorTerms

    anchors = AnchorTerms(terms=str(recipe_dir / "anchors.json"))
    records = read_jsonl(recipe_dir / "heldout_forget.jsonl", cfg.recipe_prompts)
    heads, truths = [r["text"] for r in records], [r["completion"] for r in records]
    greedy = greedy_completions(model, tokenizer, heads, GREEDY_NEW_TOKENS, cfg.batch_size)
    boot = (cfg.bootstrap_samples, cfg.seed)
    out = with_ci("anchor_rate_greedy", [anchors.count(g) > 0 for g in greedy], *boot)
    out |= with_ci("anchor_rate_sampled", [np.mean([anchors.count(c) > 0 for c in cs]) for cs in completions], *boot)
    out |= with_ci("forget_rouge_l", [metrics.rouge_l(g, t) for g, t in zip(greedy, truths)], *boot)
    out["forget_perplexity"] = passage_perplexity(model, tokenizer, recipe_dir / "play.txt", cfg.forget_passages,
                                                  cfg.seed, cfg.batch_size)
    out["retain_perplexity"] = passage_perplexity(model, tokenizer, recipe_dir / "heldout_retain.txt",
                                                  cfg.forget_passages, cfg.seed, cfg.batch_size)
    rows = [{"kind": "forget", "prompt": h, "greedy": g, "truth": t, "anchors": anchors.count(g)}
            for h, g, t in zip(heads, greedy, truths)]
    return out, rows
