"""A loss on the text to forget, beside PPO's loss (detox/forget_loss.py): NPO or gradient ascent on the forget
corpus, against PPO's reference."""

from __future__ import annotations

import math

import pytest
import torch
from training_runs import block_logprobs, metrics_by_step, one_thread, tiny_argv, write_config  # noqa: F401 (fixture)

from detox.model_card import write_model_card


def _flags(corpus, method="npo", coef="0.5"):
    return ["--forget_loss.corpus", str(corpus), "--forget_loss.method", method, "--forget_loss.coef", coef,
            "--forget_loss.batch_size", "2", "--forget_loss.max_length", "32"]


def test_the_npo_term_is_npo_against_the_policy_with_its_adapters_off(tmp_path, tiny_lm_path, verse,
                                                                       one_thread):
    from detox.jobs import train_ppo

    config = write_config(tmp_path)
    run = train_ppo.build(tiny_argv(tiny_lm_path, tmp_path / "run", config, "--ppo.steps", "1", *_flags(verse)))
    trainer = run.trainer
    forget_lm = trainer.forget_lm
    assert len(forget_lm.blocks) > 100 and all(len(b) <= 32 for b in forget_lm.blocks.ids)
    # the draw depends on the mini-batch's place in the run alone, and is not ptx's
    assert forget_lm.draw(3, 0, 1) == forget_lm.draw(3, 0, 1) != forget_lm.draw(4, 0, 1)

    with torch.no_grad():  # before any update the policy is the reference: NPO's loss is (2/β) log 2
        start, _ = forget_lm.loss(trainer.model, trainer.models.reference_lm(), 0, 0, 1, "cpu")
    assert start.item() == pytest.approx(20 * math.log(2), abs=1e-3)
    trainer.step()  # one PPO update (learning rate 0.01): the adapters now differ from the reference
    lm = trainer.models.policy.lm
    index = forget_lm.draw(5, 0, 1)
    ids, mask, labels = forget_lm.batch(index, "cpu")
    policy_lp, policy_nll = block_logprobs(lm, ids, mask, labels)
    reference_lp, _ = block_logprobs(lm, ids, mask, labels, adapters_off=True)
    assert (policy_lp - reference_lp).abs().max() > 1e-4  # the update moved the blocks' likelihood

    with torch.no_grad():
        got, stats = forget_lm.loss(trainer.model, trainer.models.reference_lm(), 5, 0, 1, "cpu")
    expected = (2 / 0.1) * torch.nn.functional.softplus(0.1 * (policy_lp - reference_lp)).mean()
    assert got.item() == pytest.approx(expected.item(), rel=1e-4)
    assert stats["forget/nll"] == pytest.approx(policy_nll.item(), rel=1e-4)
    assert stats["forget/log_ratio"] == pytest.approx((policy_lp - reference_lp).mean().item(), rel=1e-3, abs=1e-5)
    # the reference's log-probabilities are computed once per block and kept
    assert set(index) <= set(forget_lm._reference_logprob)


def _ascent_term(tmp_path, tiny_lm_path, verse, *extra):
    """A built (untrained) run with the gradient-ascent term, the labels of its second mini-batch's blocks, their
    per-block log-probabilities and mean token NLL computed directly, and a function giving the term's value."""
    from detox.jobs import train_ppo

    config = write_config(tmp_path)
    run = train_ppo.build(tiny_argv(tiny_lm_path, tmp_path / "run", config, "--ppo.steps", "1",
                                    *_flags(verse, method="gradient_ascent"), *extra))
    forget_lm = run.trainer.forget_lm
    ids, mask, labels = forget_lm.batch(forget_lm.draw(2, 0, 1), "cpu")
    block_lp, nll = block_logprobs(run.trainer.models.policy.lm, ids, mask, labels)

    def term():
        with torch.no_grad():
            return forget_lm.loss(run.trainer.model, run.trainer.models.reference_lm(), 2, 0, 1, "cpu")

    return run, labels, block_lp, nll, term


def test_gradient_ascent_is_the_negated_token_nll(tmp_path, tiny_lm_path, verse, one_thread):
    _, _, _, nll, term = _ascent_term(tmp_path, tiny_lm_path, verse)
    got, stats = term()
    assert got.item() == pytest.approx(-nll.item(), rel=1e-5) and "forget/log_ratio" not in stats


