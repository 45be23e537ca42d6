"""Labelled sources: the reward/judge split of every source, the shipped copies against the originals, bad files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from detox.judge_specs import SOURCE_JUDGES
from rewards.label_sources import FITTABLE, SOURCES, fitting_rows, load_source


@pytest.mark.parametrize("name", FITTABLE)
def test_reward_and_judge_parts_share_no_row_text_or_group(name):
    frame = load_source(name)
    assert frame["row_id"].is_unique
    reward, judge = frame[frame["part"] == "reward"], frame[frame["part"] == "judge"]
    assert len(reward) and len(judge) and len(reward) + len(judge) == len(frame)
    # rows that belong together (a post's sentences, a prompt and its continuation) fall on one side
    assert not set(reward["split"]) & set(judge["split"])
    assert not set(reward["text"]) & set(judge["text"])
    # any draw of any size stays on its side: fitting rows of a part are labelled rows of that part only
    for seed in range(3):
        rows = fitting_rows(frame, "judge", 300, seed)
        assert set(rows["row_id"]) <= set(judge["row_id"]) and (rows["label"] >= 0).all()


def test_hatecheck_is_a_test_suite_only():
    frame = load_source("hatecheck")
    assert set(frame["part"]) == {"test"} and frame["functionality"].nunique() == 29
    assert "hatecheck" not in FITTABLE
    with pytest.raises(ValueError, match="part 'test' is not one of"):
        fitting_rows(frame, "test", 10, 0)


def test_labels_follow_each_sources_rule():
    toxigen = load_source("toxigen")
    assert (toxigen.loc[toxigen["score"] >= 4, "label"] == 1).all()
    assert (toxigen.loc[toxigen["score"] <= 2, "label"] == 0).all()
    assert (toxigen.loc[(toxigen["score"] > 2) & (toxigen["score"] < 4), "label"] == -1).all()
    rtp = load_source("rtp")
    assert (rtp.loc[rtp["score"] >= 0.5, "label"] == 1).all() and (rtp.loc[rtp["score"] < 0.1, "label"] == 0).all()
    assert rtp.loc[rtp["row_id"] == "rtp_challenging:0:prompt", "text"].item().startswith("People think that we")


def test_shipped_copies_hold_the_original_rows(shared_data):
    """The compressed assets keep each source row's text and label as the original file has them."""
    original = pd.read_csv(shared_data / "toxigen" / "annotated.csv")
    shipped = load_source("toxigen")
    at = shipped["row_id"].astype(int).to_numpy()
    assert (original["text"].to_numpy()[at] == shipped["text"].to_numpy()).all()
    assert np.array_equal(original["toxicity_human"].to_numpy()[at], shipped["score"].to_numpy())
    storm = pd.read_csv(shared_data / "stormfront" / "sentences.csv").set_index("file_id")
    shipped = load_source("stormfront")
    labels = storm.loc[shipped["row_id"], "label"].to_numpy()
    assert np.array_equal((labels == "hate").astype(int), shipped["label"].to_numpy())
    hatecheck = pd.read_csv(shared_data / "hatecheck" / "test_suite_cases.csv")
    assert len(load_source("hatecheck")) == len(hatecheck)


def test_a_missing_column_names_the_file_and_the_columns(tmp_path):
    bad = tmp_path / "annotated.csv"
    pd.DataFrame({"id": [0], "text": ["x"]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"label source 'toxigen': file '.*annotated.csv' has no column "
                                         r"\['toxicity_human'\]; it needs the columns "
                                         r"\['id', 'text', 'toxicity_human'\]"):
        load_source("toxigen", bad)
    records = tmp_path / "prompts.jsonl"
    records.write_text(json.dumps({"prompt": {"text": "a", "toxicity": 0.2}, "continuation": {"text": "b"}}) + "\n")
    with pytest.raises(ValueError, match=r"file '.*prompts.jsonl' line 1 has no continuation.text or "
                                         r"continuation.toxicity; it needs the fields"):
        load_source("rtp", records)


def test_an_unknown_source_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown label source 'jigsaw'. Valid sources are: " +
                       str(sorted(SOURCES)).replace("[", r"\[").replace("]", r"\]")):
        load_source("jigsaw")


def test_rtp_reads_both_shipped_files_and_records_them():
    from rewards.label_sources import source_files

    assert [f.name for f in source_files("rtp")] == ["rtp_challenging.jsonl", "rtp_nontoxic.jsonl"]
    assert {row_id.split(":")[0] for row_id in load_source("rtp")["row_id"]} == {"rtp_challenging", "rtp_nontoxic"}


def test_every_fittable_source_has_its_judge():
    # the judge names live low (detox.judge_specs, read by the config before anything loads): they must follow the
    # sources a classifier can be fitted on
    singles = sorted(s for name, sources in SOURCE_JUDGES.items() if name != "judge_combined" for s in sources)
    assert singles == sorted(FITTABLE)
    assert set(SOURCE_JUDGES["judge_combined"]) <= set(FITTABLE)
