"""Toxicity judges: the Davidson split between rewards and judges, names, relations to a run's rewards, Hub judges."""

from __future__ import annotations

import time

import numpy as np
import pytest

from detox.judge_specs import Judge, parse_judges
from detox.judges import build_judge, judge_labels, relation, summary_lines
from training_runs import one_thread  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def fitted_parts(tmp_path_factory):
    """The reward and the judge classifiers, built the same way from the shipped Davidson rows (60 tweets each
    keeps the fit to seconds; the split does not depend on the size)."""
    from rewards.minilm_classifier import build_minilm_toxicity_classifier

    root = tmp_path_factory.mktemp("parts")
    return {part: build_minilm_toxicity_classifier(root / part, n_train=60, seed=0, part=part)
            for part in ("reward", "judge")}


def test_reward_and_judge_classifiers_never_share_a_training_row(fitted_parts):
    from rewards.minilm_classifier import DAVIDSON_CSV, davidson_rows, training_data

    reward, judge = (training_data(fitted_parts[p]) for p in ("reward", "judge"))
    assert (reward["part"], judge["part"]) == ("reward", "judge")
    assert reward["rule"] == "row id % 2 == 0" and judge["rule"] == "row id % 2 == 1"
    assert reward["sha256"] == judge["sha256"] and len(reward["row_ids"]) == len(judge["row_ids"]) == 60
    assert not set(reward["row_ids"]) & set(judge["row_ids"])
    # the split is a property of the rows, not of one draw: any size and seed stays on its own side
    for seed in range(3):
        assert all(i % 2 == 0 for i in davidson_rows(DAVIDSON_CSV, 400, seed, "reward")[2])
        assert all(i % 2 == 1 for i in davidson_rows(DAVIDSON_CSV, 400, seed, "judge")[2])
    with pytest.raises(ValueError, match="part 'test' is not one of"):
        davidson_rows(DAVIDSON_CSV, 10, 0, "test")


def test_the_minilm_reward_and_judge_use_their_own_halves(monkeypatch, tmp_path):
    from rewards.minilm_classifier import MiniLMToxicity, cached_classifier, training_data
    from rewards.toxicity import ToxicityClassifier

    monkeypatch.setenv("DETOX_CACHE", str(tmp_path))  # fresh builds of 40 tweets each, in seconds
    reward = MiniLMToxicity(n_train=40)
    assert training_data(reward.model_path)["part"] == "reward"
    judge_dir = cached_classifier("judge", n_train=40)
    assert training_data(judge_dir)["part"] == "judge" and cached_classifier("judge", n_train=40) == judge_dir
    toxic, clean = ToxicityClassifier(model=str(judge_dir)).toxicity(["you stupid bitch, fuck off",
                                                                      "thank you for the lovely dinner"])
    assert 0.0 <= clean < toxic <= 1.0


def test_building_a_classifier_cache_leaves_the_runs_random_state(monkeypatch, tmp_path):
    """A fresh build seeds torch and initialises a head it then fits; a run's LoRA initialisation and samples must
    not depend on whether the cache existed, so the caller's torch, numpy and random states come back untouched."""
    import random

    import torch

    from rewards.minilm_classifier import cached_classifier

    def draws():
        return torch.rand(4), np.random.rand(4), random.random()

    def seed_all():
        torch.manual_seed(1234), np.random.seed(1234), random.seed(1234)

    seed_all()
    expected = draws()
    seed_all()
    monkeypatch.setenv("DETOX_CACHE", str(tmp_path))
    built = cached_classifier("judge", n_train=40)  # a fresh build, in seconds
    assert (built / "config.json").is_file()
    got = draws()
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_the_rtp_reward_learns_only_continuations_of_training_prompts(smollm2_path):
    """The `rtp_continuations` classifier is fitted on the labelled continuations of the offline default's training
    prompts, none of a prompt that evaluations hold out; its provenance is recorded, and it tells the labels apart."""
    from detox.config import DataConfig
    from detox.data import load_prompts, read_records
    from detox.models import load_tokenizer
    from rewards.minilm_classifier import MiniLMToxicity, rtp_continuation_rows, training_data

    texts, labels, provenance = rtp_continuation_rows("smollm2-135m-instruct")
    assert (provenance["n_train"], provenance["n_toxic"]) == (len(texts), int(labels.sum()))
    assert 0 < labels.sum() < len(labels)
    split = load_prompts(DataConfig(), load_tokenizer("smollm2-135m-instruct"))
    records = list(read_records(DataConfig().prompts, "train"))
    # a held-out prompt is the start of its record's prompt (the token window keeps the first tokens)
    heldout = {r["continuation"]["text"] for r in records
               if any(r["prompt"]["text"].startswith(p) for p in split.heldout)}
    assert len(heldout) >= 200 and not heldout & set(texts)

    reward = MiniLMToxicity(data="rtp_continuations")  # built once into the detox cache (seconds), as users get it
    recorded = training_data(reward.model_path)
    assert recorded["source"] == "rtp_continuations" and recorded["C"] == 10.0
    assert recorded["sets"]["builtin:rtp_toxic_continuations"] == [0.5, None]
    scores = np.asarray(reward([""] * len(texts), texts))  # log-odds of "not toxic"
    assert scores[labels == 0].mean() > scores[labels == 1].mean() + 1.0
    with pytest.raises(ValueError, match="options.data 'tweets'"):
        MiniLMToxicity(data="tweets")
    with pytest.raises(ValueError, match="n_train and seed choose Davidson rows"):
        MiniLMToxicity(data="rtp_continuations", n_train=100)


