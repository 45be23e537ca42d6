"""benchmarks/detox_frontier.py: settings and seeds read from evaluation results, and the locality allowances."""

from __future__ import annotations

import json

import pytest

from benchmarks.detox_frontier import main, settings, within_allowances


def _results() -> dict:
    base = {"model": "base", "judge_combined/mean_toxicity": 0.4, "distinct_1": 0.5, "distinct_2": 0.8}

    def row(name, toxicity, perplexity, distinct_1=0.5):
        return {"model": name, "judge_combined/mean_toxicity": toxicity, "perplexity_change": perplexity,
                "distinct_1": distinct_1, "distinct_2": 0.8}

    return {"rows": [base, row("gd0", 0.2, 0.01), row("gd1", 0.1, -0.02), row("mix0", 0.3, 0.12),
                     row("mix1", 0.3, 0.0, distinct_1=0.47)]}


def test_models_group_by_setting_with_changes_against_the_base():
    by_setting = settings([_results()], "judge_combined")
    assert sorted(by_setting) == ["gd", "mix"]
    assert [s["toxicity"] for s in by_setting["gd"]] == pytest.approx([-0.5, -0.75])
    assert [s["seed"] for s in by_setting["mix"]] == [0, 1]
    assert all(within_allowances(s) for s in by_setting["gd"])
    # one seed past the perplexity allowance, the other past the distinct-1 one
    assert not any(within_allowances(s) for s in by_setting["mix"])


def test_the_picture_and_table_are_written_and_a_missing_judge_is_named(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results()))
    main([str(path), "--output", str(tmp_path / "frontier.png"), "--label", "gd=gradient difference"])
    out = capsys.readouterr().out
    assert "| gd | 2 | -62.5% | -50.0%, -75.0% | +1.0%, -2.0% |" in out and "| mix | 2 |" in out
    assert (tmp_path / "frontier.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="--judge judge_toxigen"):
        main([str(path), "--judge", "judge_toxigen", "--output", str(tmp_path / "x.png")])


def test_a_left_out_setting_stays_in_the_table_and_an_unknown_one_is_named(tmp_path, capsys, monkeypatch):
    from benchmarks import detox_frontier

    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results()))
    drawn = {}
    monkeypatch.setattr(detox_frontier, "plot", lambda by_setting, *rest: drawn.update(by_setting))
    main([str(path), "--output", str(tmp_path / "f.png"), "--leave_out", "mix"])
    assert "| mix | 2 |" in capsys.readouterr().out and sorted(drawn) == ["gd"]
    with pytest.raises(SystemExit):
        main([str(path), "--output", str(tmp_path / "f.png"), "--leave_out", "nope"])
    assert "--leave_out nope: no such setting; the settings are gd, mix" in capsys.readouterr().err
