"""Detoxification by a loss-based method on the shipped labelled data: the builtin continuation sets hold only
training prompts (so evaluate_toxicity.py's held-out prompts stay unseen), and the gradient-difference preset runs
on the real SmolLM2 and writes a model card that says what was run."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from training_runs import one_thread  # noqa: F401 (fixture)

from detox.config import DataConfig
from detox.data import ASSETS, continuation_records, load_prompts

REPO = ASSETS.parents[1]


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_path)


def test_continuation_sets_hold_only_training_prompts(smollm2_tokenizer):
    split = load_prompts(DataConfig(), smollm2_tokenizer)
    heldout = set(split.heldout)
    toxic = continuation_records("builtin:rtp_toxic_continuations", smollm2_tokenizer)
    clean = continuation_records("builtin:rtp_clean_continuations", smollm2_tokenizer)
    labels = {}
    for line in (ASSETS / "rtp_challenging.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        labels[(record["prompt"]["text"], record["continuation"]["text"])] = record["continuation"].get("toxicity")
    assert toxic and clean and not {r["text"] for r in toxic} & {r["text"] for r in clean}
    for rows, inside in ((toxic, lambda t: t >= 0.5), (clean, lambda t: t < 0.1)):
        for row in rows:
            assert inside(labels[(row["text"], row["completion"])])  # the continuation's own Perspective label
            ids = smollm2_tokenizer(row["text"], add_special_tokens=False)["input_ids"]
            windowed = smollm2_tokenizer.decode(ids[:15]) if len(ids) > 15 else row["text"]
            assert windowed in split.train and windowed not in heldout
    # every labelled continuation of a training prompt is used: none is lost on the way
    train = set(split.train) - heldout
    expected = 0
    for (text, _), toxicity in labels.items():
        ids = smollm2_tokenizer(text, add_special_tokens=False)["input_ids"]
        windowed = smollm2_tokenizer.decode(ids[:15]) if len(ids) > 15 else text
        expected += windowed in train and toxicity is not None and toxicity >= 0.5 and len(ids) >= 10
    assert len(toxic) == expected
    with pytest.raises(ValueError, match="unknown continuation set 'builtin:rtp_toxic'.*rtp_clean_continuations"):
        continuation_records("builtin:rtp_toxic", smollm2_tokenizer)


@pytest.mark.slow
def test_gradient_difference_preset_on_smollm2(tmp_path, one_thread):
    """Real path: the shipped preset, two steps, on SmolLM2 and the shipped continuations; final/ carries a card."""
    from detox.jobs.train_unlearn import build, run

    out = tmp_path / "gd"
    r = build(["--config", str(REPO / "configs" / "detox_gradient_difference.yaml"), "--optim.steps", "2",
               "--logging.report_to", "none", "--logging.sample_every", "2", "--logging.num_samples", "2",
               "--checkpoint.output_dir", str(out)])
    assert len(r.trainer.forget) == len(continuation_records("builtin:rtp_toxic_continuations", r.trainer.tokenizer))
    assert all(start > 0 for start in r.trainer.forget.starts)  # the prompt is context, never unlearned
    final = run(r)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [row for row in rows if "loss/total" in row]
    assert [row["step"] for row in trained] == [1, 2] and "retain/nll" in trained[0]
    assert any("judge/minilm_davidson/mean" in row for row in rows)
    card = (final / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct\n" in card and "- gradient_difference\n" in card
    assert "unlearned with gradient difference" in card and "`builtin:rtp_toxic_continuations`" in card
    assert "Liu, B." in card and "Gehman, S." in card and "[More Information Needed]" not in card
    assert yaml.safe_load((final / "detox_config.yaml").read_text())["method"]["name"] == "gradient_difference"
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # loads anywhere
    from detox.models import load_causal_lm

    merged = load_causal_lm(str(final), "float32", what="test")  # and loads offline here, onto the packaged base
    base = load_causal_lm("smollm2-135m-instruct", "float32", what="test")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[name], base.state_dict()[name])  # the adapter was applied
