"""PPO-ptx: a language-modelling term on text to keep, added to every PPO mini-batch (detox/ptx.py)."""

from __future__ import annotations

import pytest
import torch
from training_runs import metrics_by_step, one_thread, tiny_argv, write_config  # noqa: F401 (fixture)


def _ptx_flags(corpus, coef="0.5"):
    return ["--ptx.corpus", str(corpus), "--ptx.coef", coef, "--ptx.batch_size", "2", "--ptx.max_length", "32"]


def test_the_ptx_term_is_the_mean_token_nll_of_the_drawn_blocks(tmp_path, tiny_lm_path, verse, one_thread):
    from detox.jobs import train_ppo

    config = write_config(tmp_path)
    run = train_ppo.build(tiny_argv(tiny_lm_path, tmp_path / "run", config, "--ppo.steps", "1",
                                    *_ptx_flags(verse)))
    retain_lm = run.trainer.retain_lm
    assert len(retain_lm.blocks) > 100 and all(len(b) <= 32 for b in retain_lm.blocks.ids)

    # which blocks a mini-batch draws depends on its place in the run alone; ranks draw disjoint blocks
    first, again = retain_lm.batch(3, 0, 1, "cpu")[0], retain_lm.batch(3, 0, 1, "cpu")[0]
    assert torch.equal(first, again) and not torch.equal(first, retain_lm.batch(4, 0, 1, "cpu")[0])
    rank0 = {tuple(r.tolist()) for r in retain_lm.batch(0, 0, 2, "cpu")[0]}
    rank1 = {tuple(r.tolist()) for r in retain_lm.batch(0, 1, 2, "cpu")[0]}
    assert not rank0 & rank1

    # against cross-entropy computed here, with the language model called directly
    ids, mask, labels = retain_lm.batch(5, 0, 1, "cpu")
    with torch.no_grad():
        logits = run.trainer.models.policy.lm(input_ids=ids, attention_mask=mask).logits
        expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                     labels[:, 1:].reshape(-1), ignore_index=-100)
        got = retain_lm.loss(run.trainer.model, 5, 0, 1, "cpu")
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_step_with_ptx_adds_coef_times_its_loss_and_resumes_exactly(tmp_path, tiny_lm_path, verse,
                                                                      one_thread):
    from detox.jobs import train_ppo

    config = write_config(tmp_path)
    flags = ["--ppo.steps", "2", "--checkpoint.save_every", "1", "--checkpoint.keep_last", "null",
             *_ptx_flags(verse, coef="0.5")]
    train_ppo.main(tiny_argv(tiny_lm_path, tmp_path / "straight", config, *flags))
    straight = metrics_by_step(tmp_path / "straight")
    for step in (1, 2):
        row = straight[step]
        # the step's losses are means over its mini-batches, and the total is linear in its parts
        assert row["ppo/loss/total"] == pytest.approx(
            row["ppo/loss/policy"] + 0.1 * row["ppo/loss/value"] + 0.5 * row["ppo/loss/ptx"], rel=1e-5, abs=1e-6)
        assert 5.0 < row["ppo/loss/ptx"] < 15.0  # a random 2-layer model: about log(vocabulary), 10.8
    card = (tmp_path / "straight" / "final" / "README.md").read_text()
    assert f"0.5 × the language-modelling loss of 2 blocks of at most 32 tokens of `{verse}`" in card
    assert "Ouyang, L. et al. (2022)" in card

    # a second run stopped after step 1 and resumed from its checkpoint draws the same blocks and computes the same
    broken = tmp_path / "broken"
    train_ppo.main(tiny_argv(tiny_lm_path, broken, config, *flags[:-8], "--ppo.steps", "1",
                             *_ptx_flags(verse, coef="0.5")))
    train_ppo.main(tiny_argv(tiny_lm_path, broken, config, *flags, "--checkpoint.resume_from_checkpoint",
                             str(broken / "checkpoint-1")))
    assert metrics_by_step(broken)[2]["ppo/loss/ptx"] == straight[2]["ppo/loss/ptx"]
    assert metrics_by_step(broken)[2]["ppo/loss/total"] == straight[2]["ppo/loss/total"]


def test_ptx_input_errors_name_the_field(tmp_path, tiny_lm_path, one_thread):
    from detox.jobs import train_ppo

    config = write_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="ptx.corpus"):
        train_ppo.build(tiny_argv(tiny_lm_path, tmp_path / "run", config, "--ptx.corpus",
                                  str(tmp_path / "missing.txt")))
    with pytest.raises(ValueError, match=r"ptx\.coef"):
        train_ppo.build(tiny_argv(tiny_lm_path, tmp_path / "run", config, "--ptx.corpus", "x", "--ptx.coef", "-1"))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="ptx.corpus"):
        train_ppo.build(tiny_argv(tiny_lm_path, tmp_path / "run2", config, "--ptx.corpus",
                                  str(tmp_path / "empty.txt")))


def test_the_group_trainers_refuse_a_ptx_corpus():
    from detox.config import parse_config
    from detox.group import GroupRunConfig

    with pytest.raises(ValueError, match=r"ptx\.corpus .*train_ppo\.py"):
        parse_config(["--ptx.corpus", "retain.txt"], GroupRunConfig)


def test_unpacked_blocks_start_where_each_text_starts(tmp_path, tiny_lm_path):
    import json

    from transformers import AutoTokenizer

    from detox.blocks import load_blocks
    from detox.config import PtxConfig

    texts = ["ROMEO:\nBut soft, what light through yonder window breaks?\n", "NURSE:\nAnon!\n", "GREGORY:\nNo.\n"]
    corpus = tmp_path / "speeches.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_path)
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]

    unpacked = load_blocks(str(corpus), PtxConfig(corpus=str(corpus), pack=False, max_length=8), tokenizer, "ptx")
    assert unpacked.ids == [t[:8] for t in ids] and unpacked.starts == [0, 0, 0]
    packed = load_blocks(str(corpus), PtxConfig(corpus=str(corpus), max_length=8), tokenizer, "ptx")
    stream = [t for text in ids for t in (*text, tokenizer.eos_token_id)]
    assert packed.ids == [stream[i : i + 8] for i in range(0, len(stream) - 7, 8)]
