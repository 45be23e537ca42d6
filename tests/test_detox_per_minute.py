"""benchmarks/detox_per_minute.py's bookkeeping: the budget clock, the trainer flags and the time-to-level verdict (its
seed intervals are benchmarks/harness.py's, tested there).

The benchmark's trainers themselves are the real training loops (train_ppo.py, train_grpo.py), which their own tests
cover; a run of the benchmark is minutes long and belongs to benchmarks/, not here.
"""

from __future__ import annotations

import argparse
import json
import time
from argparse import Namespace
from pathlib import Path

import pytest

from benchmarks import detox_per_minute, timed_train
from benchmarks.budget_clock import BudgetClock
from benchmarks.detox_per_minute import (check_gd_split, parse_trainer_flags, settings, train_config,
                                         trl011_reward_flags, verdict)
from benchmarks.harness import REPO, t_interval
from benchmarks.trl011_worker import ClassifierReward, load_toxicity_module
from detox.data import continuation_records
from detox.models import load_causal_lm, load_tokenizer
from rewards import build_reward


def test_budget_clock_saves_each_quarter_once_and_excludes_save_time(tmp_path):
    saved = []

    def save(directory: Path) -> None:
        time.sleep(0.2)  # a slow disk: must not count against the budget
        directory.mkdir(parents=True)
        saved.append(directory.name)

    clock = BudgetClock(budget_minutes=0.4 / 60, parts=4, run_dir=tmp_path, save=save)  # 0.4 s of training
    clock.start()
    steps = 0
    while True:
        time.sleep(0.05)  # a training step
        steps += 1
        if clock.after_step(steps, steps * 16):
            break
    rows = [json.loads(line) for line in (tmp_path / "checkpoints.jsonl").read_text().splitlines()]
    assert saved == ["part-1", "part-2", "part-3", "part-4"]
    assert [r["part"] for r in rows] == [1, 2, 3, 4]
    minutes = [r["minutes"] * 60 for r in rows]
    assert all(0.1 * k <= m < 0.1 * k + 0.1 for k, m in zip(range(1, 5), minutes)), minutes  # ≤ one step late
    assert 0.4 <= clock.seconds() < 0.5  # the four 0.2 s saves (0.8 s) are not in it
    assert rows[-1]["steps"] == steps and rows[-1]["completions"] == 16 * steps


def test_budget_clock_rejects_an_empty_budget(tmp_path):
    with pytest.raises(ValueError, match="budget_minutes"):
        BudgetClock(0, 4, tmp_path, lambda d: None)


def _verdict_args() -> Namespace:
    return Namespace(target=0.7, max_perplexity_rise=0.10, max_distinct_drop=0.02, budget_minutes=8,
                     independent_judge="minilm_davidson", reward_judge="offline")


def _curve(levels: list[float], minutes: list[float], ppl_change: float = 0.0) -> list[dict]:
    return [{"part": i, "minutes": m, "independent": (v, v, v), "perplexity_change": ppl_change,
             "distinct_2_change": 0.0} for i, (v, m) in enumerate(zip(levels, minutes))]


def test_verdict_times_ours_to_the_other_trainers_best_level():
    args = _verdict_args()
    lines = {
        "ours_ppo": _curve([0.30, 0.26, 0.24, 0.22, 0.21], [0, 2, 4, 6, 8]),
        "trl_grpo": _curve([0.30, 0.29, 0.27, 0.24, 0.25], [0, 2, 4, 6, 8]),  # best 0.24 at 6 min
        "trl_rloo": _curve([0.30, 0.28, 0.25, 0.23, 0.20], [0, 2, 4, 6, 8]),  # best 0.20: ours never gets there
    }
    grpo, rloo = verdict(args, lines)
    assert "best 0.2400 under minilm_davidson at 6.0 min" in grpo and "ours reaches 0.2400 at 4.0 min" in grpo and "0.67×" in grpo
    assert grpo.endswith("met") and "NOT" not in grpo
    assert rloo.endswith("target NOT met") and "does not reach it" in rloo


def test_verdict_refuses_a_level_bought_with_perplexity():
    args = _verdict_args()
    lines = {"ours_ppo": _curve([0.30, 0.20, 0.20, 0.20, 0.20], [0, 2, 4, 6, 8], ppl_change=0.25),
             "trl_grpo": _curve([0.30, 0.29, 0.28, 0.27, 0.26], [0, 2, 4, 6, 8])}
    (line,) = verdict(args, lines)
    assert "does not reach it" in line and line.endswith("NOT met")