def test_bounded_ascent_caps_each_forget_blocks_mean_nll(tmp_path, tiny_lm_path, verse, one_thread):
    run, labels, block_lp, nll, term = _ascent_term(tmp_path, tiny_lm_path, verse, "--forget_loss.batch_size", "8")
    block_nll = -block_lp / (labels[:, 1:] != -100).sum(dim=1)
    bound = block_nll.median().item()  # the random model's blocks sit near ln V; the bound bites on half of them
    run.trainer.forget_lm.cfg.max_nll = bound
    got, stats = term()
    assert got.item() == pytest.approx(-block_nll.clamp(max=bound).mean().item(), rel=1e-5)
    assert got.item() > -block_nll.mean().item()  # capped: less than plain ascent's push
    assert stats["forget/nll"] == pytest.approx(nll.item(), rel=1e-5)  # the uncapped NLL

    config = run.config | {"forget_loss": run.config["forget_loss"] | {"max_nll": 5.0}}
    card = write_model_card(tmp_path, config).read_text()
    assert "A block whose mean token NLL passes 5.0 nats is no longer pushed." in card


def test_a_step_with_the_forget_term_adds_coef_times_it_and_resumes_exactly(tmp_path, tiny_lm_path, verse,
                                                                            one_thread):
    from detox.jobs import train_ppo

    config = write_config(tmp_path)
    flags = ["--ppo.steps", "2", "--checkpoint.save_every", "1", "--checkpoint.keep_last", "null"]
    train_ppo.main(tiny_argv(tiny_lm_path, tmp_path / "straight", config, *flags, *_flags(verse)))
    straight = metrics_by_step(tmp_path / "straight")
    for step in (1, 2):
        row = straight[step]
        assert row["ppo/loss/total"] == pytest.approx(
            row["ppo/loss/policy"] + 0.1 * row["ppo/loss/value"] + 0.5 * row["ppo/loss/forget"], rel=1e-5, abs=1e-6)
    card = (tmp_path / "straight" / "final" / "README.md").read_text()
    assert "0.5 × NPO's loss (Zhang et al., 2024; β = 0.1, against the reference) on 2 blocks" in card
    assert "Negative Preference Optimization" in card

    broken = tmp_path / "broken"
    train_ppo.main(tiny_argv(tiny_lm_path, broken, config, "--ppo.steps", "1", *_flags(verse)))
    train_ppo.main(tiny_argv(tiny_lm_path, broken, config, *flags, *_flags(verse),
                             "--checkpoint.resume_from_checkpoint", str(broken / "checkpoint-1")))
    for key in ("ppo/loss/forget", "forget/log_ratio", "ppo/loss/total"):
        assert metrics_by_step(broken)[2][key] == straight[2][key]


def test_forget_loss_input_errors_name_the_field(tmp_path, tiny_lm_path, one_thread):
    from detox.jobs import train_ppo
    from detox.config import parse_config
    from detox.group import GroupRunConfig

    config = write_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="forget_loss.corpus"):
        train_ppo.build(tiny_argv(tiny_lm_path, tmp_path / "run", config, "--forget_loss.corpus",
                                  str(tmp_path / "missing.txt")))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="forget_loss.corpus"):
        train_ppo.build(tiny_argv(tiny_lm_path, tmp_path / "run2", config, "--forget_loss.corpus",
                                  str(tmp_path / "empty.txt")))
    for flag, value in (("method", "whp"), ("coef", "-1"), ("beta", "0"), ("batch_size", "0")):
        with pytest.raises(ValueError, match=rf"forget_loss\.{flag}"):
            parse_config(["--forget_loss.corpus", "x", f"--forget_loss.{flag}", value])
    with pytest.raises(ValueError, match=r"forget_loss\.max_nll .*gradient_ascent"):
        parse_config(["--forget_loss.corpus", "x", "--forget_loss.max_nll", "5"])  # the method defaults to NPO
    with pytest.raises(ValueError, match=r"forget_loss\.max_nll \(-1.0\)"):
        parse_config(["--forget_loss.corpus", "x", "--forget_loss.method", "gradient_ascent",
                      "--forget_loss.max_nll", "-1"])
    with pytest.raises(ValueError, match=r"forget_loss\.corpus .*train_ppo\.py"):
        parse_config(["--forget_loss.corpus", "forget.txt"], GroupRunConfig)


def test_npo_beside_ppo_raises_the_forget_texts_nll_on_smollm2(tmp_path, smollm2_path, verse, one_thread):
    """The real path: SmolLM2, RealToxicityPrompts prompts and Tiny Shakespeare as the text to forget, three PPO steps
    with the term: by the third step the blocks it draws read less likely than under the starting model."""
    from detox.jobs import train_ppo

    config = write_config(tmp_path)
    argv = tiny_argv(smollm2_path, tmp_path / "run", config, "--ppo.steps", "3", "--ppo.learning_rate", "1e-3",
                     "--forget_loss.corpus", str(verse), "--forget_loss.coef", "1.0",
                     "--forget_loss.batch_size", "2", "--forget_loss.max_length", "48")
    train_ppo.main(argv)
    rows = metrics_by_step(tmp_path / "run")
    assert rows[3]["forget/log_ratio"] < -1.0, rows[3]
    assert rows[3]["ppo/loss/forget"] < 20 * math.log(2)
