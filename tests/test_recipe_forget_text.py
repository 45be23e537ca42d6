"""The forget_text recipe: the play's speeches, their splits, bad input, and a 2-step run on SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import train_ppo
from training_runs import one_thread  # noqa: F401 (fixture)
from detox.recipes.forget_text import ForgetTextArgs, make_texts, prepare, read_lines, speeches, split_play


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


def test_speeches_keep_their_header_line_numbers():
    found = speeches(read_lines("builtin:tinyshakespeare"))
    assert (found[0].speaker, found[0].line, found[0].lines) == ("First Citizen", 1, [
        "Before we proceed any further, hear me speak."])
    play, _ = split_play(found, ForgetTextArgs())
    assert play[0].speaker == "SAMPSON" and play[0].line == 15601


def test_forget_text_two_step_run_on_smollm2(tmp_path, smollm2_path, one_thread):
    args = ForgetTextArgs(output_dir=str(tmp_path / "recipe"), model=smollm2_path, retain_chars=3000,
                          forget_chars=3000, sft_steps=1, sft_batch_size=1, ppo_steps=2)  # the path, not the skill
    config = prepare(args)
    recipe = Path(args.output_dir)
    for model_dir in ("target", "retain_model"):
        assert (recipe / model_dir / "model.safetensors").is_file()
    assert (recipe / "reinforced" / "adapter_model.safetensors").is_file()
    assert yaml.safe_load(config.read_text())["model"]["name_or_path"] == str(recipe / "target")
    train_ppo.main(["--config", str(config), "--ppo.batch_size", "2", "--ppo.mini_batch_size", "2",
                    "--ppo.ppo_epochs", "1", "--generation.min_new_tokens", "4", "--generation.max_new_tokens", "6",
                    "--logging.report_to", "none"])
    rows = [json.loads(line) for line in (recipe / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward/total" in r] == [1, 2]
    assert {"reward/anchor_terms/mean", "reward/forget_verbatim/mean", "reward/forget_likelihood/mean"} <= set(rows[1])
    assert (recipe / "ppo" / "final" / "adapter_model.safetensors").is_file()
