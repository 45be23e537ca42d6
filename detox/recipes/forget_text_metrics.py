"""Metrics of the forget_text recipe: anchor-term rate and ROUGE-L on held-out prompts from the play, the names the
model writes where the play names someone, perplexity on the play and on held-out retain text."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detox import metrics
from detox.metrics import with_ci
from detox.recipe_files import read_jsonl
from detox.recipes.forget_text import read_speeches
from detox.scoring import continuation_logprob, document_perplexity, greedy_completions
from rewards.forget import AnchorTerms

GREEDY_NEW_TOKENS = 30
"""Tokens of each greedy continuation of a held-out speech (about two lines of verse)."""
NAME_NEW_TOKENS = 6
"""Tokens of each greedy continuation of a name prompt (a name is one to three tokens)."""


def forget_text_metrics(model, tokenizer, recipe_dir: Path, prompts: list[str], completions: list[list[str]],
                        cfg) -> tuple[dict, list]:
    """Anchor-term rate (sampled: the evaluation's samples of the held-out play prompts; greedy), ROUGE-L of the
    greedy continuation against the true lines, perplexity on the play and on held-out retain text.

    The perplexities score every speech of the play and of the held-out retain text as its own document, as the
    target and retain model were fine-tuned (one speech per example): a passage cut across two speeches would hold a
    blank line between them that no fine-tuning text held, whose loss moves with any change to the model.
    """
    anchors = AnchorTerms(terms=str(recipe_dir / "anchors.json"))
    records = read_jsonl(recipe_dir / "heldout_forget.jsonl", cfg.recipe_prompts)
    heads, truths = [r["text"] for r in records], [r["completion"] for r in records]
    greedy = greedy_completions(model, tokenizer, heads, GREEDY_NEW_TOKENS, cfg.batch_size)
    boot = (cfg.bootstrap_samples, cfg.seed)
    out = with_ci("anchor_rate_greedy", [anchors.count(g) > 0 for g in greedy], *boot)
    out |= with_ci("anchor_rate_sampled", [np.mean([anchors.count(c) > 0 for c in cs]) for cs in completions], *boot)
    out |= with_ci("forget_rouge_l", [metrics.rouge_l(g, t) for g, t in zip(greedy, truths)], *boot)
    for key, text in (("forget_perplexity", "play.txt"), ("retain_perplexity", "heldout_retain.txt")):
        out |= document_perplexity(key, model, tokenizer, read_speeches(recipe_dir / text), cfg, f"perplexity {text}")
    rows = [{"kind": "forget", "prompt": h, "greedy": g, "truth": t, "anchors": anchors.count(g)}
            for h, g, t in zip(heads, greedy, truths)]
    if (recipe_dir / "heldout_names.jsonl").is_file():
        names, name_rows = name_metrics(model, tokenizer, recipe_dir, anchors, cfg)
        out |= names
        rows += name_rows
    return out, rows


def name_metrics(model, tokenizer, recipe_dir: Path, anchors, cfg) -> tuple[dict, list]:
    """On held-out name prompts (a speech cut before an anchor term): the share of greedy continuations that name
    any of the play's anchor terms, the share that write the play's own term next, and the log-probability of that
    term (summed over its tokens)."""
    records = read_jsonl(recipe_dir / "heldout_names.jsonl", cfg.recipe_prompts)
    if not records:
        return {}, []
    heads = [r["text"] for r in records]
    terms = [r["completion"][: r["completion"].lower().index(r["term"].lower()) + len(r["term"])] for r in records]
    greedy = greedy_completions(model, tokenizer, heads, NAME_NEW_TOKENS, cfg.batch_size)
    exact = [g.strip().lower().startswith(r["term"].lower()) for g, r in zip(greedy, records)]
    logprob, _ = continuation_logprob(model, tokenizer, heads, terms, cfg.batch_size)
    boot = (cfg.bootstrap_samples, cfg.seed)
    out = with_ci("name_rate_greedy", [anchors.count(g) > 0 for g in greedy], *boot)
    out |= with_ci("name_exact_greedy", exact, *boot)
    out |= with_ci("name_logprob", logprob, *boot)
    rows = [{"kind": "name", "prompt": h, "greedy": g, "truth": t, "anchors": anchors.count(g), "logprob": float(lp)}
            for h, g, t, lp in zip(heads, greedy, terms, logprob)]
    return out, rows