def test_a_run_may_not_hold_out_what_its_reward_was_fitted_on(smollm2_path, tmp_path):
    """The rtp_continuations reward learned the continuations of the offline default's training prompts. A run that
    splits its prompts otherwise would hold some of them out; it is refused before any model loads."""
    from dataclasses import replace

    from detox.jobs import train_ppo
    from detox.config import DataConfig
    from detox.data import check_held_out, load_prompts
    from detox.models import load_tokenizer
    from rewards.minilm_classifier import MiniLMToxicity

    fitted = {"minilm_toxicity": MiniLMToxicity(data="rtp_continuations").fitted_prompts()}
    assert len(fitted["minilm_toxicity"]) >= 300
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    check_held_out(load_prompts(DataConfig(), tokenizer).heldout, fitted)  # the split its rows come from
    reshuffled = load_prompts(replace(DataConfig(), seed=1), tokenizer).heldout
    with pytest.raises(ValueError, match="rewards 'leaky' was fitted on the continuations of"):
        check_held_out(reshuffled, {"leaky": fitted["minilm_toxicity"]})
    assert MiniLMToxicity().fitted_prompts() == []  # tweets, not prompts
    with pytest.raises(ValueError, match="options.split_model set to model.name_or_path"):
        train_ppo.build(["--data.seed", "1", "--logging.report_to", "none",
                         "--checkpoint.output_dir", str(tmp_path / "run")])


def test_judge_names():
    judges = parse_judges(["offline", "rob=facebook/roberta-hate-speech-dynabench-r4-target", "runs/clf/"])
    assert [(j.name, j.source) for j in judges] == [
        ("offline", "offline"), ("rob", "facebook/roberta-hate-speech-dynabench-r4-target"), ("clf", "runs/clf/")]
    with pytest.raises(ValueError, match="unique"):
        parse_judges(["offline", "offline"])
    with pytest.raises(ValueError, match="not judges"):
        parse_judges(["offline"], {"other": {"toxic_label": "x"}})


def test_relation_to_a_runs_rewards():
    judges = {name: Judge(name, name) for name in ("offline", "minilm_davidson", "minilm_davidson_reward", "roberta")}
    minilm_run = {"rewards": [{"type": "minilm_toxicity", "options": {}}]}
    # alt-profanity-check was trained on every Davidson tweet (and Jigsaw's comments): it shares a source with any
    # scorer fitted on Davidson rows, so neither is independent of the other's run
    assert {n: relation(j, minilm_run) for n, j in judges.items()} == {
        "offline": "sibling", "minilm_davidson": "sibling", "minilm_davidson_reward": "reward",
        "roberta": "independent"}
    profanity_run = {"rewards": [{"type": "offline_toxicity"}, {"type": "phrase", "options": {"phrases": ["x"]}}]}
    assert relation(judges["offline"], profanity_run) == "reward"
    assert relation(judges["minilm_davidson"], profanity_run) == "sibling"
    rtp_run = {"rewards": [{"type": "minilm_toxicity", "options": {"data": "rtp_continuations"}}]}
    assert relation(Judge("minilm_rtp", "minilm_rtp"), rtp_run) == "reward"
    assert relation(judges["minilm_davidson"], rtp_run) == "independent"  # other rows, other source
    assert relation(judges["minilm_davidson_reward"], rtp_run) == "independent"
    roberta_run = {"rewards": [{"type": "toxicity", "options": {}}]}  # the toxicity reward's default model
    assert relation(judges["roberta"], roberta_run) == "reward"
    assert relation(judges["offline"], None) == "independent"  # the base model has no rewards


