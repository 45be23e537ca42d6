"""A real training run logs to W&B offline: the history read back from W&B's own run file holds the metrics, and
the run directory holds the curves and the probe pictures."""

from __future__ import annotations

import math

from detox.jobs import train_ppo
from detox.tracking import read_wandb_offline_history
from test_train import SMALL

EXPECTED = [
    "objective/kl", "objective/kl_coef", "objective/entropy", "reward/total", "reward/minilm_toxicity/mean",
    "judge/offline/mean", "judge/minilm_davidson/mean",
    "ppo/loss/policy", "ppo/loss/value", "ppo/clipfrac", "ppo/approxkl", "ppo/returns/mean", "ppo/grad_norm",
    "ppo/grad_clipped",
    "time/generate", "time/score", "time/update", "memory/peak_gb",
]


def test_three_steps_logged_to_wandb_offline(tiny_lm_path, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    argv = SMALL + [
        "--model.name_or_path", tiny_lm_path, "--ppo.steps", "3", "--logging.report_to", "wandb",
        "--logging.sample_every", "1",
        "--logging.probes", '[{context: "You are such a", tokens: [" fool", " friend"]}]',
        "--checkpoint.output_dir", str(tmp_path), "--checkpoint.save_every", "100",
    ]
    train_ppo.main(argv)
    history = read_wandb_offline_history(tmp_path)
    steps = [row for row in history if "reward/total" in row]
    assert [row["_step"] for row in steps] == [1, 2, 3]
    for row in steps:
        for key in EXPECTED:
            assert key in row, f"{key} missing from the W&B history"
            assert math.isfinite(float(row[key])), f"{key} = {row[key]}"
        assert any(key.startswith("probe/") for key in row), "probe probabilities are logged every step"
    assert (tmp_path / "training_curves.png").stat().st_size > 0
    assert (tmp_path / "probe_You_are_such_a.png").is_file() and (tmp_path / "probe_You_are_such_a.gif").is_file()