def test_verdict_under_the_rewards_scorer_reads_that_judge():
    args = _verdict_args()
    ours = _curve([0.30, 0.30, 0.30, 0.30, 0.30], [0, 2, 4, 6, 8])
    other = _curve([0.30, 0.30, 0.30, 0.30, 0.30], [0, 2, 4, 6, 8])
    for p, level in zip(ours, [0.15, 0.12, 0.10, 0.09, 0.09]):
        p["reward"] = (level, level, level)
    for p, level in zip(other, [0.15, 0.14, 0.13, 0.12, 0.11]):
        p["reward"] = (level, level, level)
    (line,) = verdict(args, {"ours_ppo": ours, "trl_grpo": other}, "reward")
    assert "best 0.1100 under offline at 8.0 min" in line and "ours reaches 0.1000 at 4.0 min" in line
    assert "0.50×" in line and line.endswith("met") and "NOT" not in line


def test_verdict_ignores_the_other_trainers_models_that_lost_fluency():
    args = _verdict_args()
    other = _curve([0.30, 0.25, 0.20, 0.20, 0.20], [0, 2, 4, 6, 8])
    for p, change in zip(other, [0.0, 0.05, 0.30, 0.30, 0.30]):
        p["perplexity_change"] = change  # only its 2-minute model (0.25) is still fluent
    lines = {"ours_ppo": _curve([0.30, 0.28, 0.26, 0.25, 0.24], [0, 2, 4, 6, 8]), "trl011_ppo": other}
    (line,) = verdict(args, lines)
    assert "best 0.2500 under minilm_davidson at 2.0 min" in line and "ours reaches 0.2500 at 6.0 min" in line
    assert "3.00×" in line and line.endswith("NOT met")
    other[1]["distinct_2_change"] = -0.3  # collapsed into repetition, at a perplexity that looks fine
    (line,) = verdict(args, lines)
    assert "no model within +10% perplexity and -0.02 distinct-2" in line


def test_trainer_flags_give_one_trainer_its_own_hyper_parameters():
    parser = argparse.ArgumentParser()
    ours, gd = "ours_ppo=--ppo.learning_rate 3e-4 --ppo.ppo_epochs 4", "gd=--optim.learning_rate 2e-4"
    assert parse_trainer_flags(parser, [ours, gd]) == {
        "ours_ppo": ["--ppo.learning_rate", "3e-4", "--ppo.ppo_epochs", "4"], "gd": ["--optim.learning_rate", "2e-4"]}
    for bad in ("ours_ppo", "trl011_ppo=--ppo.learning_rate 3e-4", "nobody=--x 1"):
        with pytest.raises(SystemExit):  # TRL 0.11.4's worker takes no run-config flags; a trainer must be named
            parse_trainer_flags(parser, [bad])


def test_gd_trainer_refuses_a_config_whose_held_out_prompts_it_could_train_on():
    check_gd_split(train_config(str(REPO / "configs" / "offline_default.yaml")),
                   str(REPO / "configs" / "detox_gradient_difference.yaml"))
    other = train_config(str(REPO / "configs" / "offline_default.yaml"))
    other.data.heldout_fraction = 0.5
    with pytest.raises(ValueError, match="splits its prompts otherwise"):
        check_gd_split(other, str(REPO / "configs" / "detox_gradient_difference.yaml"))


