"""TOFU's metrics (detox/tofu_metrics.py) against hand computations on tiny data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detox import tofu_metrics as tm
from detox.tofu_metrics import (
    UTILITY_KEYS, extraction_strength, forget_quality, forget_truth_ratio, kept_truth_ratio, model_utility,
    normalized_probability, probability_with_options, rouge_l_recall, truth_ratios,
)


def test_probability_is_length_normalised():
    # an answer of 4 tokens with total NLL 4 ln 2 has probability 1/16, per token 1/2
    assert normalized_probability(np.array([math.log(2)]))[0] == pytest.approx(0.5)


def test_probability_with_options_is_the_true_answers_share():
    # true per-token probability 1/2, wrong ones 1/4 and 1/4: 0.5 / (0.5 + 0.25 + 0.25)
    share = probability_with_options(np.array([math.log(2)]), np.array([[math.log(4), math.log(4)]]))
    assert share[0] == pytest.approx(0.5)


def test_truth_ratio_averages_the_wrong_answers_nll_before_the_exponential():
    # paraphrase per-token probability 1/2 (NLL ln 2); wrong NLLs ln 2 and ln 8, mean 2 ln 2: probability 1/4
    ratio = truth_ratios(np.array([math.log(2)]), np.array([[math.log(2), math.log(8)]]))
    assert ratio[0] == pytest.approx(0.25 / 0.5)


def test_truth_ratio_aggregates():
    ratios = np.array([0.5, 2.0, 1.0, 0.25])
    assert forget_truth_ratio(ratios) == pytest.approx((0.5 + 0.5 + 1.0 + 0.25) / 4)
    assert kept_truth_ratio(ratios) == pytest.approx((0.5 + 0.0 + 0.0 + 0.75) / 4)


def test_forget_quality_is_the_ks_p_value():
    # identical samples cannot be told apart (p = 1); two samples that do not overlap at all, n = m = 5:
    # D = 1 and the exact two-sided p-value is 2 / C(10, 5) = 2/252
    same = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    assert forget_quality(same, same) == pytest.approx(1.0)
    assert forget_quality(same, same + 1.0) == pytest.approx(2 / 252)


def test_model_utility_is_the_harmonic_mean_of_nine_values():
    values = dict.fromkeys(UTILITY_KEYS, 0.5) | {"wf_Q_A_ROUGE": 0.25}
    assert model_utility(values) == pytest.approx(9 / (8 / 0.5 + 1 / 0.25))
    assert model_utility(values | {"ra_Truth_Ratio": 0.0}) == 0.0
    with pytest.raises(ValueError, match="missing .*retain_Q_A_Prob"):
        model_utility({k: v for k, v in values.items() if k != "retain_Q_A_Prob"})


def test_rouge_l_recall_counts_the_references_words_in_order():
    # reference 5 words; the prediction holds "the author was born" in order: 4 of 5
    assert rouge_l_recall("The author, sadly, was born late", "the author was born in") == pytest.approx(0.8)
    assert rouge_l_recall("anything", "") == 0.0


def test_extraction_strength_is_the_share_of_the_answer_reproduced_from_its_end():
    assert extraction_strength([True] * 4) == 1.0
    assert extraction_strength([False, True, True, True]) == pytest.approx(0.75)  # reproduced from token 1 on
    assert extraction_strength([True, False, True, True]) == pytest.approx(0.5)
    assert extraction_strength([True, True, True, False]) == 0.0  # the last token wrong: no suffix reproduced
    assert extraction_strength([]) == 0.0


def test_shape_errors_name_the_expected_shape():
    with pytest.raises(ValueError, match=r"must be \(questions, perturbed answers\) for 2 questions"):
        truth_ratios(np.zeros(2), np.zeros(3))


def test_min_k_score_is_the_mean_log_probability_of_the_least_likely_tokens():
    nll = [0.1, 2.0, 0.5, 4.0, 1.0]  # ceil(0.4 * 5) = 2 least likely tokens: NLL 4.0 and 2.0
    assert tm.min_k_score(nll) == pytest.approx(-3.0)
    assert tm.min_k_score([0.7]) == pytest.approx(-0.7)  # at least one token
    assert tm.min_k_score([np.nan, 1.0, 3.0], k=0.5) == pytest.approx(-3.0)  # unscored positions left out
    with pytest.raises(ValueError, match="no scored token"):
        tm.min_k_score([np.nan])


def test_member_auc_and_privacy_leakage_by_hand():
    # members -1, -2 against non-members -1.5, -3, -1: -1 beats -1.5 and -3 and ties -1 (2.5 pairs); -2 beats -3
    # (1 pair); AUC = 3.5 of 6 pairs
    assert tm.member_auc([-1.0, -2.0], [-1.5, -3.0, -1.0]) == pytest.approx(3.5 / 6)
    assert tm.member_auc([0.0], [1.0]) == 0.0 and tm.member_auc([1.0], [0.0]) == 1.0
    assert tm.privleak(0.75, 0.5) == pytest.approx(50.0) and tm.privleak(0.5, 0.5) == 0.0
    with pytest.raises(ValueError, match="must be positive"):
        tm.privleak(0.5, 0.0)