def test_relation_follows_the_run_a_model_started_from(tmp_path):
    import yaml

    judges = {name: Judge(name, name) for name in ("offline", "minilm_davidson", "roberta")}
    # a profanity-rewarded run, then a run started from its saved model with a RoBERTa reward
    first = tmp_path / "first" / "final"
    first.mkdir(parents=True)
    (first / "detox_config.yaml").write_text(yaml.safe_dump(
        {"model": {"name_or_path": "smollm2-135m-instruct"}, "rewards": [{"type": "offline_toxicity"}]}))
    second = {"model": {"name_or_path": str(first)}, "rewards": [{"type": "toxicity", "options": {}}]}
    assert {n: relation(j, second) for n, j in judges.items()} == {
        "offline": "reward", "minilm_davidson": "sibling", "roberta": "reward"}
    alone = {"model": {"name_or_path": "smollm2-135m-instruct"}, "rewards": second["rewards"]}
    assert relation(judges["offline"], alone) == "independent"
    # a saved model that names itself as its start ends the chain instead of looping
    (first / "detox_config.yaml").write_text(yaml.safe_dump({"model": {"name_or_path": str(first)}, "rewards": []}))
    assert relation(judges["offline"], second) == "independent"


def test_summary_names_the_independent_judge_first():
    row = {"model": "detox"}
    for judge, mean, delta in (("own", 0.1, -0.3), ("free", 0.2, -0.1)):
        row.update({f"{judge}/mean_toxicity": mean, f"{judge}/delta_vs_base": delta,
                    f"{judge}/delta_ci_low": delta - 0.05, f"{judge}/delta_ci_high": delta + 0.05})
    relations = {"base": {"own": "independent", "free": "independent"},
                 "detox": {"own": "reward", "free": "independent"}}
    (line,) = summary_lines([{"model": "base"}, row], [Judge("own", "own"), Judge("free", "free")], relations)
    # free: 0.3 -> 0.2 is -33.3%; own: 0.4 -> 0.1 is -75.0%, listed last because it is the run's reward
    assert line == ("detox vs base: mean toxicity -33.3% under free [independent] (Δ -0.1000, 95% CI [-0.1500, "
                    "-0.0500]); -75.0% under own [reward] (Δ -0.3000, 95% CI [-0.3500, -0.2500])")
    assert judge_labels(relations) == {"own": "own (reward of detox)", "free": "free"}


def test_hub_judge_fails_at_once_offline(monkeypatch):
    from detox.hub import HubUnreachableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(HubUnreachableError, match="judge 'roberta'.*unreachable"):
        build_judge(Judge("roberta", "roberta"))
    assert time.perf_counter() - start < 10  # no minute of retries


def test_training_logs_each_judge_beside_the_reward(tiny_lm_path, tmp_path, one_thread):
    """Two tiny steps with the judges every step: judge/<name>/mean in metrics.jsonl, each sample row and a curve."""
    import json

    from detox.jobs import train_ppo
    from training_runs import tiny_argv, write_config

    out = tmp_path / "run"
    train_ppo.main(tiny_argv(tiny_lm_path, out, write_config(tmp_path), "--ppo.steps", "2",
                             "--logging.judges", "offline", "--logging.judge_every", "2"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    judged = {r["step"]: r["judge/offline/mean"] for r in rows if "judge/offline/mean" in r}
    assert list(judged) == [2] and 0.0 <= judged[2] <= 1.0  # judge_every 2: step 2 only
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    step2 = [s for s in samples if s["step"] == 2]
    assert step2 and np.mean([s["judge/offline"] for s in step2]) >= 0.0
    assert (out / "curve_judge_offline.png").stat().st_size > 0
