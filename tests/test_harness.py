"""benchmarks/harness.py: the intervals on hand-made numbers, the seed loop, and what a failed command says."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from benchmarks import harness


def test_t_interval_on_three_seeds():
    mean, low, high = harness.t_interval([0.2, 0.3, 0.4])
    # sd = 0.1; t(0.975, 2 degrees of freedom) = 4.3027; half width = 4.3027 * 0.1 / sqrt(3) = 0.24841
    assert mean == pytest.approx(0.3)
    assert (low, high) == pytest.approx((0.3 - 0.24841, 0.3 + 0.24841), abs=1e-5)
    with pytest.raises(ValueError, match="at least two seeds"):
        harness.t_interval([0.3])


def test_seed_interval_reads_one_run_by_its_own_interval():
    assert harness.seed_interval([0.25], [0.2], [0.31]) == (0.25, 0.2, 0.31)  # one seed: its bootstrap over prompts
    several = harness.seed_interval([0.2, 0.3, 0.4], [0] * 3, [1] * 3)  # several seeds: their spread, not the runs'
    assert several == pytest.approx(harness.t_interval([0.2, 0.3, 0.4]))


def test_mean_interval_is_detox_metrics_bootstrap():
    values = np.array([0.0, 1.0] * 50)  # mean 0.5; a mean of 100 fair coins stays within 0.5 +- 0.15
    mean, low, high = harness.mean_interval(values, n_boot=500, seed=1)
    assert mean == 0.5 and 0.35 < low < 0.5 < high < 0.65
    constant = harness.mean_interval(np.full(10, 0.7))
    assert constant == pytest.approx((0.7, 0.7, 0.7))  # nothing to resample: the interval is the value


def test_percentile_interval_skips_nan_replicates():
    replicates = np.stack([np.arange(101.0), np.full(101, np.nan)], axis=1)  # column 0: 0..100; column 1: never
    replicates[50, 0] = np.nan  # one draw of column 0 had nothing to measure
    low, high = harness.percentile_interval(replicates)
    # 100 values 0..100 without 50: the 2.5th and 97.5th percentiles interpolate between neighbours
    assert low[0] == pytest.approx(np.percentile(np.delete(np.arange(101.0), 50), 2.5))
    assert high[0] == pytest.approx(np.percentile(np.delete(np.arange(101.0), 50), 97.5))
    assert np.isnan(low[1]) and np.isnan(high[1])


def test_bootstrap_interval_of_a_two_sample_statistic():
    low, high = harness.bootstrap_interval(lambda a, b: a.mean() - b.mean(), [np.full(20, 3.0), np.full(30, 1.0)])
    assert (low, high) == (2.0, 2.0)  # constant samples: every replicate is the difference itself


def test_over_seeds_runs_each_seed_once_in_order():
    seen = []
    assert harness.over_seeds(lambda s: seen.append(s) or s * 10, [2, 0, 1]) == {2: 20, 0: 0, 1: 10}
    assert seen == [2, 0, 1]
    with pytest.raises(ValueError, match="distinct"):
        harness.over_seeds(lambda s: s, [0, 0])


def test_run_from_the_repo_root_returns_seconds_and_logs(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    log = tmp_path / "log.txt"
    code = "import os, pathlib\nprint(pathlib.Path.cwd() == pathlib.Path(os.environ['ROOT']), os.environ['WANDB_MODE'])"
    seconds = harness.run([sys.executable, "-c", code], log=log, env={"ROOT": str(harness.REPO)})
    assert seconds > 0
    assert log.read_text().split() == ["True", "offline"]  # the repository root; W&B local when the caller set nothing


def test_failed_command_shows_the_tail_of_its_output(tmp_path):
    code = "import sys\nfor i in range(100): print(f'line {i}')\nsys.exit('the reason it stopped')"
    with pytest.raises(harness.CommandFailed) as failed:
        harness.run([sys.executable, "-c", code], log=tmp_path / "log.txt")
    message = str(failed.value)
    assert "exit status 1" in message and str(tmp_path / "log.txt") in message
    assert message.rstrip().endswith("the reason it stopped")  # stderr, after stdout, closes the tail
    assert "line 99" in message and "line 61" in message and "line 60" not in message  # the last 40 lines only


def test_continue_flags_resume_a_checkpointed_run_and_restart_one_that_saved_none(tmp_path):
    from detox.config import parse_config

    fresh, crashed, checkpointed = tmp_path / "fresh", tmp_path / "crashed", tmp_path / "checkpointed"
    for path in (fresh, crashed, checkpointed):
        path.mkdir()
    (crashed / "metrics.jsonl").write_text("{}\n")  # stopped before its first checkpoint
    (checkpointed / "metrics.jsonl").write_text("{}\n")
    (checkpointed / "latest").write_text("checkpoint-10\n")
    assert harness.continue_flags(fresh) == []
    assert harness.continue_flags(crashed) == ["--checkpoint.overwrite", "true"]
    assert harness.continue_flags(checkpointed) == ["--checkpoint.resume_from_checkpoint", "latest"]
    for flags in (harness.continue_flags(crashed), harness.continue_flags(checkpointed)):  # flags the scripts read
        cfg = parse_config(["--config", "configs/obscene_numbers.yaml", *flags])
        assert cfg.checkpoint.overwrite or cfg.checkpoint.resume_from_checkpoint == "latest"
