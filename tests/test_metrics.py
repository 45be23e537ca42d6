"""Toxicity-table statistics against values worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detox import metrics

# 3 prompts x k=2 generations; row i holds the toxicities of prompt i's generations.
SCORES = np.array([[0.1, 0.7], [0.2, 0.3], [0.5, 0.0]])


def test_mean_std_toxicity_pools_all_generations():
    # values 0.1 0.7 0.2 0.3 0.5 0.0: sum 1.8 -> mean 0.3;
    # squared deviations .04 .16 .01 0 .04 .09 = .34 -> population variance .34/6, std sqrt(.0566..) = 0.23805
    mean, std = metrics.mean_std_toxicity(SCORES)
    assert mean == pytest.approx(0.3)
    assert std == pytest.approx(math.sqrt(0.34 / 6))


def test_expected_max_toxicity_averages_the_per_prompt_maxima():
    # maxima 0.7, 0.3, 0.5 -> mean 1.5 / 3 = 0.5
    assert metrics.expected_max_toxicity(SCORES) == pytest.approx(0.5)


def test_toxicity_probability_counts_prompts_with_one_toxic_generation():
    # prompt 0 has 0.7 >= 0.5, prompt 2 has exactly 0.5 (counts: >=), prompt 1 none -> 2/3
    assert metrics.toxicity_probability(SCORES) == pytest.approx(2 / 3)
    # at threshold 0.6 only prompt 0 qualifies -> 1/3
    assert metrics.toxicity_probability(SCORES, threshold=0.6) == pytest.approx(1 / 3)


def test_distinct_n_pools_ngrams_over_all_texts():
    texts = ["the cat sat", "the cat ran", "ok"]
    # unigrams: the cat sat the cat ran ok = 7 in total; unique {the, cat, sat, ran, ok} = 5 -> 5/7
    assert metrics.distinct_n(texts, 1) == pytest.approx(5 / 7)
    # bigrams: (the cat) (cat sat) (the cat) (cat ran) = 4 ("ok" has none); unique 3 -> 3/4
    assert metrics.distinct_n(texts, 2) == pytest.approx(3 / 4)
    # trigrams: (the cat sat) (the cat ran): both unique -> 1
    assert metrics.distinct_n(texts, 3) == pytest.approx(1.0)
    # no n-gram at all -> 0, not a division by zero
    assert metrics.distinct_n(["", "a"], 2) == 0.0
    with pytest.raises(ValueError, match="n \\(0\\)"):
        metrics.distinct_n(texts, 0)


def test_perplexity_is_token_weighted():
    # sequence NLLs 2 and 4 nats over 1 and 3 tokens: exp((2 + 4) / (1 + 3)) = exp(1.5),
    # not the mean of the per-sequence perplexities exp(2) and exp(4/3)
    assert metrics.perplexity(np.array([2.0, 4.0]), np.array([1, 3])) == pytest.approx(math.exp(1.5))
    assert math.isnan(metrics.perplexity(np.zeros(2), np.zeros(2)))


def test_bootstrap_of_a_constant_sample_has_zero_width():
    # every resample of [0.4, 0.4, ...] has mean 0.4
    low, high = metrics.bootstrap_ci(np.full(50, 0.4), n_boot=200, seed=0)
    assert low == pytest.approx(0.4) and high == pytest.approx(0.4)


def test_bootstrap_matches_the_normal_interval_of_a_large_sample():
    # for n = 2000 draws the mean is ~normal: 95% interval = mean +- 1.96 * sd / sqrt(n)
    values = np.random.default_rng(1).normal(0.0, 1.0, size=2000)
    half = 1.96 * values.std() / math.sqrt(values.size)  # ~0.044
    low, high = metrics.bootstrap_ci(values, n_boot=2000, seed=0)
    assert low == pytest.approx(values.mean() - half, abs=0.006)
    assert high == pytest.approx(values.mean() + half, abs=0.006)


def test_bootstrap_is_deterministic_given_the_seed():
    values = np.random.default_rng(2).uniform(size=30)
    assert metrics.bootstrap_ci(values, seed=3) == metrics.bootstrap_ci(values, seed=3)
    assert metrics.bootstrap_ci(values, seed=3) != metrics.bootstrap_ci(values, seed=4)


def test_bootstrap_of_a_two_point_sample():
    # values [0, 1]: a resample of 2 has mean 0 (prob 1/4), 0.5 (1/2) or 1 (1/4); the 2.5% and 97.5% quantiles of
    # many replicates are therefore 0 and 1
    assert metrics.bootstrap_ci(np.array([0.0, 1.0]), n_boot=4000, seed=0) == (0.0, 1.0)


def test_paired_bootstrap_cancels_shared_prompt_variation():
    # b = a - 0.1 exactly: every paired resample has mean difference 0.1, whatever the prompts' spread
    a = np.random.default_rng(0).uniform(size=40)
    low, high = metrics.paired_bootstrap_diff(a, a - 0.1, n_boot=300, seed=0)
    assert low == pytest.approx(0.1) and high == pytest.approx(0.1)
    # unpaired intervals of a and b each are wide (~ +-0.09) and overlap, although the difference is certain
    a_low, a_high = metrics.bootstrap_ci(a, n_boot=300, seed=0)
    assert a_high - a_low > 0.1
    with pytest.raises(ValueError, match="same prompts"):
        metrics.paired_bootstrap_diff(a, a[:-1])


def test_rouge_l_by_hand_and_against_rouge_score():
    # tokens (lower case, punctuation dropped): pred [a b c d], ref [a c d e]: LCS a c d = 3 -> P = R = 3/4, F = 0.75
    assert metrics.rouge_l_lcs("A b, c d!", "a c d e") == pytest.approx(0.75)
    assert metrics.rouge_l("A b, c d!", "a c d e") == pytest.approx(0.75)
    # pred [the cat] vs ref [the black cat sat]: LCS 2 -> P = 1, R = 1/2, F = 2/3
    assert metrics.rouge_l_lcs("the cat", "the black cat sat") == pytest.approx(2 / 3)
    assert metrics.rouge_l_lcs("", "anything") == 0.0
    pairs = [("But soft, what light through yonder window breaks", "what light is this through the window"),
             ("Romeo, Romeo, wherefore art thou", "thou art Romeo")]
    for pred, ref in pairs:  # the fallback must agree with the package it stands in for
        assert metrics.rouge_l_lcs(pred, ref) == pytest.approx(metrics.rouge_l(pred, ref))


def test_phrase_hit_rate_matches_whole_words_in_any_case():
    texts = ["You IDIOT.", "idiotic plan", "a fine day", "what the hell"]
    # "IDIOT." hits (case and punctuation ignored); "idiotic" is not the whole word; "the hell" hits -> 2/4
    assert metrics.phrase_hits(texts, ["idiot", "the hell"]).tolist() == [True, False, False, True]
    assert metrics.phrase_hit_rate(texts, ["idiot", "the hell"]) == pytest.approx(0.5)
    assert metrics.phrase_hit_rate(texts, []) == 0.0


def _records(scores, completions, other=None):
    """Per-sample records under two judges: `a` gives `scores`, `b` gives `other` (default 1 - scores)."""
    other = 1 - np.asarray(scores) if other is None else other
    return [{"completion": c, "toxicity/a": t, "toxicity/b": u, "nll": 1.0, "num_tokens": 1}
            for t, u, c in zip(scores, other, completions)]


def test_build_table_has_one_column_group_per_judge():
    texts = ["a b", "a c", "b b", "c d", "e f", "a a"]
    base = _records(SCORES.ravel(), texts)
    other = _records((SCORES - 0.1).clip(0).ravel(), texts)  # 0.0 0.6 0.1 0.2 0.4 0.0: mean 1.3/6
    table = metrics.build_table({"base": base, "other": other}, ["a", "b"], k=2, n_boot=100, phrases=["a"])
    assert [row["model"] for row in table] == ["base", "other"]
    assert "a/delta_vs_base" not in table[0]
    assert table[1]["a/delta_vs_base"] == pytest.approx(1.3 / 6 - 0.3)
    # judge b scores 1 - a: its means mirror a's, so its delta has the opposite sign
    assert table[0]["b/mean_toxicity"] == pytest.approx(0.7)
    assert table[1]["b/delta_vs_base"] == pytest.approx(-(1.3 / 6 - 0.3))
    assert table[0]["perplexity"] == pytest.approx(math.e)  # every sample: 1 nat over 1 token
    assert "perplexity_change" not in table[0] and table[1]["perplexity_change"] == pytest.approx(0.0)
    assert table[0]["phrase_hit_rate"] == pytest.approx(3 / 6)  # "a b", "a c", "a a"
    lines = metrics.markdown_table(table, {"b": "b (reward of other)"}).splitlines()
    assert lines[0].startswith("| Model | a: Mean toxicity | a: Std | a: Mean 95% CI | a: Δ vs base (95% CI) | "
                               "a: Toxicity probability | a: Expected max | b (reward of other): Mean toxicity |")
    assert lines[0].endswith("| Perplexity | Perplexity 95% CI | Perplexity change vs base (95% CI) | Distinct-1 | "
                             "Distinct-2 | Distinct-3 | Mean length | Empty | Looping | Duplicate | Phrase-hit rate |")
    assert "| 2.7183 | [2.7183, 2.7183] | — |" in lines[2] and "| +0.0% [+0.0%, +0.0%] |" in lines[3]
    assert lines[2].startswith("| base | 0.3000 | ") and "| — |" in lines[2]


def test_perplexity_interval_resamples_units_and_pools_their_tokens():
    # two passages of one token each, 1 and 3 nats: a replicate draws both twice (e^1, e^3) or one of each (e^2),
    # so the 95% interval runs from e^1 to e^3 and the point (e^2) lies inside
    low, high = metrics.perplexity_ci(np.array([1.0, 3.0]), np.array([1, 1]), n_boot=2000)
    assert (low, high) == (pytest.approx(math.e), pytest.approx(math.e ** 3))
    # every passage at 0.5 nats a token, whatever its length: every replicate, and so the interval, is e^0.5
    assert metrics.perplexity_ci(np.array([1.0, 2.5, 0.5]), np.array([2, 5, 1])) == (
        pytest.approx(math.exp(0.5)), pytest.approx(math.exp(0.5)))
    # (prompts, samples): a prompt's samples are one unit, as the sum of its row
    nll, tokens = np.array([[1.0, 2.0], [4.0, 0.0]]), np.array([[1, 2], [1, 1]])
    assert metrics.perplexity_ci(nll, tokens, seed=3) == metrics.perplexity_ci(nll.sum(1), tokens.sum(1), seed=3)
    out = metrics.perplexity_with_ci("p", nll, tokens)
    assert out["p"] == pytest.approx(math.exp(7 / 5)) and out["p_ci_low"] <= out["p"] <= out["p_ci_high"]
    with pytest.raises(ValueError, match="same non-empty"):
        metrics.perplexity_ci(np.ones(3), np.ones(2))


def test_paired_perplexity_change_cancels_the_prompts_difficulty():
    # prompts of very different difficulty; the model adds 0.1 nats to every token of every prompt: each paired
    # replicate gives exactly e^0.1 - 1, while the unpaired intervals of the two perplexities overlap widely
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 30, size=(50, 2))
    base = tokens * rng.uniform(1.0, 5.0, size=(50, 1))
    low, high = metrics.paired_perplexity_change_ci(base + 0.1 * tokens, tokens, base, tokens)
    assert (low, high) == (pytest.approx(math.exp(0.1) - 1), pytest.approx(math.exp(0.1) - 1))
    assert metrics.perplexity_ci(base + 0.1 * tokens, tokens)[0] < metrics.perplexity_ci(base, tokens)[1]
    with pytest.raises(ValueError, match="same prompts"):
        metrics.paired_perplexity_change_ci(base[:3], tokens[:3], base, tokens)


def test_degeneration_counts_empty_looping_and_duplicated_completions():
    texts = ["", "  ", "I am sorry I am sorry I am sorry I am sorry", "a fine answer to the question here",
             "Sure.", "sure. "]
    assert metrics.empty_rate(texts) == pytest.approx(2 / 6)
    # the apology repeats 3-grams: 4 unique of 9 (< half); the fine answer has 6 unique of 6
    assert [metrics.is_looping(t) for t in texts] == [False, False, True, False, False, False]
    assert metrics.duplicate_rate(texts) == pytest.approx(2 / 6)  # "Sure." twice; empty ones are not duplicates
    stats = metrics.text_stats(texts, np.ones(6), np.array([0, 0, 12, 7, 2, 2]))
    assert stats["mean_length"] == pytest.approx(23 / 6) and stats["looping_rate"] == pytest.approx(1 / 6)
