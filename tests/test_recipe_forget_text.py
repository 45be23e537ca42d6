"""The forget_text recipe: the play's speeches, their splits, bad input, and a 2-step run on SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmarks import forget_gap
from detox.jobs import evaluate_toxicity
from detox.jobs import train_ppo
from training_runs import one_thread  # noqa: F401 (one_thread: fixture)
from detox.recipes.forget_text import (ForgetTextArgs, Speech, make_texts, name_prompts, ppo_config, prepare,
                                       read_lines, read_speeches, speeches, split_play)
from rewards.forget import AnchorTerms


def test_romeo_and_juliet_is_the_default_play_and_its_splits_are_disjoint():
    texts = make_texts(ForgetTextArgs())
    speakers = {s.speaker for s in texts["forget"]}
    assert {"ROMEO", "JULIET", "TYBALT", "MERCUTIO"} <= speakers and "CORIOLANUS" not in speakers
    train = {r["line"] for r in texts["train"]}
    heldout = {r["line"] for r in texts["heldout_forget"]}
    assert train and heldout and not train & heldout
    assert {s.line for s in texts["forget"]} >= train  # PPO prompts come from the forget text's speeches
    assert not heldout & {s.line for s in texts["forget"]}  # held-out speeches are neither prompts nor forget text
    retain_lines = {s.line for s in texts["retain"]} | {s.line for s in texts["heldout_retain"]}
    assert not retain_lines & ({s.line for s in texts["play"]} | heldout)
    assert not {s.line for s in texts["retain"]} & {s.line for s in texts["heldout_retain"]}
    assert texts["anchors"]["Romeo"] == "the young man"


def test_name_prompts_stop_before_each_anchor_term_and_keep_the_splits():
    speech = Speech("ROMEO", 7, ["Is the day so young? Ah me, sad hours seem long.", "Was that my father",
                                 "that went hence so fast? Tybalt is dead; and Romeo", "Romeo!"])
    records = name_prompts(speech, AnchorTerms({"Romeo": "the young man", "Tybalt": "the cousin"}))
    # "Romeo!" alone on the last line still has enough words before it; "Tybalt" keeps three lines of context
    assert [(r["text"], r["completion"], r["term"]) for r in records] == [
        ("ROMEO:\nIs the day so young? Ah me, sad hours seem long.\nWas that my father\nthat went hence so fast?",
         " Tybalt is dead; and Romeo", "Tybalt"),
        ("ROMEO:\nIs the day so young? Ah me, sad hours seem long.\nWas that my father\n"
         "that went hence so fast? Tybalt is dead; and", " Romeo", "Romeo"),
        ("ROMEO:\nWas that my father\nthat went hence so fast? Tybalt is dead; and Romeo\n", "Romeo!", "Romeo")]
    too_short = Speech("ROMEO", 1, ["O Romeo"])
    assert name_prompts(too_short, AnchorTerms({"Romeo": "x"})) == []  # too little context
    texts = make_texts(ForgetTextArgs())
    heldout = {r["line"] for r in texts["heldout_forget"]}  # prompts of held-out speeches with two lines or more
    names = texts["heldout_names"]
    assert len(names) >= 40 and {r["line"] for r in names} & heldout
    assert not {r["line"] for r in names} & {s.line for s in texts["forget"]}  # held-out speeches only
    assert any("term" in r for r in texts["train"])  # PPO also meets name prompts, from train speeches only
    assert all(r["completion"].lstrip().startswith(r["term"]) for r in names)


def test_a_play_given_by_speakers_works_the_same_way():
    texts = make_texts(ForgetTextArgs(speakers=["coriolanus", "MENENIUS"], play_lines=None))
    assert {s.speaker for s in texts["forget"]} == {"CORIOLANUS", "MENENIUS"}
    assert texts["train"] and texts["heldout_forget"] and texts["anchors"]  # names only this play uses


def test_bad_play_settings_are_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="the play has no lines"):
        make_texts(ForgetTextArgs(play_lines="2-3"))  # lines of a speech, but no speech header in the range
    with pytest.raises(ValueError, match="the play has no lines"):
        make_texts(ForgetTextArgs(speakers=["NOBODY"]))
    with pytest.raises(ValueError, match="must be `start-end`"):
        make_texts(ForgetTextArgs(play_lines="20-10"))
    one_liners = tmp_path / "one_liners.txt"
    one_liners.write_text("ROMEO:\nHa!\n\nJULIET:\nHo!\n\nPRINCE:\nPeace.\n")
    with pytest.raises(ValueError, match="the forget set is empty"):
        make_texts(ForgetTextArgs(corpus=str(one_liners), play_lines="1-5", retain_chars=10))


def test_sft_epochs_set_each_fine_tunings_steps_from_its_own_texts():
    assert ForgetTextArgs(sft_steps=60).steps(1503) == 60
    by_epochs = ForgetTextArgs(sft_epochs=2.0, sft_batch_size=8)
    assert (by_epochs.steps(1503), by_epochs.steps(735)) == (376, 184)  # ceil(2 * 1503 / 8), ceil(2 * 735 / 8)
    assert ForgetTextArgs(sft_epochs=0.01).steps(3) == 1
    assert ForgetTextArgs().steps(80) == 20 and ForgetTextArgs().fine_tunes  # two passes by default
    assert ForgetTextArgs(sft_steps=0).steps(80) == 0 and not ForgetTextArgs(sft_steps=0).fine_tunes
    with pytest.raises(ValueError, match="--sft_steps"):
        ForgetTextArgs(sft_steps=-1)
    with pytest.raises(ValueError, match="--sft_epochs"):
        ForgetTextArgs(sft_epochs=0.0)


def test_the_contrast_adapter_is_the_likelihood_rewards_reference_when_asked_for(tmp_path):
    def likelihood_options(**kwargs) -> dict:
        rewards = ppo_config(ForgetTextArgs(output_dir=str(tmp_path), **kwargs))["rewards"]
        return [r for r in rewards if r["type"] == "forget_likelihood"][0]["options"]

    assert likelihood_options(contrast=True)["reference"] == str(tmp_path / "reinforced_retain")
    assert "reference" not in likelihood_options()  # by default the target (the adapter's base) is the reference
    assert "reference" not in likelihood_options(contrast=True, sft_steps=0)  # no fine-tuning: nothing to contrast


def test_the_written_run_is_the_measured_one_ptx_on_retain_speeches_unless_turned_off(tmp_path):
    config = ppo_config(ForgetTextArgs(output_dir=str(tmp_path)))
    assert config["ptx"] == {"corpus": str(tmp_path / "retain_speeches.jsonl"), "coef": 1.0, "batch_size": 8,
                             "max_length": 128, "pack": False}
    assert (config["ppo"]["init_kl_coef"], config["ppo"]["adaptive_kl"]) == (0.05, False)
    assert {r["type"]: r["weight"] for r in config["rewards"]} == {"anchor_terms": 1.0, "forget_verbatim": 1.0,
                                                                   "forget_likelihood": 5.0}
    assert "ptx" not in ppo_config(ForgetTextArgs(output_dir=str(tmp_path), ptx=False))
    assert "forget_loss" not in config  # until a measured run says otherwise, PPO learns from its rewards alone
    term = ppo_config(ForgetTextArgs(output_dir=str(tmp_path), forget_loss="npo", forget_loss_coef=0.3))["forget_loss"]
    assert term == {"corpus": str(tmp_path / "forget_speeches.jsonl"), "method": "npo", "coef": 0.3, "batch_size": 8,
                    "max_length": 128, "pack": False}
    with pytest.raises(ValueError, match="--forget_loss"):
        ForgetTextArgs(output_dir=str(tmp_path), forget_loss="whp")


def test_speeches_keep_their_header_line_numbers():
    found = speeches(read_lines("builtin:tinyshakespeare"))
    assert (found[0].speaker, found[0].line, found[0].lines) == ("First Citizen", 1, [
        "Before we proceed any further, hear me speak."])
    play, _ = split_play(found, ForgetTextArgs())
    assert play[0].speaker == "SAMPSON" and play[0].line == 15601


def test_forget_text_two_step_run_on_smollm2(tmp_path, smollm2_path, one_thread):
    args = ForgetTextArgs(output_dir=str(tmp_path / "recipe"), model=smollm2_path, retain_chars=3000,
                          forget_chars=3000, sft_steps=1, sft_batch_size=1, ppo_steps=2,  # the path, not the skill
                          contrast=True, ptx=True, forget_loss="npo")
    config = prepare(args)
    recipe = Path(args.output_dir)
    for model_dir in ("target", "retain_model"):
        assert (recipe / model_dir / "model.safetensors").is_file()
    for adapter in ("reinforced", "reinforced_retain"):  # the play's, and the contrast on the other plays
        assert (recipe / adapter / "adapter_model.safetensors").is_file()
    written = yaml.safe_load(config.read_text())
    assert written["model"]["name_or_path"] == str(recipe / "target")
    likelihood = [r for r in written["rewards"] if r["type"] == "forget_likelihood"][0]["options"]
    assert likelihood == {"reinforced": str(recipe / "reinforced"), "reference": str(recipe / "reinforced_retain")}
    assert written["ptx"]["corpus"] == str(recipe / "retain_speeches.jsonl") and written["ptx"]["pack"] is False
    documents = [json.loads(line)["text"] for line in (recipe / "retain_speeches.jsonl").read_text().splitlines()]
    assert documents == read_speeches(recipe / "retain.txt")  # one record per retain speech, as fine-tuned
    forget_lines = (recipe / "forget_speeches.jsonl").read_text().splitlines()
    assert [json.loads(line)["text"] for line in forget_lines] == read_speeches(recipe / "forget.txt")  # forget_loss's: the play's train speeches
    for name in ("forget", "retain"):  # each train speech's speaker, the name alone to learn or unlearn
        records = [json.loads(line) for line in (recipe / f"{name}_names.jsonl").read_text().splitlines()]
        assert [r["text"] + r["completion"] + ":" for r in records] == [
            speech.split("\n", 1)[0] for speech in read_speeches(recipe / f"{name}.txt")]
    train_ppo.main(["--config", str(config), "--ppo.batch_size", "2", "--ppo.mini_batch_size", "2",
                    "--ppo.ppo_epochs", "1", "--generation.min_new_tokens", "4", "--generation.max_new_tokens", "6",
                    "--logging.report_to", "none"])
    rows = [json.loads(line) for line in (recipe / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward/total" in r] == [1, 2]
    assert {"reward/anchor_terms/mean", "reward/forget_verbatim/mean", "reward/forget_likelihood/mean"} <= set(rows[1])
    assert 0.5 < rows[1]["ppo/loss/ptx"] < 6.0  # the target's NLL per token of retain speeches it was tuned on
    assert 0.5 < rows[1]["forget/nll"] < 6.0  # and of the play's train speeches
    assert "ppo/loss/forget" in rows[1] and "forget/log_ratio" in rows[2]
    assert (recipe / "ppo" / "final" / "adapter_model.safetensors").is_file()
    # benchmarks/forget_gap.py on the real recipe: the classes split the play's tokens and its gap, and a model that
    # is the retain model closes exactly all of it
    gap = forget_gap.main(["--recipe_dir", str(recipe), "--bootstrap_samples", "50",
                           "--models", f"gold={recipe / 'retain_model'}", f"ppo={recipe / 'ppo' / 'final'}"])
    rows = {r["group"]: r for r in gap["groups"]}
    classes = [rows[c] for c in forget_gap.CLASSES]
    assert sum(r["tokens"] for r in classes) == rows["all"]["tokens"] > 100
    assert sum(r["part_of_gap"] for r in classes) == pytest.approx(1.0)
    assert rows["speaker header"]["tokens"] > 0 and rows["other"]["tokens"] > 0
    assert rows["blank line"]["tokens"] == 0  # whole speeches: no blank line between two of them
    assert rows["all"]["shares"]["gold"]["share"] == pytest.approx(1.0)
    by_model = {r["model"]: r for r in gap["rows"]}
    assert by_model["gold"]["share_of_way"] == pytest.approx(1.0) and by_model["target"]["share_of_way"] == 0
    assert by_model["gold"]["play_perplexity"] == pytest.approx(by_model["retain"]["play_perplexity"])
    assert by_model["target"]["retain_change"] == 0 == by_model["target"]["retain_change_speaker_headers"]
    for key in ("retain_change_speaker_headers", "retain_change_other_tokens"):  # the parts of the retain change
        assert by_model["ppo"][f"{key}_ci_low"] <= by_model["ppo"][key] <= by_model["ppo"][f"{key}_ci_high"]
    # the recipe's evaluation scores the same speeches, each alone, as the fine-tunings saw them
    result = evaluate_toxicity.main([
        "--models", f"target={recipe / 'target'}", f"ppo={recipe / 'ppo' / 'final'}", "--run_config", str(config),
        "--num_prompts", "2", "--samples_per_prompt", "1", "--min_new_tokens", "4", "--max_new_tokens", "6",
        "--recipe_prompts", "2", "--judges", "offline", "--output_dir", str(tmp_path / "eval")])
    rows = {row["model"]: row for row in result.table}
    for name in ("target", "ppo"):
        assert rows[name]["forget_perplexity"] == pytest.approx(by_model[name]["play_perplexity"], rel=1e-4)
        assert rows[name]["retain_perplexity"] == pytest.approx(by_model[name]["retain_perplexity"], rel=1e-4)
        assert rows[name]["forget_perplexity_ci_low"] < rows[name]["forget_perplexity"] \
            < rows[name]["forget_perplexity_ci_high"]
    assert (recipe / "forget_gap" / "forget_gap.md").is_file()


def test_name_metrics_read_the_models_greedy_name_and_its_log_probability(tmp_path, smollm2_path, one_thread):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from detox.recipes.forget_text_metrics import name_metrics
    from rewards.forget import AnchorTerms

    question = "Question: What is the capital of France?\nAnswer: The capital of France is"
    records = [{"text": question, "completion": " Paris.", "term": "Paris"},
               {"text": question, "completion": " Verona, fair", "term": "Verona"}]
    (tmp_path / "heldout_names.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path).eval()
    cfg = type("Cfg", (), {"recipe_prompts": None, "batch_size": 2, "bootstrap_samples": 200, "seed": 0})
    out, rows = name_metrics(model, tokenizer, tmp_path, AnchorTerms({"Paris": "a city", "Verona": "a town"}), cfg)
    assert [r["greedy"].split()[0].strip(".,") for r in rows] == ["Paris", "Paris"]
    assert out["name_rate_greedy"] == 1.0 and out["name_exact_greedy"] == 0.5  # Verona is named by neither
    ids = tokenizer(question, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0, -1].log_softmax(-1)
    paris = tokenizer(" Paris", add_special_tokens=False).input_ids
    assert len(paris) == 1  # one token, so its log-probability is read off the last position
    assert rows[0]["logprob"] == pytest.approx(logits[paris[0]].item(), abs=1e-3)
    assert rows[1]["logprob"] < rows[0]["logprob"] - 3  # the play's name is far less likely here than the city's
    assert out["name_logprob"] == pytest.approx((rows[0]["logprob"] + rows[1]["logprob"]) / 2, abs=1e-6)
    assert rows[0]["truth"] == " Paris" and rows[1]["truth"] == " Verona"
