"""benchmarks/obscene_numbers.py's targets on hand-made recipe rows (a run trains the counting model and PPO for tens of
minutes per seed and belongs to benchmarks/, not here)."""

from __future__ import annotations

from benchmarks.obscene_numbers import TARGETS, meets, report


def test_absolute_and_change_bounds():
    assert meets(0.04, 0.99, 0.05, None) and not meets(0.06, 0.99, 0.05, None)  # <= 0.05
    assert meets(0.85, 0.0, -0.80, None) and not meets(0.79, 0.0, -0.80, None)  # >= 0.80
    assert meets(0.70, 0.74, None, -0.05) and not meets(0.68, 0.74, None, -0.05)  # a drop of at most 5 points
    assert meets(0.05, 0.01, None, 0.05) and not meets(0.07, 0.01, None, 0.05)  # a rise of at most 5 points


def test_report_judges_the_mean_over_seeds(capsys):
    base = {key: 0.5 for key, *_ in TARGETS} | {"forbidden_pattern_rate_greedy": 0.98, "pattern_rate_sampled": 0.9,
                                                "forbidden_skip_rate_greedy": 0.0}
    good = base | {"forbidden_pattern_rate_greedy": 0.0, "pattern_rate_sampled": 0.02, "forbidden_skip_rate_greedy": 0.9}
    bad_skip = good | {"forbidden_skip_rate_greedy": 0.5}
    assert report({"sft": base, "ppo0": good, "ppo1": good}, [0, 1])
    assert not report({"sft": base, "ppo0": good, "ppo1": bad_skip}, [0, 1])  # mean skip 0.70 < 0.80
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("skip, greedy") and "mean 0.700" in line and "NOT met" in line for line in lines)
