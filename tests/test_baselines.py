"""Loss-based unlearning baselines end to end: WHP's anchor alignment on the real tokenizer, short runs of every
method on real Shakespeare text, their outputs loading with plain transformers/peft, exact resume, and bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from training_runs import one_thread  # noqa: F401 (fixture)

from detox.losses import IGNORE
from detox.model_card import CITATIONS
from detox.baselines.whp import align_block, alternative_labels
from rewards.forget import AnchorTerms

ANCHORS = {"Romeo": "the young man", "Verona": "the city", "Tybalt": "the cousin"}
RUN = ["--optim.steps", "2", "--optim.batch_size", "2", "--data.max_length", "32", "--data.max_blocks", "6",
       "--logging.report_to", "none", "--logging.sample_every", "2", "--logging.num_samples", "1",
       "--optim.learning_rate", "0.01"]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, shared_data) -> dict[str, Path]:
    """Speeches of Romeo and Juliet (forget) and of Coriolanus (retain) from Tiny Shakespeare."""
    text = gzip.open(shared_data / "tinyshakespeare" / "input.txt.gz", "rt", encoding="utf-8").read()
    speeches = text.split("\n\n")
    forget = [s for s in speeches if s.split(":")[0] in ("ROMEO", "JULIET", "TYBALT", "MERCUTIO")][:40]
    retain = [s for s in speeches if s.split(":")[0] in ("CORIOLANUS", "MENENIUS")][:40]
    out = tmp_path_factory.mktemp("baseline_corpora")
    for name, rows in (("forget", forget), ("retain", retain)):
        (out / f"{name}.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in rows))
    (out / "anchors.json").write_text(json.dumps(ANCHORS))
    (out / "empty.jsonl").write_text(json.dumps({"text": "  "}) + "\n")
    return {"forget": out / "forget.jsonl", "retain": out / "retain.jsonl", "anchors": out / "anchors.json",
            "empty": out / "empty.jsonl"}


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_path)


def test_align_block_keeps_plain_tokens_and_maps_anchor_ends(smollm2_tokenizer):
    text = "In fair Verona, where Romeo walks, we lay our scene."
    block = align_block(text, AnchorTerms(ANCHORS), smollm2_tokenizer)
    tok = smollm2_tokenizer
    assert block.original_ids == tok(text, add_special_tokens=False)["input_ids"]  # same tokens as the whole text
    assert tok.decode(block.translated_ids) == "In fair the city, where the young man walks, we lay our scene."
    words = [tok.decode([t]) for t in block.original_ids]
    for i, word in enumerate(words):
        if block.source[i] >= 0 and word not in (" Ver", "ona", " Romeo"):  # plain tokens map to the same token
            assert tok.decode([block.translated_ids[block.source[i]]]) == word
    # " fair" predicts the anchor's first token: kept, read from the translated " fair" (which predicts " the").
    fair = words.index(" fair")
    assert block.keep[fair] and tok.decode([block.translated_ids[block.source[fair]]]) == " fair"
    # Inside "Verona" (" Ver" -> "ona") nothing is learned; the anchor's last token maps to " city".
    ver = words.index(" Ver")
    assert not block.keep[ver] and tok.decode([block.translated_ids[block.source[ver + 1]]]) == " city"
    assert block.keep[-1] is False


def test_alternative_labels_take_the_generic_argmax_at_mapped_positions(smollm2_tokenizer):
    block = align_block("Romeo walks", AnchorTerms(ANCHORS), smollm2_tokenizer)
    vocab = len(smollm2_tokenizer)
    # Base logits: token 5 everywhere; the reinforced model raised token 5 by 3 at every position, so with
    # alpha = 1 its generic logit is 1 - 3 = -2 and token 7 (base logit 0.5) wins.
    base = torch.zeros(len(block.translated_ids), vocab)
    base[:, 5], base[:, 7] = 1.0, 0.5
    reinforced = base.clone()
    reinforced[:, 5] = 4.0
    (labels,) = alternative_labels([block], lambda ids: base, lambda ids: reinforced, alpha=1.0)
    assert labels[0] == IGNORE and len(labels) == len(block.original_ids)
    kept = [i + 1 for i, k in enumerate(block.keep) if k]
    assert kept and all(labels[i] == 7 for i in kept)
    (plain,) = alternative_labels([block], lambda ids: base, lambda ids: reinforced, alpha=0.0)
    assert all(plain[i] == 5 for i in kept)


def _run(argv):
    from detox.jobs.train_unlearn import build, run

    return run(build(argv))


@pytest.mark.parametrize("method", ["gradient_ascent", "gradient_difference", "npo"])
def test_two_steps_write_loadable_outputs(method, tiny_lm_path, corpora, tmp_path, one_thread):
    from transformers import AutoModelForCausalLM

    out = tmp_path / method
    final = _run(["--model.name_or_path", tiny_lm_path, "--method.name", method, "--data.forget", str(corpora["forget"]),
                  "--data.retain", str(corpora["retain"]), "--lora.enabled", "false",
                  "--checkpoint.output_dir", str(out), *RUN])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "loss/total" in r]
    assert [r["step"] for r in trained] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["loss/total"])) for r in trained)
    if method == "gradient_ascent":
        assert trained[0]["loss/total"] == pytest.approx(-trained[0]["forget/nll"], rel=1e-5)
    else:
        assert "retain/nll" in trained[0]
    assert (out / "checkpoint-2" / "model" / "model.safetensors").is_file()
    assert (out / "samples.jsonl").is_file() and (out / "training_curves.png").is_file()
    model = AutoModelForCausalLM.from_pretrained(final)
    base = AutoModelForCausalLM.from_pretrained(tiny_lm_path)
    moved = any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values()))
    assert moved, "two steps at lr 0.01 must change the weights"


@pytest.mark.parametrize("method, flags, own_stats", [
    ("simnpo", ["--method.beta", "2.5", "--method.gamma", "0.5"], ["simnpo/mean_logprob", "retain/nll"]),
    # layer 1: the tiny model has 2 decoder layers, and hidden_states[2] is after the final norm
    ("rmu", ["--method.layer", "1", "--method.steering_coef", "4"],
     ["rmu/forget_loss", "rmu/retain_loss", "rmu/hidden_norm", "retain/nll"]),
])
def test_two_lora_steps_of_simnpo_and_rmu(method, flags, own_stats, tiny_lm_path, corpora, tmp_path, one_thread):
    """With LoRA (the default), so RMU's frozen states come from the policy with its adapters off."""
    out = tmp_path / method
    final = _run(["--model.name_or_path", tiny_lm_path, "--method.name", method, *flags,
                  "--data.forget", str(corpora["forget"]), "--data.retain", str(corpora["retain"]),
                  "--checkpoint.output_dir", str(out), *RUN])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "loss/total" in r]
    assert [r["step"] for r in trained] == [1, 2]
    for row in trained:
        assert all(torch.isfinite(torch.tensor(row[k])) for k in ["loss/total", *own_stats])
    if method == "rmu":
        # Step 1 starts from the reference itself (LoRA's B is zero): the retain states match the frozen ones.
        first = trained[0]
        assert first["rmu/retain_loss"] == pytest.approx(0.0, abs=1e-10) and first["rmu/forget_loss"] > 0
        assert first["loss/total"] == pytest.approx(first["rmu/forget_loss"], rel=1e-5)
        assert trained[1]["rmu/retain_loss"] > 0, "the first update must move the layer's retain states"
    assert (final / "adapter_model.safetensors").is_file() and (final / "adapter_config.json").is_file()
    card = (final / "README.md").read_text()
    assert f"- {method}\n" in card and CITATIONS[method] in card


