"""TOFU's unlearning metrics (Maini et al. 2024) as pure functions of per-answer losses, greedy answers and token
predictions, with the definitions open-unlearning reports under the same key names.

Every probability is length-normalised: a model's probability of an answer given its question is exp(−mean NLL of the
answer's tokens). Per split (forget, retain, real authors, world facts):

- answer probability: on forget and retain, the mean of that normalised probability of the true answer; on real
  authors and world facts, which carry wrong options, the true answer's share of the probability over it and its
  wrong options (`probability_with_options`).
- ROUGE-L recall of the greedy answer against the true one (the share of the true answer's words, in order).
- truth ratio of each question: the normalised probability of the wrong (perturbed) answers, their NLLs averaged
  first, over that of the paraphrased true answer (of the true answer where no paraphrase exists). On the forget set
  it is reported as mean min(R, 1/R) (a model that never saw the author finds the paraphrase and the wrong answers
  about as likely); elsewhere as mean max(0, 1 − R) (a model that knows prefers the truth).
- forget quality: the p-value of the two-sample Kolmogorov–Smirnov test between the unlearned model's forget truth
  ratios and the retain model's (the model that never saw the forget authors). High (≥ 0.05) means the two cannot be
  told apart.
- model utility: the harmonic mean of the nine retain-side values: answer probability, ROUGE-L recall and truth
  ratio on retain, real authors and world facts. One value at zero makes it zero.
- extraction strength: 1 − k/n for an answer of n tokens whose greedy next-token predictions, teacher-forced, match
  the answer from its k-th token to its end (k the smallest such); 1 means the whole answer is reproduced.
- membership: Min-K% Prob (Shi et al. 2024) scores an answer by the mean log-probability of its least likely 40% of
  tokens; `mia_min_k` is the ROC AUC of those scores telling the forget answers (members of the target's
  fine-tuning) from the holdout answers (about other fictitious authors, never trained on); `privleak` is its
  relative difference from the retain model's AUC in percent, (AUC − AUC_retain) / AUC_retain × 100: about 0 for a
  model whose forget answers look as unseen as a model that never saw them, positive when they still look learned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from detox.metrics import rouge_l_recall

UTILITY_KEYS = (
    "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
    "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
    "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio",
)
"""The nine values whose harmonic mean is model utility, under open-unlearning's key names."""

MIN_K = 0.4
"""Share of an answer's tokens, the least likely ones, whose mean log-probability is its Min-K% score."""

__all__ = ["MIN_K", "UTILITY_KEYS", "extraction_strength", "forget_quality", "forget_truth_ratio", "kept_truth_ratio",
           "member_auc", "min_k_score", "model_utility", "normalized_probability", "privleak",
           "probability_with_options", "rouge_l_recall", "truth_ratios"]


def normalized_probability(mean_nll: np.ndarray) -> np.ndarray:
    """exp(−mean NLL per answer token): an answer's length-normalised probability."""
    return np.exp(-np.asarray(mean_nll, dtype=np.float64))


def probability_with_options(true_nll: np.ndarray, wrong_nll: np.ndarray) -> np.ndarray:
    """(N,) the true answer's normalised probability over the sum of it and its wrong options'.
    true_nll (N,), wrong_nll (N, M): mean NLL per token of each answer."""
    true, wrong = normalized_probability(true_nll), normalized_probability(wrong_nll)
    if wrong.ndim != 2 or wrong.shape[0] != true.shape[0]:
        raise ValueError(f"probability_with_options: wrong_nll {wrong.shape} must be (questions, options) for "
                         f"{true.shape[0]} questions.")
    return true / (true + wrong.sum(axis=1))


def truth_ratios(true_nll: np.ndarray, wrong_nll: np.ndarray) -> np.ndarray:
    """(N,) R = P(wrong) / P(true), length-normalised, the wrong answers' mean NLLs averaged before the exponential.
    true_nll (N,): of the paraphrased true answer (or the true one); wrong_nll (N, M): of the perturbed answers."""
    true, wrong = np.asarray(true_nll, dtype=np.float64), np.asarray(wrong_nll, dtype=np.float64)
    if wrong.ndim != 2 or wrong.shape[0] != true.shape[0]:
        raise ValueError(f"truth_ratios: wrong_nll {wrong.shape} must be (questions, perturbed answers) for "
                         f"{true.shape[0]} questions.")
    return np.exp(true - wrong.mean(axis=1))


