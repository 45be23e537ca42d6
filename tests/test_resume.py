"""Runs survive being killed: exact resume after `kill -9`, a kill in the middle of writing a checkpoint, and the
determinism that makes "exact" checkable (same config and seed, same samples and metrics)."""

from __future__ import annotations

import random
import re
import signal
import time

import pytest
from training_runs import (
    latest_step,
    metrics_by_step,
    one_thread,  # noqa: F401 (fixture)
    run_training,
    samples_by_step,
    start_training,
    tiny_argv,
    tmp_checkpoint_dirs,
    wait_for,
    write_config,
)

from detox.checkpoint import COMPLETE_MARKER, load_tensors_and_json, resolve_checkpoint

BATCH = 4  # TINY_RUN's ppo.batch_size: one sample row per prompt and step


@pytest.mark.slow
def test_kill9_then_resume_replays_the_uninterrupted_run(tmp_path, tiny_lm_path):
    # The same 5-step run twice: once straight through, once SIGKILLed right after its checkpoint of step 2 and then
    # resumed with `latest`. On CPU with a fixed seed the resumed steps must be the very same computation: every
    # metric and every sample equal, not just close (weights, optimiser, schedule, KL controller and each RNG restored).
    config = write_config(tmp_path)
    flags = ["--ppo.steps", "5", "--checkpoint.save_every", "1", "--checkpoint.keep_last", "null",
             "--logging.sample_every", "1"]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    run_training(tiny_argv(tiny_lm_path, straight, config, *flags), tmp_path / "straight.log")

    log = tmp_path / "broken.log"
    process = start_training(tiny_argv(tiny_lm_path, broken, config, *flags), log)
    wait_for(lambda: latest_step(broken) >= 2, process, log)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    resumed_at = latest_step(broken)
    assert 2 <= resumed_at < 5, f"the kill came too late to leave steps to replay (latest: step {resumed_at})"

    output = run_training(
        tiny_argv(tiny_lm_path, broken, config, *flags, "--checkpoint.resume_from_checkpoint", "latest"), log
    )
    assert f"resumed from {broken / f'checkpoint-{resumed_at}'} at step {resumed_at}" in output
    assert latest_step(broken) == 5

    expected, got = metrics_by_step(straight), metrics_by_step(broken)
    assert sorted(got) == sorted(expected) == [0, 1, 2, 3, 4, 5]
    for step in range(1, 6):  # steps <= resumed_at come from the killed process: two fresh processes agree too
        assert got[step] == expected[step], f"step {step} differs (resumed at {resumed_at})"
    expected_samples, got_samples = samples_by_step(straight, BATCH), samples_by_step(broken, BATCH)
    for step in range(resumed_at + 1, 6):
        assert got_samples[step] == expected_samples[step], f"samples of step {step} differ"
    # The comparison is not vacuous: the policy moved away from the reference during the replayed steps.
    assert any(abs(expected[step]["objective/kl"]) > 1e-3 for step in range(resumed_at + 1, 6))


def _partial(output_dir, pid):
    """Name of the checkpoint being written by `pid` (.tmp-checkpoint-<step>-<pid>), for step 2 or later."""
    for name in tmp_checkpoint_dirs(output_dir):
        match = re.fullmatch(rf"\.tmp-checkpoint-(\d+)-{pid}", name)
        if match and int(match.group(1)) >= 2:
            return name
    return None


def _assert_latest_is_complete_and_loadable(output_dir):
    checkpoint = resolve_checkpoint("latest", output_dir)  # raises unless `latest` names a complete checkpoint
    assert load_tensors_and_json(checkpoint, "trainer")["step"] == latest_step(output_dir)
    for path in output_dir.glob("checkpoint-*"):  # nothing half-written ever carries a checkpoint's name
        assert (path / COMPLETE_MARKER).is_file(), f"{path} has no {COMPLETE_MARKER}"


