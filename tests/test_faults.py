"""Faults inside a run: a reward that raises or returns NaN, a loss that turns non-finite, weights that diverge, and a
disk that fills up while a checkpoint is written. Each stops or skips cleanly and loses nothing already saved."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch
from safetensors.torch import load_file
from training_runs import (
    latest_step,
    metrics_by_step,
    one_thread,  # noqa: F401 (fixture)
    tiny_argv,
    tmp_checkpoint_dirs,
    write_config,
)

from detox.jobs import train_ppo
from detox import checkpoint as checkpoint_module
from detox.checkpoint import CheckpointError
from detox.state import NonFiniteWeightsError, save_final, save_training_checkpoint
from detox.trainer import NonFiniteLossError
from rewards import RewardError

pytestmark = pytest.mark.usefixtures("one_thread")


def adapter_weights(checkpoint_dir):
    return load_file(checkpoint_dir / "model" / "adapter_model.safetensors")


# ---------------------------------------------------------------- rewards that fail mid-run


@pytest.mark.parametrize(
    "fault, problem",
    [
        ("raise", r"raised RuntimeError: scorer crashed on .*"),
        ("nan", r"returned the non-finite score nan"),
    ],
    ids=["raise", "nan"],
)
def test_reward_fault_stops_the_run_naming_component_and_sample(tmp_path, tiny_lm_path, fault, problem):
    # The reward misbehaves on its 3rd call (step 3) for sample 1. The run must stop there with an error naming the
    # component and the sample, and keep step 2: with save_every 10 no scheduled save happens before the fault, so
    # checkpoint-2 can only come from the trainer saving the finished steps on its way out.
    state = tmp_path / "reward_calls.json"
    config = write_config(tmp_path, "faulty_reward", name="flaky", state=str(state), at_call=3, fault=fault, sample=1)
    output_dir = tmp_path / "run"
    argv = tiny_argv(tiny_lm_path, output_dir, config, "--ppo.steps", "4", "--checkpoint.save_every", "10")
    with pytest.raises(RewardError, match=rf"^reward 'flaky' {problem} at sample 1 \(completion ") as caught:
        train_ppo.main(argv)
    assert (caught.value.component, caught.value.index) == ("flaky", 1)
    victim = json.loads(state.read_text())["victim"]
    assert repr(victim[:80]) in str(caught.value)  # the message quotes the completion that broke the reward
    assert latest_step(output_dir) == 2
    assert sorted(metrics_by_step(output_dir)) == [0, 1, 2]  # step 3 never finished, so it was not logged

    # The kept checkpoint resumes: a fixed reward under the same name finishes the run from step 2.
    healthy = write_config(tmp_path / "fixed", name="flaky")
    run = train_ppo.build(tiny_argv(tiny_lm_path, output_dir, healthy, "--ppo.steps", "4",
                                    "--checkpoint.resume_from_checkpoint", "latest"))
    assert run.trainer.step_index == 2
    train_ppo.run(run)
    assert latest_step(output_dir) == 4
    assert sorted(metrics_by_step(output_dir)) == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- non-finite losses and weights


@pytest.mark.parametrize(
    "learning_rate, mode, message",
    [
        # The first mini-batch's update (finite loss) throws the weights to ~1e30; the second mini-batch's loss is NaN.
        ("1e30", "stop", r"^step 1: loss nan / gradient norm nan is not finite; this update was not applied"),
        ("1e30", "skip", r"^step 1: after skipping .*\(largest trainable \|weight\| 1e\+30\): the weights diverged"),
    ],
    ids=["stop", "skip"],
)
def test_huge_learning_rate_is_caught_in_the_same_step(tmp_path, tiny_lm_path, learning_rate, mode, message):
    # A diverged policy cannot be rescued by skipping updates, so both modes stop in step 1, before anything of the
    # step is logged or saved (without the check, `skip` went on to crash inside the next rollout's sampling with
    # "probability tensor contains either inf, nan or element < 0", after saving the 1e30 weights).
    output_dir = tmp_path / "run"
    argv = tiny_argv(tiny_lm_path, output_dir, write_config(tmp_path), "--ppo.steps", "3", "--checkpoint.save_every",
                     "1", "--ppo.learning_rate", learning_rate, "--ppo.nonfinite_loss", mode)
    run = train_ppo.build(argv)
    with pytest.raises(NonFiniteLossError, match=message):
        train_ppo.run(run)
    assert latest_step(output_dir) == -1 and not list(output_dir.glob("checkpoint-*"))
    assert not (output_dir / "final").exists()
    assert sorted(metrics_by_step(output_dir)) == [0]


def test_skip_mode_skips_a_nonfinite_loss_and_keeps_training(tmp_path, tiny_lm_path):
    # At step 2 one sample's reward is 3e38: finite, so the reward check lets it through, but the squared error of the
    # value loss overflows to inf and the whitened advantages turn NaN, so every update of step 2 is non-finite. `skip`
    # must drop those updates (weights and optimiser untouched), log them, and train on at step 3.
    config = write_config(tmp_path, "faulty_reward", name="flaky", state=str(tmp_path / "calls.json"), at_call=2,
                          fault="huge", sample=1)
    output_dir = tmp_path / "run"
    run = train_ppo.build(tiny_argv(tiny_lm_path, output_dir, config, "--ppo.steps", "3", "--checkpoint.save_every",
                                    "1", "--checkpoint.keep_last", "null", "--ppo.nonfinite_loss", "skip"))
    train_ppo.run(run)

    metrics = metrics_by_step(output_dir)
    assert metrics[2]["ppo/skipped_updates"] == 2  # both mini-batches of the step
    assert metrics[2]["ppo/loss/total"] is None  # non-finite values are logged as null: the loss really was inf/NaN
    for step in (1, 3):
        assert metrics[step]["ppo/skipped_updates"] == 0 and metrics[step]["ppo/loss/total"] is not None
    first, second, third = (adapter_weights(output_dir / f"checkpoint-{s}") for s in (1, 2, 3))
    assert all(torch.equal(first[k], second[k]) for k in first), "a skipped update changed the weights"
    assert any(not torch.equal(second[k], third[k]) for k in second), "step 3 should have trained again"
    assert all(torch.isfinite(w).all() for w in third.values())

    # Non-finite weights are never written: a checkpoint or final save of a poisoned policy is refused, and what
    # was on disk before stays as it was.
    policy = run.accelerator.unwrap_model(run.trainer.model)
    final_before = {p.name: p.read_bytes() for p in (output_dir / "final").iterdir()}
    with torch.no_grad():
        next(p for p in policy.parameters() if p.requires_grad).view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match="NonFiniteWeightsError: refusing to save non-finite weights") as caught:
        save_training_checkpoint(run.trainer, output_dir, None, run.config)
    assert isinstance(caught.value.__cause__, NonFiniteWeightsError)
    assert f"the latest checkpoint is still {output_dir / 'checkpoint-3'}" in str(caught.value)
    assert latest_step(output_dir) == 3 and tmp_checkpoint_dirs(output_dir) == []
    with pytest.raises(NonFiniteWeightsError):
        save_final(run.trainer, output_dir, run.config)
    assert {p.name: p.read_bytes() for p in (output_dir / "final").iterdir()} == final_before
    assert not [p for p in output_dir.iterdir() if p.name.startswith(".tmp-final-")]


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, tiny_lm_path, monkeypatch):
    # The state files of checkpoint 2 hit a full disk after writing part of a file (as a real ENOSPC does). The run
    # must stop with a clear error, leave checkpoint-1 as `latest` with no debris, and resume from it.
    real_save_file = checkpoint_module.save_file

    def disk_fills_up(tensors, filename, *args, **kwargs):
        real_save_file(tensors, filename, *args, **kwargs)
        if f"{os.sep}.tmp-checkpoint-2-" in str(filename):
            with open(filename, "r+b") as handle:
                handle.truncate(100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))

    monkeypatch.setattr(checkpoint_module, "save_file", disk_fills_up)
    output_dir = tmp_path / "run"
    argv = tiny_argv(tiny_lm_path, output_dir, write_config(tmp_path), "--ppo.steps", "3",
                     "--checkpoint.save_every", "1")
    with pytest.raises(CheckpointError, match=r"saving checkpoint checkpoint-2 in .* failed: disk full \(\[Errno 28\] "
                                              r"No space left on device: .*\); the latest checkpoint is still "
                                              rf"{output_dir / 'checkpoint-1'}\."):
        train_ppo.main(argv)
    assert latest_step(output_dir) == 1
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-1"]
    assert tmp_checkpoint_dirs(output_dir) == []

    monkeypatch.undo()  # space freed: the run resumes from checkpoint-1 and finishes
    run = train_ppo.build([*argv, "--checkpoint.resume_from_checkpoint", "latest"])
    assert run.trainer.step_index == 1
    train_ppo.run(run)
    assert latest_step(output_dir) == 3
