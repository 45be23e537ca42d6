"""PPO with both loss terms at once: the PPO loss, PPO-ptx on text to keep and NPO on text to forget, in one
mini-batch's loss (detox/trainer.py), against the two terms computed here from the language model's own logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_runs import block_logprobs, metrics_by_step, one_thread, tiny_argv, write_config  # noqa: F401 (fixture)

PTX_COEF, FORGET_COEF, BETA = 0.7, 0.4, 0.1


def test_the_mini_batch_loss_is_ppo_plus_ptx_plus_npo_computed_by_hand(tmp_path, tiny_lm_path, verse, one_thread):
    from detox.jobs import train_ppo

    half = len(verse.read_text()) // 2
    keep, forget = tmp_path / "keep.txt", tmp_path / "forget.txt"
    keep.write_text(verse.read_text()[:half])
    forget.write_text(verse.read_text()[half:])
    config = write_config(tmp_path)
    run = train_ppo.build(tiny_argv(
        tiny_lm_path, tmp_path / "run", config, "--ppo.steps", "2",
        "--ptx.corpus", str(keep), "--ptx.coef", str(PTX_COEF), "--ptx.batch_size", "2", "--ptx.max_length", "32",
        "--forget_loss.corpus", str(forget), "--forget_loss.method", "npo", "--forget_loss.coef", str(FORGET_COEF),
        "--forget_loss.beta", str(BETA), "--forget_loss.batch_size", "3", "--forget_loss.max_length", "24"))
    trainer = run.trainer
    trainer.step()  # the adapters move away from the reference, so NPO's term is not at its starting value
    lm = trainer.models.policy.lm
    checked = []
    computed = trainer._loss

    def by_hand(batch, position):
        """Each mini-batch of the second step: the two terms from the logits, before the update changes them."""
        ids, mask, labels = trainer.retain_lm.batch(position, 0, 1, "cpu")
        _, ptx = block_logprobs(lm, ids, mask, labels)
        ids, mask, labels = trainer.forget_lm.batch(trainer.forget_lm.draw(position, 0, 1), "cpu")
        policy_lp, _ = block_logprobs(lm, ids, mask, labels)
        reference_lp, _ = block_logprobs(lm, ids, mask, labels, adapters_off=True)
        npo = (2 / BETA) * torch.nn.functional.softplus(BETA * (policy_lp - reference_lp)).mean()
        loss, stats = computed(batch, position)
        checked.append((loss.item(), stats, ptx.item(), npo.item()))
        return loss, stats

    trainer._loss = by_hand
    trainer.step()
    assert len(checked) == 2  # batch 4, mini-batches of 2, one epoch
    for total, stats, ptx, npo in checked:
        assert stats["ppo/loss/ptx"] == pytest.approx(ptx, rel=1e-4)
        assert stats["ppo/loss/forget"] == pytest.approx(npo, rel=1e-4)
        assert npo != pytest.approx(20 * 0.6931, abs=1e-3)  # not NPO's value at the reference, (2/β) log 2
        expected = stats["ppo/loss/policy"] + 0.1 * stats["ppo/loss/value"] + PTX_COEF * ptx + FORGET_COEF * npo
        assert total == pytest.approx(expected, rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_two_steps_of_the_combined_preset_on_smollm2(tmp_path, one_thread):
    """The real path: configs/detox_combined.yaml on SmolLM2 with its shipped prompts, reward and labelled
    continuations, shrunk for speed: each step's loss holds both terms at weight 1, gradient ascent's being minus
    the toxic continuations' token NLL."""
    from detox.jobs import train_ppo

    preset = Path(__file__).resolve().parents[1] / "configs" / "detox_combined.yaml"
    train_ppo.main(["--config", str(preset), "--ppo.steps", "2", "--ppo.batch_size", "4", "--ppo.mini_batch_size", "2",
                    "--ppo.ppo_epochs", "1", "--generation.min_new_tokens", "4", "--generation.max_new_tokens", "6",
                    "--data.max_prompts", "40", "--logging.report_to", "none", "--logging.judges", "[]",
                    "--checkpoint.output_dir", str(tmp_path / "run")])
    rows = metrics_by_step(tmp_path / "run")  # step 0: the probes before training
    assert sorted(rows) == [0, 1, 2]
    for row in (rows[1], rows[2]):
        assert row["ppo/loss/forget"] == pytest.approx(-row["forget/nll"], rel=1e-6)
        assert 1.0 < row["ppo/loss/ptx"] < 10.0 and 1.0 < row["forget/nll"] < 10.0  # real text under a real model
        assert row["ppo/loss/total"] == pytest.approx(
            row["ppo/loss/policy"] + 0.1 * row["ppo/loss/value"] + row["ppo/loss/ptx"] + row["ppo/loss/forget"],
            rel=1e-5, abs=1e-6)
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").is_file()
