"""Source classifiers as judges and rewards: what they record, what they are validated on, how a judge relates to a
run's training data, the validity statistics and the HateCheck-style report."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from detox.judge_specs import BUILTIN_JUDGES
from detox.judges import Judge, relation, summary_lines
from detox.validity import auc_delong, floor_free_change, functionality_accuracy, load_ranking
from rewards.label_sources import load_source

TOXIC, CLEAN = "you stupid bitch, fuck off and die", "thank you for the lovely dinner, see you soon"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A judge fitted on 24 judge rows each of toxigen and stormfront (seconds; the bookkeeping does not depend on
    the size)."""
    from rewards.source_classifier import fit_classifier

    return fit_classifier(tmp_path_factory.mktemp("tiny") / "clf", ("toxigen", "stormfront"), "judge", n_train=24,
                          calibration="platt")


def test_a_classifier_records_its_rows_and_is_validated_only_on_others(tiny):
    from benchmarks.judge_features import evaluation_rows
    from benchmarks.judge_validity import FeatureJudge
    from rewards.source_classifier import SourceClassifier

    classifier = SourceClassifier(tiny)
    assert classifier.sources() == {"toxigen", "stormfront"}
    judge = FeatureJudge("tiny", classifier, {e["source"]: set(e["row_ids"]) | set(e["calibration_row_ids"])
                                              for e in classifier.config["training_data"]})
    for entry in classifier.config["training_data"]:
        frame = load_source(entry["source"])
        fitted = set(entry["row_ids"]) | set(entry["calibration_row_ids"])
        assert len(entry["row_ids"]) == 24 and len(entry["calibration_row_ids"]) > 0
        assert set(frame.loc[frame["row_id"].isin(fitted), "part"]) == {"judge"}
        assert not set(entry["row_ids"]) & set(entry["calibration_row_ids"])
        everything = np.arange(len(frame))  # even when asked to validate on every row, the fitted ones are left out
        validated = set(frame["row_id"].iloc[judge.unseen(entry["source"], frame, everything)])
        assert validated and not validated & fitted and len(validated) == len(frame) - len(fitted)
        assert len(evaluation_rows(frame, 100)) == 100


def test_the_judge_reads_toxic_above_clean_and_the_reward_pickles(tiny, monkeypatch, tmp_path):
    from rewards.source_classifier import SourceClassifier, SourceToxicity

    toxic, clean = SourceClassifier(tiny).toxicity([TOXIC, CLEAN])
    assert 0.0 <= clean < toxic <= 1.0
    monkeypatch.setenv("DETOX_CACHE", str(tmp_path))  # a fresh reward of 20 rows per source, in seconds
    reward = SourceToxicity(sources=["toxigen"], n_train=20)
    (entry,) = reward.classifier.config["training_data"]
    assert entry["part"] == "reward" and entry["split"] == "id (row of annotated.csv) % 2 == 0"
    log_odds = reward(["p", "p"], [TOXIC, CLEAN])
    again = pickle.loads(pickle.dumps(reward))
    assert again(["p", "p"], [TOXIC, CLEAN]) == pytest.approx(log_odds)
    p = reward.toxicity([TOXIC, CLEAN])  # log P(clean) - log P(toxic) = log((1 - p) / p)
    assert log_odds == pytest.approx(np.log((1 - p) / p).tolist(), rel=1e-5)
    assert reward.fitted_prompts() == []


def test_bad_source_options_name_the_valid_ones(monkeypatch, tmp_path):
    from rewards.source_classifier import SourceToxicity

    monkeypatch.setenv("DETOX_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match=r"sources \['hatecheck'\]: give one or more distinct sources from "
                                         r"\['davidson', 'toxigen', 'stormfront', 'rtp'\]"):
        SourceToxicity(sources=["hatecheck"])
    with pytest.raises(ValueError, match="output 'logit' is not one of"):
        SourceToxicity(output="logit")