@pytest.mark.usefixtures("smollm2_path")
def test_gd_trainer_saves_each_quarter_of_its_budget_on_smollm2(tmp_path):
    """The loss-based route under the benchmark's clock, on the real model and the shipped labelled continuations."""
    run_dir = tmp_path / "gd"
    timed_train.main(["--trainer", "gd", "--budget_minutes", str(8 / 60), "--seed", "0", "--threads", "2",
                      "--run_dir", str(run_dir)])
    rows = [json.loads(line) for line in (run_dir / "checkpoints.jsonl").read_text().splitlines()]
    assert [r["part"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["minutes"] * 60 >= 8 and rows[-1]["completions"] == 8 * rows[-1]["steps"]
    steps = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == rows[-1]["steps"] and all(s["retain/nll"] > 0 for s in steps)
    model = load_causal_lm(rows[-1]["path"])  # an adapter naming its base by Hub id, loadable offline
    assert model.config.model_type == "llama"


@pytest.mark.usefixtures("smollm2_path")
def test_trl011_worker_scores_the_offline_defaults_reward_as_ours_does():
    """TRL 0.11.4's side of a race on configs/offline_default.yaml gets the same MiniLM classifier, label indices and
    scoring rule as our reward: its scorer, run here, gives our reward's values on real completions."""
    args = Namespace(config="configs/offline_default.yaml", cfg=train_config(str(REPO / "configs" /
                                                                               "offline_default.yaml")))
    flags = trl011_reward_flags(args)
    ours = build_reward(args.cfg.rewards[0])
    assert flags["classifier_dir"] == ours.model_path and (flags["nontoxic_index"], flags["toxic_index"]) == (0, 1)
    theirs = ClassifierReward(flags["classifier_dir"], flags["nontoxic_index"], flags["toxic_index"],
                              load_toxicity_module(flags["reward_file"]), batch_size=5)
    tokenizer = load_tokenizer(args.cfg.model.name_or_path)
    records = [r for source in ("builtin:rtp_toxic_continuations", "builtin:rtp_clean_continuations")
               for r in continuation_records(source, tokenizer)[:6]]
    prompts, texts = [r["text"] for r in records], [r["completion"] for r in records]
    assert theirs(prompts, texts) == pytest.approx(ours(prompts, texts), abs=1e-4)

    args.cfg.rewards[0].options["score_prompt"] = True  # the worker scores completions alone
    with pytest.raises(ValueError, match="completion alone"):
        trl011_reward_flags(args)


def _saved_seed(path: Path, seed: int, levels: dict[str, list[float]], **settings_change) -> Path:
    """A summary.json as the benchmark writes it for one seed: its runs, their scored rows and its settings."""
    args = Namespace(budget_minutes=12.0, threads=2, config=str(REPO / "configs" / "offline_default.yaml"),
                     num_generations=4, num_prompts=200, samples_per_prompt=2, reward_judge="minilm_rtp",
                     independent_judge="offline", trainer_flags={})
    runs, rows = [], {"base": _row(0.15)}
    for trainer, values in levels.items():
        points = [{"part": k, "minutes": 3.0 * k + 0.1 * seed, "completions": 16 * k, "steps": k} for k in range(1, 5)]
        runs.append({"trainer": trainer, "seed": seed, "checkpoints": points, "setup_seconds": 9.0,
                     "wall_seconds": 800.0})
        rows |= {f"{trainer}-s{seed}-p{k}": _row(v) for k, v in zip(range(1, 5), values)}
    path.write_text(json.dumps({"runs": runs, "rows": rows, "settings": settings(args) | settings_change}))
    return path


def _row(level: float) -> dict:
    return {"offline/mean_toxicity": level, "offline/mean_toxicity_ci_low": level - 0.02,
            "offline/mean_toxicity_ci_high": level + 0.02, "minilm_rtp/mean_toxicity": 2 * level,
            "minilm_rtp/mean_toxicity_ci_low": 2 * level - 0.02, "minilm_rtp/mean_toxicity_ci_high": 2 * level + 0.02,
            "perplexity": 40.0, "distinct_2": 0.9}


def test_seeds_measured_apart_combine_from_their_summaries(tmp_path):
    """Seeds run in different sessions (their models gone) make one table: mean and t-interval over seeds."""
    flags = ["--config", str(REPO / "configs" / "offline_default.yaml"), "--trainers", "ours_ppo", "trl_grpo",
             "--budget_minutes", "12",
             "--threads", "2", "--reward_judge", "minilm_rtp", "--independent_judge", "offline"]
    first = _saved_seed(tmp_path / "s0.json", 0, {"ours_ppo": [0.14, 0.12, 0.11, 0.12],
                                                  "trl_grpo": [0.15, 0.14, 0.13, 0.14]})
    second = _saved_seed(tmp_path / "s1.json", 1, {"ours_ppo": [0.12, 0.10, 0.11, 0.12],
                                                   "trl_grpo": [0.15, 0.12, 0.13, 0.12]})
    out = tmp_path / "combined"
    detox_per_minute.main([*flags, "--summaries", str(first), str(second), "--output_dir", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    part2 = summary["curves"]["ours_ppo"][2]
    assert part2["independent"] == pytest.approx(list(t_interval([0.12, 0.10])))
    assert part2["minutes"] == pytest.approx(6.05) and part2["reward"][0] == pytest.approx(0.22)
    assert part2["independent_range"] == pytest.approx((0.10, 0.12))  # the picture's band: lowest to highest seed
    assert "seeds [0, 1]" in (out / "table.md").read_text() and (out / "detox_per_minute.png").is_file()
    # the combined summary combines again, and keeps only the rows its runs use
    assert set(summary["rows"]) == {"base"} | {f"{t}-s{s}-p{k}" for t in ("ours_ppo", "trl_grpo") for s in (0, 1)
                                               for k in range(1, 5)}

    with pytest.raises(ValueError, match="more than one file"):
        detox_per_minute.main([*flags, "--summaries", str(first), str(first), "--output_dir", str(out)])
    other = _saved_seed(tmp_path / "s2.json", 2, {"ours_ppo": [0.1] * 4, "trl_grpo": [0.1] * 4}, threads=1)
    with pytest.raises(ValueError, match=r"other settings .*'threads': \(1, 2\)"):
        detox_per_minute.main([*flags, "--summaries", str(first), str(other), "--output_dir", str(out)])
    lone = _saved_seed(tmp_path / "s3.json", 3, {"ours_ppo": [0.1] * 4})
    with pytest.raises(ValueError, match="every trainer needs every seed"):
        detox_per_minute.main([*flags, "--summaries", str(first), str(lone), "--output_dir", str(out)])
