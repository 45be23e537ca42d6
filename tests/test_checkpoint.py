"""Checkpoints: pickle-free state round trips, RNG replay, and the atomic directory protocol under failures."""

from __future__ import annotations

import errno
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from detox.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_tensors_and_json,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
    save_tensors_and_json,
)

REPO = Path(__file__).resolve().parents[1]


def write_marker(text: str):
    """A `write` callback that stores one small file, so tests can tell checkpoints apart."""

    def write(directory: Path) -> None:
        (directory / "payload.txt").write_text(text)

    return write


def tmp_dirs(root: Path) -> list[str]:
    return sorted(path.name for path in root.iterdir() if path.name.startswith(".tmp-checkpoint-"))


# ---------------------------------------------------------------- state files


def adamw_step(model: nn.Linear, optimizer: torch.optim.Optimizer, scheduler, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 4, generator=generator), torch.randn(8, 3, generator=generator)
    optimizer.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()
    scheduler.step()


def make_training(model_state=None):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    if model_state is not None:
        model.load_state_dict(model_state)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.5, total_iters=4)
    return model, optimizer, scheduler


def test_adamw_state_round_trip_resumes_bitwise(tmp_path):
    # Two real steps, then save model/optimizer/scheduler state; a fresh optimizer loaded from disk must take the
    # third step to exactly the same parameters as the run that never stopped.
    model, optimizer, scheduler = make_training()
    for seed in (1, 2):
        adamw_step(model, optimizer, scheduler, seed)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    save_tensors_and_json(tmp_path, "trainer_state", state)
    loaded = load_tensors_and_json(tmp_path, "trainer_state")

    # The optimizer's int parameter ids and its (beta1, beta2) tuple survive as int keys and a tuple.
    assert sorted(loaded["optimizer"]["state"]) == [0, 1]
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert loaded["optimizer"]["state"][0]["step"].dtype == optimizer.state_dict()["state"][0]["step"].dtype

    resumed_model, resumed_optimizer, resumed_scheduler = make_training(loaded["model"])
    resumed_optimizer.load_state_dict(loaded["optimizer"])
    resumed_scheduler.load_state_dict(loaded["scheduler"])
    adamw_step(model, optimizer, scheduler, seed=3)
    adamw_step(resumed_model, resumed_optimizer, resumed_scheduler, seed=3)
    for (name, param), resumed in zip(model.named_parameters(), resumed_model.parameters()):
        assert torch.equal(param, resumed), f"parameter {name} differs after resuming"
    assert scheduler.get_last_lr() == resumed_scheduler.get_last_lr()


def test_nested_state_round_trip_is_exact(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = {
        "tensors": [
            torch.randn(3, dtype=torch.bfloat16),
            torch.tensor([True, False]),
            torch.empty(0, 5, dtype=torch.int64),
            torch.tensor(2.5, dtype=torch.float64),
            base.t(),  # non-contiguous
            base[1],  # shares storage with the previous entry
        ],
        7: ("tuple", None, True, 2**70, -0.0),
        "floats": [math.inf, -math.inf, math.nan, 0.1],
        "numpy": {"f16": np.arange(6, dtype=np.float16).reshape(2, 3), "u32": np.arange(5, dtype=np.uint32),
                  "zero_d": np.array(3.0), "scalar": np.int64(9), "empty": np.zeros((0,), dtype=np.float32)},
    }
    save_tensors_and_json(tmp_path, "state", state)
    loaded = load_tensors_and_json(tmp_path, "state")

    for original, restored in zip(state["tensors"], loaded["tensors"]):
        assert isinstance(restored, torch.Tensor) and restored.dtype == original.dtype
        assert torch.equal(restored, original)
    assert loaded[7] == state[7] and isinstance(loaded[7], tuple) and isinstance(loaded[7][3], int)
    assert math.copysign(1, loaded[7][4]) == -1  # -0.0 keeps its sign
    assert loaded["floats"][:2] == [math.inf, -math.inf] and math.isnan(loaded["floats"][2])
    assert loaded["floats"][3] == 0.1
    for key, original in state["numpy"].items():
        restored = loaded["numpy"][key]
        assert type(restored) is type(original) and restored.dtype == original.dtype
        np.testing.assert_array_equal(restored, original)
    assert "pickle" not in (tmp_path / "state.json").read_text()


def test_unsupported_state_names_its_path(tmp_path):
    with pytest.raises(TypeError, match=r"state at 'optimizer/extra': cannot save a set without pickle"):
        save_tensors_and_json(tmp_path, "bad", {"optimizer": {"extra": {1, 2}}})
    with pytest.raises(TypeError, match=r"dict keys must be str or int, got float"):
        save_tensors_and_json(tmp_path, "bad", {1.5: 0})
    with pytest.raises(CheckpointError, match=r"missing\.json is missing"):
        load_tensors_and_json(tmp_path, "missing")


def test_rng_state_replays_all_generators(tmp_path):
    def draw():
        return torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)], np.random.randn(3)

    np.random.randn()  # leave a cached Gaussian in NumPy's state, which must be captured too
    save_tensors_and_json(tmp_path, "rng", capture_rng_state())
    first = draw()
    restore_rng_state(load_tensors_and_json(tmp_path, "rng"))
    second = draw()
    assert torch.equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[2] == second[2]
    np.testing.assert_array_equal(first[3], second[3])


# ---------------------------------------------------------------- save_checkpoint


