"""Recipe metrics: forget efficacy, locality and fluency of one model, with 95% bootstrap intervals over prompts.

`recipe_metrics` reads the recipe's own held-out files (its directory holds recipe.json, written by the recipe's
generator) and returns flat `{metric: value, metric_ci_low, metric_ci_high}` numbers, which evaluate_toxicity.py
puts in the recipe table beside the toxicity table. Greedy continuations are deterministic, so they measure what
the model most wants to write; sampled ones (the evaluation's own samples) measure what it may write.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from detox import metrics

GREEDY_NEW_TOKENS = 20
"""Tokens of each greedy continuation: room for two numbers (the longest the generator writes is 8 tokens, plus its
comma), so that the count can be checked beyond the first number."""


def read_manifest(recipe_dir: str | Path) -> dict[str, Any]:
    """recipe.json of a recipe directory, or an error that says how to make one."""
    path = Path(recipe_dir) / "recipe.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"recipe_dir '{recipe_dir}' has no recipe.json; make it with `python -m detox.recipes.obscene_numbers "
            f"--output_dir {recipe_dir}` (or the forget_text recipe)."
        )
    return json.loads(path.read_text(encoding="utf-8"))


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path} holds no records; generate the recipe again.")
    return rows[:limit] if limit is not None else rows


def greedy_completions(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """The greedy continuation of each prompt (left-padded batches, stopped at the model's EOS tokens)."""
    import torch

    from detox.generation import stop_token_ids, tokenize_prompts

    device, stops, out = next(model.parameters()).device, stop_token_ids(model, tokenizer), []
    for start in range(0, len(prompts), batch_size):
        ids, mask = tokenize_prompts(tokenizer, prompts[start : start + batch_size], device)
        with torch.no_grad():
            generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                       do_sample=False, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
        out += tokenizer.batch_decode(generated[:, ids.shape[1] :], skip_special_tokens=True)
    return out


def continuation_logprob(model, tokenizer, prompts: list[str], continuations: list[str], batch_size: int):
    """(N,) summed log-probability of each continuation after its prompt, and (N,) its token counts."""
    from detox.evaluation import sequence_nll

    nll, count = sequence_nll(model, tokenizer, prompts, continuations, batch_size, "recipe log-probs")
    return -nll, count


def with_ci(name: str, per_prompt, n_boot: int, seed: int) -> dict[str, float]:
    """{name: mean, name_ci_low, name_ci_high} of per-prompt values (the prompt is the resampled unit)."""
    values = np.asarray(per_prompt, dtype=np.float64)
    low, high = metrics.bootstrap_ci(values, n_boot, seed)
    return {name: float(values.mean()), f"{name}_ci_low": low, f"{name}_ci_high": high}


def counts_on(text: str, last: int, pair: str, numbers: int = 2) -> bool:
    """Whether the first `numbers` numbers written in `text` continue a count from `last` that skips forbidden
    numbers ("sixty eight" then " seventy, seventy one,")."""
    from detox.number_words import read_numbers
    from rewards.numbers import next_allowed

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
    forbidden prompts it asks for the skip, "sixty eight," -> "seventy, seventy one")."""
    from detox.number_words import forbidden_in, read_numbers

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
        truths = [r["completion"].rstrip(",") for r in records]
        logprob, count = continuation_logprob(model, tokenizer, shown, truths, cfg.batch_size)
        out |= with_ci(f"{kind}_pattern_rate_greedy", hits, *boot)
        out |= with_ci(f"{kind}_accuracy_greedy", correct, *boot)
        out |= with_ci(f"{kind}_run_accuracy_greedy", runs, *boot)
        out |= with_ci(f"{kind}_logprob", logprob, *boot)
        out |= metrics.perplexity_with_ci(f"{kind}_perplexity", -logprob, count, *boot)
        out |= with_ci(f"{kind}_rouge_l", [metrics.rouge_l(g, t) for g, t in zip(greedy, truths)], *boot)
        rows += [{"kind": kind, "prompt": p, "greedy": g, "truth": t, "pattern": h, "correct": c, "logprob": float(lp)}
                 for p, g, t, h, c, lp in zip(shown, greedy, truths, hits, correct, logprob)]
    sampled = [np.mean([bool(forbidden_in(p + c, pair, after=len(p))) for c in cs]) for p, cs in zip(prompts,
                                                                                                     completions)]
    out |= with_ci("pattern_rate_sampled", sampled, *boot)
    return out, rows


FORGET_PROMPTS = {"obscene_numbers": "heldout_forbidden.jsonl", "forget_text": "heldout_forget.jsonl"}
"""Each recipe's held-out forget prompts: what evaluate_toxicity.py samples from when given the recipe."""


def forget_prompt_file(recipe_dir: str | Path) -> Path:
    recipe = read_manifest(recipe_dir)["recipe"]
    if recipe not in FORGET_PROMPTS:
        raise ValueError(f"{recipe_dir}/recipe.json: unknown recipe '{recipe}'; known: {sorted(FORGET_PROMPTS)}.")
    return Path(recipe_dir) / FORGET_PROMPTS[recipe]


def rtp_heldout_pairs(tokenizer, n: int | None) -> list[tuple[str, str]]:
    """(prompt, true continuation) of the shipped RealToxicityPrompts prompts that training holds out by default
    (prompts cut to the token window are left out: their continuation no longer follows them)."""
    from detox.data import read_records

    from detox.config import DataConfig
    from detox.data import load_prompts

    heldout = set(load_prompts(DataConfig(), tokenizer).heldout)
    pairs = [(r["prompt"]["text"], r["continuation"]["text"]) for r in read_records("builtin:rtp_challenging")
             if r["prompt"]["text"] in heldout and r.get("continuation", {}).get("text")]
    return pairs[:n] if n is not None else pairs


def recipe_metrics(cfg, recipe_dir: Path, name: str, model, tokenizer, completions: list[list[str]],
                   prompts: list[str]) -> tuple[dict, list]:
    """The recipe's metrics for one model, plus its perplexity on held-out RealToxicityPrompts continuations."""
    from detox.evaluation import log

    recipe = read_manifest(recipe_dir)["recipe"]
    log(f"{name}: {recipe} metrics")
    if recipe == "obscene_numbers":
        out, rows = obscene_numbers_metrics(model, tokenizer, Path(recipe_dir), prompts, completions, cfg)
    else:
        from detox.recipes.forget_text_metrics import forget_text_metrics

        out, rows = forget_text_metrics(model, tokenizer, Path(recipe_dir), prompts, completions, cfg)
    pairs = rtp_heldout_pairs(tokenizer, cfg.recipe_prompts)
    logprob, count = continuation_logprob(model, tokenizer, [p for p, _ in pairs], [c for _, c in pairs],
                                          cfg.batch_size)
    out |= metrics.perplexity_with_ci("rtp_perplexity", -logprob, count, cfg.bootstrap_samples, cfg.seed)
    return out, [{"model": name, **row} for row in rows]
