"""benchmarks/tofu.py's reading of its runs: the table over seeds, the relearning gap kept, and the issue's target
said plainly (the runs themselves are the recipe's, tested in test_recipe_tofu.py)."""

from __future__ import annotations

import pytest

from benchmarks import tofu
from benchmarks.harness import t_interval


def _values(fq: dict[str, float], mu: dict[str, float]) -> dict[str, dict]:
    return {name: {"forget_quality": fq[name], "model_utility": mu[name], "forget_Q_A_Prob": 0.5,
                   "forget_Q_A_ROUGE": 0.4, "forget_Truth_Ratio": 0.6} for name in fq}


def test_rows_are_means_over_seeds_with_t_intervals():
    values = _values({"target": 1e-5, "retain": 1.0, "ppo_s0": 0.1, "ppo_s1": 0.3, "npo_s0": 0.2, "npo_s1": 0.2},
                     {"target": 0.6, "retain": 0.6, "ppo_s0": 0.5, "ppo_s1": 0.55, "npo_s0": 0.4, "npo_s1": 0.42})
    rows = tofu.summarise(values, ["ppo", "npo"], [0, 1])
    assert rows["ppo"]["forget_quality"]["mean"] == pytest.approx(0.2)
    assert rows["ppo"]["forget_quality"]["interval"] == pytest.approx(t_interval([0.1, 0.3])[1:])
    assert rows["target"]["model_utility"]["interval"] is None and rows["retain"]["forget_quality"]["mean"] == 1.0
    text = tofu.markdown("forget10", rows, [0, 1])
    assert "| ppo | 0.2 [" in text and "npo 0.29 / 0.55" in text  # the published figures, for orientation
    lines = tofu.verdict(rows, None, ["ppo", "npo"])
    assert lines == ["ppo: forget quality 0.2 vs NPO's 0.2, model utility 0.525 vs 0.410: met (at least NPO's "
                     "quality at higher utility)"]


def test_the_relearning_target_compares_the_gap_each_method_keeps():
    def attack(shares: dict[str, float | None]) -> dict:
        return {"attacks": {"forget": {m: {"gap_share": {"probability": [0.0, s]}} for m, s in shares.items()}}}

    values = _values({"target": 0.0, "retain": 1.0, "ppo_s0": 0.3, "npo_s0": 0.2, "gradient_difference_s0": 0.1},
                     {"target": 0.6, "retain": 0.6, "ppo_s0": 0.5, "npo_s0": 0.55, "gradient_difference_s0": 0.5})
    rows = tofu.summarise(values, ["ppo", "npo", "gradient_difference"], [0])
    lines = tofu.verdict(rows, attack({"ppo": 0.2, "npo": 0.7, "gradient_difference": 0.5}),
                         ["ppo", "npo", "gradient_difference"])
    assert "NOT met (at least NPO's quality at higher utility)" in lines[0]  # utility 0.5 < NPO's 0.55
    assert lines[1] == "ppo: keeps 0.80 of its gap after the attack, the best loss-based method 0.50: NOT met " \
                       "(at least twice)"
    assert tofu.kept_gap(attack({"ppo": None}), "ppo") is None
    lines = tofu.verdict(rows, attack({"ppo": 0.0, "npo": 0.7, "gradient_difference": 0.6}),
                         ["ppo", "npo", "gradient_difference"])
    assert lines[1].endswith("1.00 of its gap after the attack, the best loss-based method 0.40: met (at least twice)")
