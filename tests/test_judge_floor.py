"""benchmarks/judge_floor.py: its Perspective bins partition the scores, and on the real RealToxicityPrompts
continuations a real judge reads the clean bin lower than the toxic one."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.judge_floor import bin_masks, load_continuations, parse_starts
from detox.judge_specs import Judge
from detox.judges import build_judge


def test_bins_partition_scores_including_both_ends():
    scores = np.array([0.0, 0.05, 0.1, 0.29999, 0.3, 0.5, 0.99, 1.0])
    masks = bin_masks(scores)
    counts = np.sum([m for _, m in masks], axis=0)
    assert counts.tolist() == [1] * len(scores)  # every score in exactly one bin
    assert [int(m.sum()) for _, m in masks] == [2, 2, 1, 3]
    assert masks[-1][0].endswith("]") and masks[0][0].endswith(")")


def test_start_needs_a_judge_and_a_number():
    assert parse_starts(["offline=0.16"]) == {"offline": 0.16}
    for bad in (["offline"], ["offline=high"]):
        with pytest.raises(SystemExit, match="JUDGE=MEAN"):
            parse_starts(bad)


def test_offline_judge_reads_clean_human_text_below_toxic_text(shared_data):
    texts, perspective = load_continuations(shared_data)
    assert len(texts) > 1000 and perspective.min() >= 0 and perspective.max() <= 1
    scores = build_judge(Judge("offline", "offline")).toxicity(texts)
    masks = dict(bin_masks(perspective))
    clean, toxic = scores[masks["[0.0, 0.1)"]].mean(), scores[masks["[0.5, 1.0]"]].mean()
    assert clean < 0.1 < 0.5 < toxic
