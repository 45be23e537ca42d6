"""Metrics of the obscene_numbers recipe: the forbidden pattern's rate in greedy and sampled continuations, counting
accuracy, and log-probability and perplexity of the true continuations, on held-out forbidden, control and allowed
prompts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detox import metrics
from detox.metrics import with_ci
from detox.number_words import forbidden_in, read_numbers
from detox.recipe_files import read_jsonl, read_manifest
from detox.scoring import continuation_logprob, greedy_completions
from rewards.numbers import judge_count, next_allowed

GREEDY_NEW_TOKENS = 20
"""Tokens of each greedy continuation: room for two numbers (the longest the generator writes is 8 tokens, plus its
comma), so that the count can be checked beyond the first number."""


def counts_on(text: str, last: int, pair: str, numbers: int = 2) -> bool:
    """Whether the first `numbers` numbers written in `text` continue a count from `last` that skips forbidden
    numbers ("sixty eight" then " seventy, seventy one,")."""
    expected, current = [], last
    for _ in range(numbers):
        current = next_allowed(current, pair) if current is not None else None
        expected.append(current)
    return [f.value for f in read_numbers(text)][:numbers] == expected


def obscene_numbers_metrics(model, tokenizer, recipe_dir: Path, prompts: list[str], completions: list[list[str]],
                            cfg) -> tuple[dict, list]:
    """Pattern rate (greedy on held-out forbidden prompts, and in the evaluation's samples), log-probability and
    perplexity of the true continuations, and greedy counting accuracy, on held-out forbidden, control and allowed
    prompts. Two accuracies: the first number written is the true next one (`accuracy`), and the first two numbers
    are the next two of the count that skips forbidden numbers (`run_accuracy`: the skill beyond one number; on
    forbidden prompts it asks for the skip, "sixty eight," -> "seventy, seventy one"). On forbidden prompts also the
    skip alone (`forbidden_skip_rate_greedy`: the first number written is the next allowed one); on every kind the
    share of greedy continuations whose first two items hold a malformed number (`malformed_rate_greedy`: "sixty
    ninety", glued words, digits; rewards.numbers.judge_count)."""
    pair = read_manifest(recipe_dir)["args"]["pair"]
    sets = {kind: read_jsonl(recipe_dir / f"heldout_{kind}.jsonl", cfg.recipe_prompts)
            for kind in ("forbidden", "control", "allowed")}
    out, rows, boot = {}, [], (cfg.bootstrap_samples, cfg.seed)
    for kind, records in sets.items():
        shown = [r["text"] for r in records]  # not `prompts`: those are the evaluation's own, read below
        greedy = greedy_completions(model, tokenizer, shown, GREEDY_NEW_TOKENS, cfg.batch_size)
        hits = [bool(forbidden_in(p + g, pair, after=len(p))) for p, g in zip(shown, greedy)]
        firsts = [next(iter(read_numbers(g)), None) for g in greedy]
        correct = [f is not None and f.value == r["next"] for f, r in zip(firsts, records)]
        runs = [counts_on(g, r["next"] - 1, pair) for g, r in zip(greedy, records)]
        malformed = ["malformed" in judge_count(p, g, pair, horizon=2) for p, g in zip(shown, greedy)]
        truths = [r["completion"].rstrip(",") for r in records]
        logprob, count = continuation_logprob(model, tokenizer, shown, truths, cfg.batch_size)
        out |= with_ci(f"{kind}_pattern_rate_greedy", hits, *boot)
        out |= with_ci(f"{kind}_accuracy_greedy", correct, *boot)
        out |= with_ci(f"{kind}_run_accuracy_greedy", runs, *boot)
        out |= with_ci(f"{kind}_malformed_rate_greedy", malformed, *boot)
        if kind == "forbidden":
            skips = [f is not None and f.value == next_allowed(r["next"] - 1, pair) for f, r in zip(firsts, records)]
            out |= with_ci("forbidden_skip_rate_greedy", skips, *boot)
        out |= with_ci(f"{kind}_logprob", logprob, *boot)
        out |= metrics.perplexity_with_ci(f"{kind}_perplexity", -logprob, count, *boot)
        out |= with_ci(f"{kind}_rouge_l", [metrics.rouge_l(g, t) for g, t in zip(greedy, truths)], *boot)
        rows += [{"kind": kind, "prompt": p, "greedy": g, "truth": t, "pattern": h, "correct": c, "logprob": float(lp)}
                 for p, g, t, h, c, lp in zip(shown, greedy, truths, hits, correct, logprob)]
    sampled = [np.mean([bool(forbidden_in(p + c, pair, after=len(p))) for c in cs]) for p, cs in zip(prompts,
                                                                                                     completions)]
    out |= with_ci("pattern_rate_sampled", sampled, *boot)
    return out, rows
