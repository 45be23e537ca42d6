"""benchmarks/forget_gap.py: the play's characters get the right class and speech set, tokens take their first
visible character's labels, and the gap shares are computed as defined."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.forget_gap import CLASSES, SPEECH_SETS, char_labels, gap_shares, retain_char_labels, token_labels
from detox.recipes.forget_text import Speech

TRAINED = Speech("ROMEO", 1, ["But soft, what light through yonder window breaks?"])
HELD_OUT = Speech("NURSE", 4, ["Romeo, come hither to Verona."])


@pytest.fixture
def recipe(tmp_path):
    (tmp_path / "play.txt").write_text("\n".join(s.text for s in (TRAINED, HELD_OUT)), encoding="utf-8")
    (tmp_path / "forget.txt").write_text(TRAINED.text, encoding="utf-8")
    (tmp_path / "anchors.json").write_text(json.dumps({"Romeo": "the young man", "Verona": "the city"}))
    return tmp_path


def test_characters_are_classed_by_header_anchor_term_and_speech(recipe):
    play = (recipe / "play.txt").read_text()
    cls, speech_set = char_labels(play, recipe)
    label = {i: c for i, c in enumerate(CLASSES)}
    assert {label[c] for c in cls[: len("ROMEO:\n")]} == {"speaker header"}  # a name in a header is a header
    romeo = play.index("Romeo,")
    assert {label[c] for c in cls[romeo : romeo + 5]} == {"anchor term"}
    assert label[cls[romeo + 5]] == "other" and label[cls[play.index("window")]] == "other"
    verona = play.index("Verona")
    assert {label[c] for c in cls[verona : verona + 6]} == {"anchor term"}
    assert label[cls[play.index("breaks?") + len("breaks?")]] == "line break"
    assert label[cls[play.index("NURSE:") - 1]] == "blank line"  # between two speeches: no fine-tuning text has it
    nurse = play.index("NURSE:")
    assert {SPEECH_SETS[s] for s in speech_set[:nurse]} == {"trained on"}  # the blank line goes with the speech before
    assert {SPEECH_SETS[s] for s in speech_set[nurse:]} == {"held out"}


def test_a_token_takes_the_labels_of_its_first_visible_character(recipe, smollm2_path):
    from detox.models import load_tokenizer

    tokenizer = load_tokenizer(smollm2_path)
    play = (recipe / "play.txt").read_text()
    passage = play[play.index("NURSE:"):]
    ids, labels = token_labels(tokenizer, play, [passage], *char_labels(play, recipe))
    pieces = [tokenizer.decode([t]) for t in ids[0]]
    assert "".join(pieces) == passage
    classes = [CLASSES[c] for c in labels[0][:, 0]]
    romeo = pieces.index("\n", pieces.index(":")) + 1  # the header ends with its line break
    assert set(classes[:romeo]) == {"speaker header"}
    assert "".join(pieces[romeo : romeo + 2]) == "Romeo" and set(classes[romeo : romeo + 2]) == {"anchor term"}
    verona = [i for i, p in enumerate(pieces) if "Ver" in p][0]  # " Verona": its space does not make it "other"
    assert pieces[verona].startswith(" ") and classes[verona] == "anchor term"
    assert classes[pieces.index(" hither")] == "other"
    assert set(labels[0][:, 1]) == {SPEECH_SETS.index("held out")}


def test_gap_shares_are_the_mean_nll_move_over_the_gap():
    counts = np.array([[10.0], [30.0]])  # two passages, one group
    target = np.array([[20.0], [60.0]])  # 2 nats per token
    retain = np.array([[30.0], [90.0]])  # 3 nats per token
    halfway = np.array([[25.0], [75.0]])  # 2.5 on every passage: the interval collapses onto 0.5
    uneven = np.array([[30.0], [60.0]])  # the whole gap on the first passage only: 10 of 40 extra nats
    mean, shares = gap_shares({"target": target, "retain": retain, "halfway": halfway, "uneven": uneven}, counts,
                              ["halfway", "uneven"], samples=400, seed=0)
    assert mean["target"][0, 0] == pytest.approx(2.0) and mean["retain"][0, 0] == pytest.approx(3.0)
    assert shares["halfway"]["share"][0] == pytest.approx(0.5)
    assert shares["halfway"]["low"][0] == pytest.approx(0.5) and shares["halfway"]["high"][0] == pytest.approx(0.5)
    assert shares["uneven"]["share"][0] == pytest.approx(0.25)  # (90 / 40 - 2) / 1
    assert shares["uneven"]["low"][0] < 0.25 < shares["uneven"]["high"][0]


def test_the_retain_texts_speaker_headers_are_their_own_class():
    text = "\n".join(s.text for s in (Speech("GLOUCESTER", 1, ["Now is the winter", "of our discontent"]),
                                     Speech("ANNE", 5, ["Set down, set down your honourable load"])))
    cls, _ = retain_char_labels(text)
    headers = "".join(c for c, k in zip(text, cls) if CLASSES[k] == "speaker header")
    assert headers == "GLOUCESTER:\nANNE:\n"
    assert CLASSES[cls[text.index("winter")]] == "other" and CLASSES[cls[text.index("load")]] == "other"