def test_independence_is_decided_by_shared_data_sources(tiny):
    judges = {name: Judge(name, name) for name in ("offline", "minilm_davidson", "minilm_rtp", "judge_toxigen",
                                                   "judge_stormfront", "judge_davidson", "judge_rtp",
                                                   "judge_combined")}
    judges["tiny"] = Judge("tiny", str(tiny))  # a directory: its sources come from its own record

    def relations(config):
        return {name: relation(judge, config) for name, judge in judges.items()}

    storm = {"rewards": [{"type": "source_toxicity", "options": {"sources": ["stormfront"]}}]}
    assert relations(storm) == {
        "offline": "independent", "minilm_davidson": "independent", "minilm_rtp": "independent",
        "judge_toxigen": "independent", "judge_stormfront": "sibling", "judge_davidson": "independent",
        "judge_rtp": "independent", "judge_combined": "sibling", "tiny": "sibling"}
    # the reward's default sources are toxigen, stormfront and davidson; alt-profanity-check learned Davidson too
    combined = relations({"rewards": [{"type": "source_toxicity"}]})
    assert [n for n, r in combined.items() if r == "independent"] == ["minilm_rtp", "judge_rtp"]
    profanity = relations({"rewards": [{"type": "offline_toxicity"}]})
    assert profanity["offline"] == "reward" and profanity["judge_davidson"] == profanity["minilm_davidson"] == "sibling"
    assert profanity["judge_toxigen"] == profanity["tiny"] == "independent"
    # a loss-based run: its forget and retain sets are RealToxicityPrompts texts
    unlearn = relations({"data": {"forget": "builtin:rtp_toxic_continuations",
                                  "retain": "builtin:rtp_clean_continuations"}, "method": {"name": "npo"}})
    assert {n for n, r in unlearn.items() if r != "independent"} == {"minilm_rtp", "judge_rtp"}
    assert relations({"data": {"forget": "my_corpus.txt"}, "method": {}}) == relations(None)
    # a PPO run learns from its loss terms' corpora too, not only from its rewards
    phrases = {"rewards": [{"type": "phrase", "options": {"phrases": ["darn"]}}]}
    assert set(relations(phrases).values()) == {"independent"}
    for section in ("ptx", "forget_loss"):
        with_term = relations(phrases | {section: {"corpus": "builtin:rtp_clean_continuations"}})
        assert {n for n, r in with_term.items() if r != "independent"} == {"minilm_rtp", "judge_rtp"}
    assert set(relations(None).values()) == {"independent"}


def test_the_headline_is_the_most_valid_independent_judge(monkeypatch):
    import detox.judges

    monkeypatch.setattr(detox.judges, "load_ranking", lambda: {"weak": 0.6, "strong": 0.8, "own": 0.9})
    row, base_row = {"model": "detox"}, {"model": "base"}
    for judge, mean, delta in (("own", 0.1, -0.3), ("weak", 0.2, -0.1), ("strong", 0.3, -0.01)):
        row.update({f"{judge}/mean_toxicity": mean, f"{judge}/delta_vs_base": delta,
                    f"{judge}/delta_ci_low": delta - 0.05, f"{judge}/delta_ci_high": delta + 0.05,
                    f"{judge}/share_prompts_less_toxic": 0.5, f"{judge}/auc_base_vs_model": 0.5})
    relations = {"detox": {"own": "reward", "weak": "independent", "strong": "independent"}}
    judges = [Judge(n, n) for n in ("own", "weak", "strong")]
    (line,) = summary_lines([base_row, row], judges, relations)
    # strong moves least but agrees best with labels it never saw: it leads; the reward comes last whatever its AUC
    assert line.startswith("detox vs base: mean toxicity -3.2% under strong [independent] (unseen-source AUC 0.800; "
                           "Δ -0.0100, 95% CI [-0.0600, +0.0400]; less toxic on 50% of prompts, AUC base vs model "
                           "0.500)")
    assert line.index("under weak [independent]") < line.index("under own [reward]")


def test_validity_statistics_on_hand_made_scores():
    # perfectly separated: AUC 1 with no spread
    assert auc_delong(np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.2, 0.1])) == (1.0, 1.0, 1.0)
    # one positive below one negative out of 2 x 2 pairs: AUC 3/4
    assert auc_delong(np.array([1, 1, 0, 0]), np.array([0.9, 0.1, 0.2, 0.05]))[0] == pytest.approx(0.75)
    base, model = np.array([[0.9, 0.1], [0.5, 0.5]]), np.array([[0.2, 0.1], [0.6, 0.6]])
    change = floor_free_change(base, model)
    # prompt means 0.5 -> 0.15 (fell) and 0.5 -> 0.6 (rose): half the prompts; base above model in 8.5 of 16 pairs
    # (0.9 beats all 4, each 0.5 beats 0.2 and 0.1, 0.1 ties 0.1 for a half)
    assert change == {"share_prompts_less_toxic": 0.5, "auc_base_vs_model": pytest.approx(8.5 / 16)}


