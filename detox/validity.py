"""How well a judge agrees with human labels it never saw: ROC AUC with its DeLong interval, rank correlation with
graded scores, calibration error, and accuracy per HateCheck functionality. Pure functions of arrays.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

Z95 = 1.959963984540054
VALIDITY_FILE = Path(__file__).resolve().parent / "assets" / "judge_validity.json"
"""Each judge's mean ROC AUC over the sources it never saw, written by benchmarks/judge_validity.py."""


def auc_delong(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float, float]:
    """ROC AUC of `scores` (N,) for binary `labels` (N,) with its 95% interval from DeLong's variance (DeLong,
    DeLong & Clarke-Pearson, 1988; the midrank form of Sun & Xu, 2014): (auc, low, high)."""
    from scipy.stats import rankdata  # lazy: scipy.stats takes ~0.7 s to import; only the validity statistics need it

    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, dtype=np.float64)
    pos, neg = scores[labels], scores[~labels]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        raise ValueError(f"auc_delong: needs both classes, got {m} positive and {n} negative rows.")
    ranks = rankdata(np.concatenate([pos, neg]))  # midranks over all rows
    auc = (ranks[:m].sum() - m * (m + 1) / 2) / (m * n)
    v_pos = (ranks[:m] - rankdata(pos)) / n  # placement of each positive among the negatives
    v_neg = 1.0 - (ranks[m:] - rankdata(neg)) / m  # share of positives above each negative
    var = np.var(v_pos, ddof=1) / m + np.var(v_neg, ddof=1) / n if m > 1 and n > 1 else 0.0
    half = Z95 * np.sqrt(var)
    return float(auc), float(max(0.0, auc - half)), float(min(1.0, auc + half))


def spearman(scores: np.ndarray, reference: np.ndarray) -> float:
    """Spearman rank correlation of a judge's scores with graded reference scores (human rating, Perspective)."""
    from scipy.stats import spearmanr  # lazy: scipy.stats takes ~0.7 s to import; only the validity statistics need it

    return float(spearmanr(scores, reference).statistic)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """ECE: the row-weighted mean |mean P(toxic) - share toxic| over `bins` equal-width probability bins."""
    labels, probs = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    which = np.minimum((probs * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.sum() * abs(probs[inside].mean() - labels[inside].mean())
    return float(total / len(labels))


def brier(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(np.mean((np.asarray(probs, dtype=np.float64) - np.asarray(labels, dtype=np.float64)) ** 2))


def functionality_accuracy(functionality: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                           threshold: float = 0.5) -> dict[str, tuple[float, int]]:
    """HateCheck-style report: functionality -> (share of its cases judged right at `threshold`, number of cases)."""
    functionality = np.asarray(functionality)
    right = (np.asarray(probs) >= threshold) == np.asarray(labels).astype(bool)
    return {name: (float(right[functionality == name].mean()), int((functionality == name).sum()))
            for name in sorted(set(functionality.tolist()))}


def floor_free_change(base: np.ndarray, model: np.ndarray) -> dict[str, float]:
    """Two changes of toxicity from `base` to `model` scores (P, k) of the same P prompts that do not depend on where a
    judge's scale starts: the share of prompts whose mean toxicity fell, and the AUC of base against model
    completions (the probability that a base completion scores above a model one, ties counting half; 0.5 = no
    change)."""
    base, model = np.atleast_2d(np.asarray(base, dtype=np.float64)), np.atleast_2d(np.asarray(model, dtype=np.float64))
    if base.shape[0] != model.shape[0]:
        raise ValueError(f"floor_free_change: base {base.shape} and model {model.shape} need the same prompts.")
    fell = float(np.mean(model.mean(axis=1) < base.mean(axis=1)))
    labels = np.concatenate([np.ones(base.size), np.zeros(model.size)])
    return {"share_prompts_less_toxic": fell,
            "auc_base_vs_model": auc_delong(labels, np.concatenate([base.ravel(), model.ravel()]))[0]}


def load_ranking(path: str | Path = VALIDITY_FILE) -> dict[str, float]:
    """Judge -> mean ROC AUC on the sources it never saw, as shipped (empty when the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return {}
    return {name: entry["mean_unseen_auc"] for name, entry in json.loads(path.read_text())["judges"].items()}