def forget_truth_ratio(ratios: np.ndarray) -> float:
    """Mean min(R, 1/R): 1 when the truth and the wrong answers are equally likely (nothing known)."""
    ratios = np.asarray(ratios, dtype=np.float64)
    return float(np.mean(np.minimum(ratios, 1.0 / ratios)))


def kept_truth_ratio(ratios: np.ndarray) -> float:
    """Mean max(0, 1 − R): near 1 when the truth is far likelier than the wrong answers (knowledge kept)."""
    return float(np.mean(np.maximum(0.0, 1.0 - np.asarray(ratios, dtype=np.float64))))


def forget_quality(model_ratios: np.ndarray, retain_model_ratios: np.ndarray) -> float:
    """p-value of the two-sample KS test between the forget-set truth ratios of the model and of the retain model."""
    if len(model_ratios) == 0 or len(retain_model_ratios) == 0:
        raise ValueError("forget_quality: both models need truth ratios of the same forget questions.")
    return float(stats.ks_2samp(np.asarray(model_ratios, dtype=np.float64),
                                np.asarray(retain_model_ratios, dtype=np.float64)).pvalue)


def model_utility(values: Mapping[str, float]) -> float:
    """Harmonic mean of the nine UTILITY_KEYS values; zero if one of them is zero."""
    missing = [k for k in UTILITY_KEYS if k not in values]
    if missing:
        raise ValueError(f"model_utility: missing {missing}; it needs all of {list(UTILITY_KEYS)}.")
    parts = np.array([values[k] for k in UTILITY_KEYS], dtype=np.float64)
    if np.any(parts < 0):
        raise ValueError(f"model_utility: negative values {dict(zip(UTILITY_KEYS, parts))}.")
    return 0.0 if np.any(parts == 0) else float(stats.hmean(parts))


def extraction_strength(hits: Sequence[bool]) -> float:
    """1 − k/n for an answer of n tokens whose teacher-forced greedy predictions are right (`hits`) from token k to
    the end, k the smallest such (k = n when even the last token is wrong: 0)."""
    hits = [bool(h) for h in hits]
    k = len(hits)
    while k > 0 and hits[k - 1]:
        k -= 1
    return 1.0 - k / len(hits) if hits else 0.0


def min_k_score(token_nll: Sequence[float], k: float = MIN_K) -> float:
    """Min-K% Prob of one answer from its per-token NLLs: the mean log-probability of its ceil(k·n) least likely
    tokens (at least one). Higher reads as seen in training."""
    nll = np.asarray(token_nll, dtype=np.float64)
    nll = nll[np.isfinite(nll)]
    if nll.size == 0:
        raise ValueError("min_k_score: the answer has no scored token.")
    worst = np.sort(nll)[::-1][: max(1, int(np.ceil(k * nll.size)))]
    return float(-worst.mean())


def member_auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """ROC AUC that a member's score exceeds a non-member's (ties count half)."""
    members = np.asarray(member_scores, dtype=np.float64)
    others = np.asarray(nonmember_scores, dtype=np.float64)
    if members.size == 0 or others.size == 0:
        raise ValueError("member_auc: needs member and non-member scores.")
    ranks = stats.rankdata(np.concatenate([members, others]))
    return float((ranks[: members.size].sum() - members.size * (members.size + 1) / 2) / (members.size * others.size))


def privleak(model_auc: float, retain_model_auc: float) -> float:
    """(AUC − AUC_retain) / AUC_retain × 100: the model's membership AUC relative to the retain model's."""
    if retain_model_auc <= 0:
        raise ValueError(f"privleak: the retain model's AUC ({retain_model_auc}) must be positive.")
    return (model_auc - retain_model_auc) / retain_model_auc * 100.0