def test_rmu_layer_out_of_range_names_the_field(tiny_lm_path, corpora, tmp_path):
    from detox.jobs.train_unlearn import build

    with pytest.raises(ValueError, match=r"^method.layer \(2\) is out of range for this model's 2 decoder layers: "
                                         r"use 1 to 1\.$"):
        build(["--model.name_or_path", tiny_lm_path, "--method.name", "rmu", "--method.layer", "2",
               "--data.forget", str(corpora["forget"]), "--data.retain", str(corpora["retain"]),
               "--checkpoint.output_dir", str(tmp_path / "x"), *RUN])


def test_pad_blocks_learns_only_after_each_start():
    from detox.blocks import pad_blocks

    ids, mask, labels = pad_blocks([[5, 6, 7, 8], [9, 10]], pad_id=0, device="cpu", starts=[2, 1])
    assert ids.tolist() == [[5, 6, 7, 8], [9, 10, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert labels.tolist() == [[IGNORE, IGNORE, 7, 8], [IGNORE, 10, IGNORE, IGNORE]]


def test_prompt_completion_records_unlearn_only_the_completion(tiny_lm_path, shared_data, tmp_path, one_thread):
    """RealToxicityPrompts records as they come: the prompt is context, the toxic continuation is what is unlearned."""
    from detox.jobs.train_unlearn import build
    from detox.blocks import pad_blocks

    run = build(["--model.name_or_path", tiny_lm_path, "--method.name", "gradient_ascent", "--lora.enabled", "false",
                 "--data.forget", str(shared_data / "real-toxicity-prompts" / "toxic.jsonl"),
                 "--data.text_field", "prompt.text", "--data.completion_field", "continuation.text",
                 "--checkpoint.output_dir", str(tmp_path / "rtp"), *RUN])
    forget, tokenizer = run.trainer.forget, run.trainer.tokenizer
    first = json.loads((shared_data / "real-toxicity-prompts" / "toxic.jsonl").read_text().splitlines()[0])
    prompt_ids = tokenizer(first["prompt"]["text"], add_special_tokens=False)["input_ids"]
    assert forget.starts[0] == len(prompt_ids) and forget.ids[0][: len(prompt_ids)] == prompt_ids
    _, _, labels = pad_blocks(forget.ids[:1], 0, "cpu", forget.starts[:1])
    learned = [t for t in labels[0].tolist() if t != IGNORE]
    assert tokenizer.decode(learned) == tokenizer.decode(forget.ids[0][len(prompt_ids):])
    stats = run.trainer.step()
    assert stats["loss/total"] == pytest.approx(-stats["forget/nll"], rel=1e-5)


def test_resume_continues_exactly(tiny_lm_path, corpora, tmp_path, one_thread):
    common = ["--model.name_or_path", tiny_lm_path, "--method.name", "npo", "--data.forget", str(corpora["forget"]),
              "--data.retain", str(corpora["retain"]), *RUN, "--optim.steps", "4", "--checkpoint.save_every", "2"]
    _run([*common, "--checkpoint.output_dir", str(tmp_path / "whole")])
    _run([*common, "--checkpoint.output_dir", str(tmp_path / "cut"), "--optim.steps", "2"])
    _run([*common, "--checkpoint.output_dir", str(tmp_path / "cut"), "--checkpoint.resume_from_checkpoint", "latest"])

    def losses(name):
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], round(r["loss/total"], 6)) for r in rows if "loss/total" in r]

    assert losses("whole") == losses("cut") and len(losses("whole")) == 4


