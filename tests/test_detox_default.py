"""benchmarks/detox_default.py's report over seeds, on hand-made evaluation results (a run of the benchmark trains
SmolLM2 for tens of minutes per seed and belongs to benchmarks/, not here)."""

from __future__ import annotations

import pytest

from benchmarks.detox_default import JUDGES, relative_change, report_seeds


def _results(detox_toxicity: float, detox_perplexity: float) -> dict:
    """evaluate_toxicity.py's results.json rows: the base at toxicity 0.2 and perplexity 40 under every judge."""
    base = {"model": "base", "perplexity": 40.0, **{f"{j}/mean_toxicity": 0.2 for j in JUDGES}}
    detox = {"model": "detox", "perplexity": detox_perplexity, **{f"{j}/mean_toxicity": detox_toxicity for j in JUDGES}}
    return {"rows": [base, detox]}


def test_relative_change_is_detox_over_base():
    assert relative_change(_results(0.15, 42.0), f"{JUDGES[0]}/mean_toxicity") == pytest.approx(-0.25)
    assert relative_change(_results(0.15, 42.0), "perplexity") == pytest.approx(0.05)


def test_report_over_seeds_gives_the_mean_change_and_its_t_interval(capsys):
    # toxicity changes -20%, -30%, -40%: mean -30%, sd 10 points, t(0.975, 2) = 4.303: half width 24.8 points
    by_seed = {s: (_results(toxicity, 40.0), _results(0.1, 44.0)) for s, toxicity in enumerate((0.16, 0.14, 0.12))}
    report_seeds(by_seed)
    lines = capsys.readouterr().out.splitlines()
    toxicity = next(line for line in lines if line.startswith(f"mean toxicity under {JUDGES[0]}"))
    assert "-30.0% [-54.8%, -5.2%]" in toxicity and "(seeds: -20.0%, -30.0%, -40.0%)" in toxicity
    nontoxic = next(line for line in lines if line.startswith("perplexity (non-toxic prompts)"))
    assert "+10.0% [+10.0%, +10.0%]" in nontoxic  # the same change at every seed: no spread
