"""train_grpo.py: TRL's GRPOTrainer and RLOOTrainer with the composed rewards, on the tiny random model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detox.jobs import train_grpo

TESTS = Path(__file__).resolve().parent

# Three components of different kinds, with weights, so the check below sees each name and each weight in TRL's logs.
REWARDS = (
    "[{type: offline_toxicity, options: {output: logit}},"
    " {type: phrase, weight: 0.5, options: {phrases: [the, and, of]}},"
    ' {type: callable, name: word_count, weight: 0.1, options: {path: "reward_fixtures:count_token_reward"}}]'
)
WEIGHTS = {"offline_toxicity": 1.0, "phrase": 0.5, "word_count": 0.1}

# Shrunk knobs, each for speed on a 2-core CPU: 2 rollouts of 4 completions (2 prompts x 2), 6 tokens each, one
# optimiser step per rollout (mini-batch = rollout, one epoch), so TRL's 2 steps are the run's 2 rollouts.
SMALL = [
    "--ppo.steps", "2", "--ppo.batch_size", "4", "--ppo.mini_batch_size", "4", "--ppo.ppo_epochs", "1",
    "--num_generations", "2", "--generation.min_new_tokens", "4", "--generation.max_new_tokens", "6",
    "--data.max_prompts", "40", "--logging.report_to", "none", "--checkpoint.save_every", "100",
]


@pytest.mark.parametrize(
    ("algo", "lora", "saved"),
    [("grpo", "true", "adapter_model.safetensors"), ("rloo", "false", "model.safetensors")],
)
def test_group_trainer_with_composed_rewards(algo, lora, saved, tiny_lm_path, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))  # reward_fixtures, for the callable component
    argv = SMALL + [
        "--algo", algo, "--lora.enabled", lora, "--model.name_or_path", tiny_lm_path,
        "--rewards", REWARDS, "--checkpoint.output_dir", str(tmp_path), "--checkpoint.export", "merged",
    ]
    cfg, trainer, output_dir = train_grpo.build(argv)
    trainable = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    final = train_grpo.run(cfg, trainer, output_dir)

    logs = [row for row in trainer.state.log_history if "reward" in row]
    assert [row["step"] for row in logs] == [1, 2]
    for row in logs:
        means = {name: row[f"rewards/{name}/mean"] for name in WEIGHTS}  # KeyError names a missing component
        # TRL's total is the weighted sum of the components: the composer's weights reached it, in order.
        expected = sum(WEIGHTS[name] * mean for name, mean in means.items())
        assert row["reward"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    changed = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(trainable[n], p)]
    assert changed, "no trainable parameter moved in 2 steps"
    assert (final / saved).is_file()
    from detox.judge_specs import parse_judges
    from detox.judges import relation, run_config

    offline, minilm = parse_judges(["offline", "minilm_davidson"])  # evaluate_toxicity.py marks the run's own reward
    assert relation(offline, run_config(str(final))) == "reward"
    assert relation(minilm, run_config(str(final))) == "sibling"  # alt-profanity-check learned Davidson's tweets too
    assert (output_dir / "metrics.jsonl").is_file() and (output_dir / "heldout_prompts.jsonl").is_file()
    # shared as train_ppo.py shares: the card names the algorithm; an adapter is merged, full weights need no merging
    assert f"with {algo.upper()}" in (final / "README.md").read_text()
    if lora == "true":
        from transformers import AutoModelForCausalLM

        assert AutoModelForCausalLM.from_pretrained(output_dir / "merged").config.num_hidden_layers == 2
    else:
        assert not (output_dir / "merged").exists()


def test_unknown_algo_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"algo: 'ppo' is not one of \['grpo', 'rloo'\]"):
        train_grpo.build(["--algo", "ppo"])


def test_group_size_must_divide_the_rollout():
    with pytest.raises(ValueError, match=r"num_generations \(3\) must be >= 2 and divide ppo.batch_size \(16\)"):
        train_grpo.build(["--num_generations", "3"])