@pytest.mark.slow
def test_kill_while_writing_a_checkpoint_keeps_latest_loadable(tmp_path, tiny_lm_path):
    # SIGKILL the run twice while it is inside a checkpoint write (its temporary directory exists): first the moment
    # the write starts, then at a random point within it, the second time in the resumed run. Each time `latest`
    # must name a complete, loadable checkpoint, and the run must resume from it to the end, clearing the debris.
    config = write_config(tmp_path)
    flags = ["--ppo.steps", "6", "--checkpoint.save_every", "1", "--checkpoint.keep_last", "2"]
    output_dir, log = tmp_path / "run", tmp_path / "run.log"
    resume = ["--checkpoint.resume_from_checkpoint", "latest"]
    delays = random.Random(0)
    interrupted_writes = 0
    for attempt in range(2):
        process = start_training(tiny_argv(tiny_lm_path, output_dir, config, *flags, *(resume if attempt else [])), log)
        partial = wait_for(lambda: _partial(output_dir, process.pid), process, log)
        time.sleep(delays.uniform(0.0, 0.05) if attempt else 0.0)  # a write takes ~0.2 s here
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
        left = output_dir / partial
        interrupted_writes += left.is_dir() and not (left / COMPLETE_MARKER).exists()
        _assert_latest_is_complete_and_loadable(output_dir)
    assert interrupted_writes >= 1, "no kill landed inside a checkpoint write; the test proved nothing"

    output = run_training(tiny_argv(tiny_lm_path, output_dir, config, *flags, *resume), log)
    assert "resumed from" in output
    assert latest_step(output_dir) == 6
    _assert_latest_is_complete_and_loadable(output_dir)
    assert tmp_checkpoint_dirs(output_dir) == [], "the killed writers' temporary directories were not cleaned up"
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-5", "checkpoint-6"]  # keep_last 2


def test_same_seed_gives_the_same_first_steps(tmp_path, tiny_lm_path, one_thread):
    # Two fresh builds of the same config and seed sample the same completions and compute the same rewards and
    # losses; a different seed samples something else (so the equality is not an artefact of, say, greedy decoding).
    from detox.jobs import train_ppo

    config = write_config(tmp_path)
    flags = ["--ppo.steps", "2", "--logging.sample_every", "1", "--checkpoint.save_every", "10"]
    for name, seed in (("a", "0"), ("b", "0"), ("other_seed", "1")):
        train_ppo.main(tiny_argv(tiny_lm_path, tmp_path / name, config, *flags, "--ppo.seed", seed))

    a, b, other = (tmp_path / name for name in ("a", "b", "other_seed"))
    assert samples_by_step(a, BATCH) == samples_by_step(b, BATCH)
    assert metrics_by_step(a) == metrics_by_step(b)
    assert [row["completion"] for row in samples_by_step(a, BATCH)[1]] != [
        row["completion"] for row in samples_by_step(other, BATCH)[1]
    ]
    assert samples_by_step(a, BATCH)[1][0]["reward/words"] == len(samples_by_step(a, BATCH)[1][0]["completion"].split())


def test_resume_trains_with_the_configured_learning_rate(tmp_path, tiny_lm_path, one_thread):
    # A checkpoint's optimiser and schedule states hold the learning rate they ran with. Resuming with a lower
    # ppo.learning_rate (what the divergence error advises) must use it, at the schedule's point, not the saved one.
    from detox.jobs import train_ppo

    config = write_config(tmp_path)
    output_dir = tmp_path / "run"
    flags = ["--ppo.steps", "4", "--ppo.lr_scheduler", "linear", "--checkpoint.save_every", "1",
             "--checkpoint.keep_last", "null"]
    train_ppo.main(tiny_argv(tiny_lm_path, output_dir, config, *flags, "--ppo.learning_rate", "0.01"))
    run = train_ppo.build(tiny_argv(tiny_lm_path, output_dir, config, *flags, "--ppo.learning_rate", "0.001",
                                    "--checkpoint.resume_from_checkpoint", str(output_dir / "checkpoint-2")))
    # linear decay over 4 steps: after 2 of them the factor is 1 - 2/4
    assert [group["lr"] for group in run.trainer.optimizer.optimizer.param_groups] == [0.001 * 0.5]
    train_ppo.run(run)
    lrs = {step: row["ppo/lr"] for step, row in metrics_by_step(output_dir).items() if step}
    assert lrs == pytest.approx({1: 0.01, 2: 0.01 * 0.75, 3: 0.001 * 0.5, 4: 0.001 * 0.25})  # the rate each step used
