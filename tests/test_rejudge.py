"""benchmarks/rejudge.py's tables over methods and seeds, on hand-made evaluation results (a run of the benchmark
trains six models for about two hours and belongs to benchmarks/, not here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.rejudge import JUDGES, judge_rows, locality_rows, print_verdicts


def _results(gd: list[float], ppo: list[float], relation: str = "independent") -> dict:
    """Base at toxicity 0.2 (perplexity 40, distinct-1 0.40) under every judge; gd and ppo seeds at the given
    toxicities, each with a paired interval of ±0.02 around its change and perplexity +5%."""
    base = {"model": "base", "perplexity": 40.0, "distinct_1": 0.40, "distinct_2": 0.8, "distinct_3": 0.9,
            **{f"{j}/mean_toxicity": 0.2 for j in JUDGES}}
    rows, relations = [base], {"base": {j: "independent" for j in JUDGES}}
    for method, values in (("gd", gd), ("ppo", ppo)):
        for seed, value in enumerate(values):
            name = f"{method}{seed}"
            relations[name] = {j: relation for j in JUDGES}
            rows.append({"model": name, "perplexity": 42.0, "perplexity_change": 0.05, "perplexity_change_ci_low": 0.0,
                         "perplexity_change_ci_high": 0.1, "distinct_1": 0.39, "distinct_2": 0.8, "distinct_3": 0.9,
                         **{f"{j}/{k}": v for j in JUDGES for k, v in (
                             ("mean_toxicity", value), ("delta_ci_low", value - 0.2 - 0.02),
                             ("delta_ci_high", value - 0.2 + 0.02), ("share_prompts_less_toxic", 0.6),
                             ("auc_base_vs_model", 0.55))}})
    return {"rows": rows, "judge_relations": relations}


def test_changes_over_seeds_are_the_mean_and_t_interval_of_each_seeds_change():
    # gd: -20%, -30%, -40%: mean -30%, sd 10 points, t(0.975, 2) = 4.303: half width 24.8 points
    rows = judge_rows(_results([0.16, 0.14, 0.12], [0.18, 0.18, 0.18]), {"gd": [0, 1, 2], "ppo": [0, 1, 2]})
    gd = next(r for r in rows if r["method"] == "gd")
    assert [s["change"] for s in gd["seeds"]] == pytest.approx([-0.2, -0.3, -0.4])
    assert gd["seeds"][0]["low"] == pytest.approx(-0.3) and gd["seeds"][0]["high"] == pytest.approx(-0.1)
    assert (gd["change"], gd["low"], gd["high"]) == pytest.approx((-0.3, -0.548, -0.052), abs=1e-3)
    assert gd["share_prompts_less_toxic"] == pytest.approx(0.6) and gd["relation"] == "independent"
    assert len(rows) == 2 * len(JUDGES)


def test_one_seed_keeps_its_interval_over_prompts():
    rows = judge_rows(_results([0.16], [0.18]), {"gd": [0], "ppo": [0]})
    gd = next(r for r in rows if r["method"] == "gd")
    assert (gd["change"], gd["low"], gd["high"]) == pytest.approx((-0.2, -0.3, -0.1))


def test_locality_averages_the_seeds():
    (gd, _) = locality_rows(_results([0.16, 0.14], [0.18, 0.18]), {"gd": [0, 1], "ppo": [0, 1]})
    assert gd["perplexity_change"] == pytest.approx(0.05) and gd["distinct_1_gap"] == pytest.approx(-0.01)


def test_verdicts_name_the_less_toxic_method_and_whether_intervals_overlap(capsys):
    results = _results([0.16, 0.14, 0.12], [0.10, 0.10, 0.10])
    print_verdicts({"rtp": {"judges": judge_rows(results, {"gd": [0, 1, 2], "ppo": [0, 1, 2]})}}, ["gd", "ppo"])
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("rtp, offline"))
    assert "ppo less toxic" in line and "intervals overlap" in line  # gd's [-54.8%, -5.2%] holds ppo's -50%


def test_verdicts_leave_out_a_judge_that_is_not_independent(capsys):
    results = _results([0.16, 0.14, 0.12], [0.10, 0.10, 0.10], relation="sibling")
    print_verdicts({"rtp": {"judges": judge_rows(results, {"gd": [0, 1, 2], "ppo": [0, 1, 2]})}}, ["gd", "ppo"])
    assert "rtp, " not in capsys.readouterr().out


def test_methods_may_have_different_seeds():
    rows = judge_rows(_results([0.16, 0.14, 0.12], [0.10, 0.12]), {"gd": [0, 1, 2], "ppo": [0, 1]})
    ppo = next(r for r in rows if r["method"] == "ppo")
    # -50% and -40%: mean -45%, sd 7.07 points, t(0.975, 1) = 12.706: half width 63.5 points
    assert [s["seed"] for s in ppo["seeds"]] == [0, 1]
    assert (ppo["change"], ppo["low"], ppo["high"]) == pytest.approx((-0.45, -1.085, 0.185), abs=1e-3)


def test_a_chained_method_trains_its_start_of_the_same_seed_first(tmp_path, monkeypatch):
    from benchmarks import rejudge

    commands = []

    def fake_run(command, log):  # records the command and leaves the final model a real run would leave
        commands.append([str(c) for c in command])
        target = Path(command[command.index("--checkpoint.output_dir") + 1])
        (target / "final").mkdir(parents=True)
        return 1.0

    monkeypatch.setattr(rejudge, "run", fake_run)
    rejudge.train(tmp_path, "gd_ppo", 2)
    (gd, chained) = commands
    assert gd[1:3] == ["train_unlearn.py", "--config"] and gd[gd.index("--optim.seed") + 1] == "2"
    assert chained[1] == "train_ppo.py" and "configs/detox_gd_then_ppo.yaml" in chained
    assert chained[chained.index("--model.name_or_path") + 1] == str(tmp_path / "gd_s2" / "final")
    rejudge.train(tmp_path, "gd_ppo", 2)  # both exist now: nothing is trained again
    assert len(commands) == 2