def test_save_updates_latest_and_keep_last_prunes_oldest(tmp_path):
    for step in (10, 20, 30, 40):
        path = save_checkpoint(tmp_path, step, write_marker(f"step {step}"), keep_last=2)
        assert path == tmp_path / f"checkpoint-{step}"
        assert (tmp_path / "latest").read_text().strip() == f"checkpoint-{step}"
        assert (path / "COMPLETE").is_file()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-30", "checkpoint-40"]
    assert resolve_checkpoint("latest", tmp_path) == tmp_path / "checkpoint-40"
    assert tmp_dirs(tmp_path) == []

    # Saving the same step again replaces its contents; keep_last=1 then leaves only it.
    save_checkpoint(tmp_path, 40, write_marker("step 40 again"), keep_last=1)
    assert (tmp_path / "checkpoint-40" / "payload.txt").read_text() == "step 40 again"
    assert [p.name for p in tmp_path.glob("checkpoint-*")] == ["checkpoint-40"]
    with pytest.raises(ValueError, match=r"keep_last \(0\) must be >= 1"):
        save_checkpoint(tmp_path, 50, write_marker(""), keep_last=0)


def test_disk_full_keeps_previous_checkpoint_latest(tmp_path):
    save_checkpoint(tmp_path, 1, write_marker("good"))

    def write_until_disk_full(directory: Path) -> None:
        (directory / "model.safetensors").write_bytes(b"x" * 1024)  # part of the checkpoint got written...
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # ...then the disk filled up

    with pytest.raises(CheckpointError) as caught:
        save_checkpoint(tmp_path, 2, write_until_disk_full)
    message = str(caught.value)
    assert "checkpoint-2" in message and "disk full" in message
    assert f"the latest checkpoint is still {tmp_path / 'checkpoint-1'}" in message
    assert (tmp_path / "latest").read_text().strip() == "checkpoint-1"
    assert (tmp_path / "checkpoint-1" / "payload.txt").read_text() == "good"
    assert not (tmp_path / "checkpoint-2").exists() and tmp_dirs(tmp_path) == []


def test_first_save_failing_says_no_checkpoint_exists(tmp_path):
    def broken(directory: Path) -> None:
        raise ValueError("tensor is on the meta device")

    with pytest.raises(CheckpointError, match=r"ValueError: tensor is on the meta device; no earlier checkpoint"):
        save_checkpoint(tmp_path, 5, broken)
    assert list(tmp_path.iterdir()) == []


def test_process_killed_mid_write_leaves_previous_checkpoint_usable(tmp_path):
    # A real process is SIGKILLed while its write() sleeps: its temp dir stays behind, resolve ignores it, and the
    # next successful save removes it. The child signals through a file once it is inside write().
    save_checkpoint(tmp_path, 1, write_marker("before the crash"))
    ready = tmp_path.parent / f"{tmp_path.name}-ready"
    child = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from detox.checkpoint import save_checkpoint

        def slow_write(directory):
            (directory / "model.safetensors").write_bytes(b"half")
            Path({str(ready)!r}).touch()
            time.sleep(60)

        save_checkpoint(Path({str(tmp_path)!r}), 2, slow_write)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-c", child], env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert process.poll() is None, "the child exited before reaching write()"
            assert time.monotonic() < deadline, "the child never reached write()"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()

    assert tmp_dirs(tmp_path) == [f".tmp-checkpoint-2-{process.pid}"]
    assert resolve_checkpoint("latest", tmp_path) == tmp_path / "checkpoint-1"
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        resolve_checkpoint(tmp_path / tmp_dirs(tmp_path)[0], tmp_path)

    save_checkpoint(tmp_path, 3, write_marker("after the crash"))
    assert tmp_dirs(tmp_path) == []
    assert resolve_checkpoint("latest", tmp_path) == tmp_path / "checkpoint-3"


# ---------------------------------------------------------------- resolve_checkpoint


def test_resolve_checkpoint_accepts_latest_run_dir_and_checkpoint_dir(tmp_path):
    run = tmp_path / "run"
    save_checkpoint(run, 1, write_marker("a"))
    save_checkpoint(run, 2, write_marker("b"))
    assert resolve_checkpoint("latest", run) == run / "checkpoint-2"
    assert resolve_checkpoint(run, tmp_path / "elsewhere") == run / "checkpoint-2"
    assert resolve_checkpoint(str(run / "checkpoint-1"), run) == run / "checkpoint-1"


def test_resolve_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match=r"no checkpoint exists yet in .*Start without resume_from"):
        resolve_checkpoint("latest", tmp_path)
    with pytest.raises(CheckpointError, match=r"nowhere does not exist"):
        resolve_checkpoint(tmp_path / "nowhere", tmp_path)
    (tmp_path / "model.bin").write_text("")
    with pytest.raises(CheckpointError, match=r"is a file; pass a checkpoint-<step> directory"):
        resolve_checkpoint(tmp_path / "model.bin", tmp_path)
    (tmp_path / "checkpoint-3").mkdir()
    with pytest.raises(CheckpointError, match=r"checkpoint-3 is not a complete checkpoint \(no COMPLETE file\)"):
        resolve_checkpoint(tmp_path / "checkpoint-3", tmp_path)
    (tmp_path / "latest").write_text("checkpoint-9\n")
    with pytest.raises(CheckpointError, match=r"points to .*checkpoint-9, which does not exist"):
        resolve_checkpoint("latest", tmp_path)
    (tmp_path / "latest").write_text("../../etc\n")
    with pytest.raises(CheckpointError, match=r"holds '\.\./\.\./etc', not a checkpoint-<step> name"):
        resolve_checkpoint("latest", tmp_path)