@pytest.mark.slow
def test_whp_on_smollm2_learns_the_alternative_labels(smollm2_path, corpora, tmp_path, one_thread):
    """Real path: SmolLM2, a reinforced adapter made by make_reinforced, anchors; final/ names its base by Hub id
    (plain peft loads it where the Hub is reachable) and loads offline through detox."""
    from detox.models import load_causal_lm
    from rewards.make_reinforced import main as make_reinforced

    reinforced = tmp_path / "reinforced"
    make_reinforced(["--corpus", str(corpora["forget"]), "--output_dir", str(reinforced), "--max_steps", "1",
                     "--batch_size", "2", "--max_length", "32"])
    out = tmp_path / "whp"
    final = _run(["--method.name", "whp", "--method.reinforced", str(reinforced), "--method.anchor_terms",
                  str(corpora["anchors"]), "--data.forget", str(corpora["forget"]),
                  "--checkpoint.output_dir", str(out), *RUN, "--optim.learning_rate", "0.001"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss/total" in r] == [1, 2]
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and adapter["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert load_causal_lm(str(final), "float32", what="test") is not None  # offline: onto the packaged base


def test_bad_input_names_the_field(tiny_lm_path, corpora, tmp_path):
    from detox.jobs.train_unlearn import build

    base = ["--model.name_or_path", tiny_lm_path, "--checkpoint.output_dir", str(tmp_path / "x"), *RUN]
    with pytest.raises(ValueError, match="data.forget"):
        build([*base])
    with pytest.raises(ValueError, match="holds no text"):
        build([*base, "--data.forget", str(corpora["empty"])])
    for method in ("gradient_difference", "rmu"):
        with pytest.raises(ValueError, match=f"method.name {method} needs data.retain"):
            build([*base, "--data.forget", str(corpora["forget"]), "--method.name", method])
    with pytest.raises(ValueError, match="method.reinforced"):
        build([*base, "--data.forget", str(corpora["forget"]), "--method.name", "whp"])
    with pytest.raises(ValueError, match="method.name"):
        build([*base, "--data.forget", str(corpora["forget"]), "--method.name", "gradient_descent"])