def test_a_hatecheck_report_of_a_tiny_classifier(tiny):
    """A HateCheck-style report per functionality: each figure is the share of that functionality's cases on the
    right side of 0.5, counted here case by case."""
    from rewards.source_classifier import SourceClassifier

    assert functionality_accuracy(np.array(["a", "a", "b"]), np.array([1, 0, 1]), np.array([0.9, 0.8, 0.2])) == {
        "a": (0.5, 2), "b": (0.0, 1)}
    cases = load_source("hatecheck")
    cases = cases[cases["functionality"].isin(["derog_neg_emote_h", "counter_quote_nh", "profanity_nh"])]
    probs = SourceClassifier(tiny).toxicity(cases["text"].tolist())
    report = functionality_accuracy(cases["functionality"].to_numpy(), cases["label"].to_numpy(), probs)
    assert sorted(report) == ["counter_quote_nh", "derog_neg_emote_h", "profanity_nh"]
    for name, (accuracy, n) in report.items():
        rows = (cases["functionality"] == name).to_numpy()
        right = sum(int(p >= 0.5) == label for p, label in zip(probs[rows], cases["label"].to_numpy()[rows]))
        assert n == rows.sum() and accuracy == pytest.approx(right / n)
    assert set(cases.loc[cases["functionality"] == "derog_neg_emote_h", "label"]) == {1}


def test_a_finetuned_classifier_reads_its_own_encoder(tmp_path):
    """head: finetune trains the encoder too and saves it beside the head; the wheel's encoder is left as it was.
    16 rows for one epoch: the bookkeeping, not the quality."""
    from rewards.source_classifier import MiniLMEncoder, SourceClassifier, fit_classifier

    out = fit_classifier(tmp_path / "tuned", ("toxigen",), "judge", n_train=16, head="finetune")
    tuned = SourceClassifier(out)
    assert tuned.config["head"] == "finetune" and (out / "encoder" / "config.json").is_file()
    assert not np.allclose(tuned.encoder.encode([CLEAN], "mean"), MiniLMEncoder().encode([CLEAN], "mean"))
    assert ((0 <= tuned.toxicity([TOXIC, CLEAN])) & (tuned.toxicity([TOXIC, CLEAN]) <= 1)).all()
    with pytest.raises(ValueError, match="head 'finetune' trains the encoder through mean pooling"):
        fit_classifier(tmp_path / "bad", ("toxigen",), "judge", n_train=16, pooling="pooler", head="finetune")


def test_the_shipped_validity_ranking_covers_every_offline_judge():
    ranking = load_ranking()
    assert set(BUILTIN_JUDGES) - {"roberta"} <= set(ranking)  # rerun benchmarks/judge_validity.py after adding one
    assert all(0.0 <= auc <= 1.0 for auc in ranking.values())


def test_the_two_source_preset_leaves_its_judges_independent():
    """configs/offline_sources.yaml rewards ToxiGen + Stormfront: the judges it logs share no source with it."""
    from pathlib import Path

    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "offline_sources.yaml").read_text())
    judges = config["logging"]["judges"]
    assert {name: relation(Judge(name, name), config) for name in judges} == dict.fromkeys(judges, "independent")
    assert relation(Judge("judge_combined", "judge_combined"), config) == "sibling"


def test_a_reward_fitted_on_rtp_rows_keeps_their_prompts_out_of_the_held_out_set(monkeypatch, tmp_path):
    from detox.data import check_held_out
    from rewards.source_classifier import SourceToxicity

    monkeypatch.setenv("DETOX_CACHE", str(tmp_path))
    reward = SourceToxicity(sources=["rtp"], n_train=10)  # 10 rows: which prompts, not how well
    (entry,) = reward.classifier.config["training_data"]
    prompts = reward.fitted_prompts()
    # a prompt and its continuation share their record's line, and reward rows have even lines
    lines = {int(row_id.split(":")[1]) for row_id in entry["row_ids"]}
    assert len(prompts) == len(lines) and all(line % 2 == 0 for line in lines)
    with pytest.raises(ValueError, match="rewards 'source_toxicity' was fitted on the continuations of 1 prompts"):
        check_held_out([prompts[0]], {"source_toxicity": prompts})
