"""Probes on a tiny random Llama: recorded probabilities are the model's softmax, and the pictures show them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForCausalLM, AutoTokenizer

from detox.config import ProbeConfig
from detox.probes import TOP_K_DEFAULT, ProbeRecorder, draw_change, draw_heatmap, heatmap_array, probe_images

GAMMA = 0.5
WATCHED = [" nine", "-nine", " five"]
# Logit boosts of the watched tokens before each record (they add up: logits +0, +[12, 9, 0], +[11, 12, 10]).
# A random 16-wide model spreads its mass over ~49k tokens (p ~ 2e-5 each: black cells), so the boosts give each
# step a different, visible, ordered distribution.
BOOSTS = [[0.0, 0.0, 0.0], [12.0, 9.0, 0.0], [-1.0, 3.0, 10.0]]


@pytest.fixture
def tiny(tiny_lm_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_path).eval()
    return model, tokenizer


def _alone(model, tokenizer, context: str) -> torch.Tensor:
    """Next-token distribution after `context` fed alone (no padding, no batch): the reference for record()."""
    ids = tokenizer(context, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return torch.softmax(model(ids).logits[0, -1].double(), dim=-1)


@torch.no_grad()
def _boost(model, tokenizer, context: str, token_ids: list[int], boosts: list[float]) -> None:
    """Raise logit(token | context) by each boost, by moving the token's (tied) output embedding along the final
    hidden state h: logit = h . w, so w += b * h / |h|^2 adds exactly b to it."""
    ids = tokenizer(context, add_special_tokens=False, return_tensors="pt")["input_ids"]
    h = model(ids, output_hidden_states=True).hidden_states[-1][0, -1]
    weight = model.get_output_embeddings().weight
    for token_id, b in zip(token_ids, boosts):
        weight[token_id] += b * h / h.dot(h)


def _recorded(tiny):
    model, tokenizer = tiny
    recorder = ProbeRecorder(tokenizer, [ProbeConfig("sixty", WATCHED), ProbeConfig("fifty", [])])
    metrics = []
    for step, boosts in zip((0, 5, 10), BOOSTS):
        _boost(model, tokenizer, "sixty", recorder.token_ids[0], boosts)
        metrics.append(recorder.record(model, step))
        for i, context in enumerate(recorder.contexts):
            expected = _alone(model, tokenizer, context)[recorder.token_ids[i]]
            got = torch.tensor(recorder.history[i][-1], dtype=torch.float64)
            torch.testing.assert_close(got[:-1], expected, atol=1e-6, rtol=1e-4)  # batched + left-padded vs alone
            assert got[-1].item() == pytest.approx(1.0 - expected.sum().item(), abs=1e-6)  # "other"
    return recorder, metrics


def test_records_match_softmax_and_pictures_match_records(tiny, tmp_path):
    recorder, metrics = _recorded(tiny)
    tokenizer = tiny[1]
    # Watched strings are reduced to the first token that follows the context, leading space included.
    assert recorder.token_texts(0) == [tokenizer.decode([t]) for t in recorder.token_ids[0]]
    assert recorder.token_texts(0)[0] == " nine"
    assert len(recorder.token_ids[1]) == TOP_K_DEFAULT  # no tokens named: the top 10 at the first record, kept
    assert set(metrics[0]) >= {"probe/sixty/_nine", "probe/sixty/other", "probe/fifty/other"}
    probs = np.asarray(recorder.history[0])  # (3 steps, 3 tokens + other)
    assert probs[1, 0] > 0.5 and probs[2, 1] > probs[2, 0] > probs[2, 2] > 0.01  # the boosts spread the values

    written = recorder.save(tmp_path, GAMMA)
    assert [p.name for p in written] == ["probe_sixty.png", "probe_sixty.gif", "probe_sixty_change.png",
                                         "probe_fifty.png", "probe_fifty.gif", "probe_fifty_change.png",
                                         "probes.json"]  # fmt: skip

    # The PNG: each cell's centre pixel is heatmap_array's grey level, so brightness follows probability.
    labels = ['" nine"', '"-nine"', '" five"', "other"]
    figure = draw_heatmap(probs, recorder.steps, labels, GAMMA, 'next token after "sixty"')
    figure.canvas.draw()  # same function and inputs as save(): same layout, so the same cell positions
    box = figure.axes[0].get_window_extent()
    with Image.open(written[0]) as image:
        pixels = np.asarray(image.convert("RGB"))
    n_steps, n_tokens = probs.shape
    centres = [
        [pixels[round(pixels.shape[0] - (box.y1 - (i + 0.5) * box.height / n_steps)),
                round(box.x0 + (j + 0.5) * box.width / n_tokens)] for j in range(n_tokens)]
        for i in range(n_steps)
    ]  # fmt: skip
    centres = np.asarray(centres)  # (S, K, RGB); matplotlib's y axis points up, the PNG's rows go down
    assert (centres[..., 0] == centres[..., 2]).all()  # grey
    np.testing.assert_array_equal(centres[..., 0], heatmap_array(probs, GAMMA))
    order = np.argsort(probs, axis=None, kind="stable")
    assert (np.diff(centres[..., 0].ravel()[order].astype(int)) >= 0).all()

    with Image.open(written[1]) as gif:
        assert gif.n_frames == n_steps
    # The change picture: one line per watched token, its probability over its first value
    change = draw_change(probs[:, :-1], recorder.steps, labels[:-1], "change")
    lines = change.axes[0].get_lines()[: n_tokens - 1]
    for column, line in enumerate(lines):
        np.testing.assert_allclose(line.get_xdata(), recorder.steps)
        np.testing.assert_allclose(line.get_ydata(), probs[:, column] / probs[0, column])
    assert change.axes[0].get_yscale() == "log"
    with Image.open(written[2]) as image:
        assert image.size[0] > 100
    assert probe_images(written) == {
        "probe_sixty/heatmap": written[0],
        "probe_sixty/animation": written[1],
        "probe_sixty/change": written[2],
        "probe_fifty/heatmap": written[3],
        "probe_fifty/animation": written[4],
        "probe_fifty/change": written[5],
    }
    saved = json.loads(written[-1].read_text())
    assert saved["probes"][0]["steps"] == [0, 5, 10]
    np.testing.assert_allclose(saved["probes"][0]["probs"], probs)


def test_heatmap_array_is_rounded_gamma_grey():
    probs = np.array([[0.0, 0.0001, 0.01, 0.25], [0.5, 0.81, 0.99, 1.0]])
    grey = heatmap_array(probs, GAMMA)
    # round(255 * sqrt(p)): sqrt(0.01) = 0.1 -> 26 (visible, where linear grey would be 3); sqrt(0.25) -> 128.
    np.testing.assert_array_equal(grey, [[0, 3, 26, 128], [180, 230, 254, 255]])
    assert grey.dtype == np.uint8
    ramp = heatmap_array(np.linspace(0, 1, 101)[None, :], 0.3)
    assert (np.diff(ramp[0].astype(int)) >= 0).all() and ramp[0, 0] == 0 and ramp[0, -1] == 255
    with pytest.raises(ValueError, match="probe_gamma"):
        heatmap_array(probs, 0.0)


def test_bad_probe_configs_are_named(tiny):
    tokenizer = tiny[1]
    with pytest.raises(ValueError, match=r"probes\[0\]\.tokens: '' tokenises to nothing"):
        ProbeRecorder(tokenizer, [ProbeConfig("sixty", [""])])
    with pytest.raises(ValueError, match=r"probes\[0\]\.context"):
        ProbeRecorder(tokenizer, [ProbeConfig("", [" nine"])])
    with pytest.raises(ValueError, match="same token"):
        ProbeRecorder(tokenizer, [ProbeConfig("sixty", [" nine", " nine!"])])


def test_no_probes_record_nothing(tiny, tmp_path):
    model, tokenizer = tiny
    recorder = ProbeRecorder(tokenizer, [])
    assert recorder.record(model, 0) == {}  # the trainer calls record every logging step, probes or not
    assert recorder.save(tmp_path, GAMMA) == [] and not any(tmp_path.iterdir())
