"""Atomic checkpoints and exact resume: the directory protocol, pickle-free state files, and RNG state.

Layout under a run's output directory:
    checkpoint-<step>/            one complete checkpoint; `COMPLETE` is the last file written into it
    latest                        text file holding the name of the newest checkpoint directory
    .tmp-checkpoint-<step>-<pid>* work in progress (or left by a killed process): ignored, removed by the next save

A checkpoint is written into a temporary directory, fsynced, and renamed into place, and only then does `latest`
move (itself replaced atomically), so a crash or a full disk at any moment leaves the previous checkpoint usable.
What goes inside a checkpoint is the caller's `write(directory)`; this module does not know about trainers.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

COMPLETE_MARKER = "COMPLETE"
"""File written last inside a checkpoint; a directory without it is never resumed from."""

LATEST_FILE = "latest"
CHECKPOINT_PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-checkpoint-"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
_TMP_RE = re.compile(r"^\.tmp-checkpoint-\d+-(?P<pid>\d+)")
_LATEST_TMP_RE = re.compile(r"^\.latest\.tmp-(?P<pid>\d+)$")
_STATE_FORMAT = "detox-state"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, found or read; the message says what is still safe to resume from."""


# ---------------------------------------------------------------- saving


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(directory: Path) -> None:
    for parent, _, files in os.walk(directory):
        for name in files:
            _fsync_path(Path(parent) / name)
        _fsync_path(Path(parent))


def _read_latest(root: Path) -> str | None:
    path = root / LATEST_FILE
    return path.read_text().strip() if path.is_file() else None


def _describe_latest(root: Path) -> str:
    latest = _read_latest(root)
    if latest is None:
        return f"no earlier checkpoint exists in {root}"
    return f"the latest checkpoint is still {root / latest}"


def _describe_error(error: BaseException) -> str:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return f"disk full ({error})"
    return f"{type(error).__name__}: {error}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, path) of every `checkpoint-<step>` directory under root, oldest step first."""
    found = []
    for path in root.iterdir():
        match = _CHECKPOINT_RE.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def _write_latest(root: Path, name: str) -> None:
    tmp = root / f".{LATEST_FILE}.tmp-{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write(name + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, root / LATEST_FILE)
    _fsync_path(root)


def _remove_stale(root: Path) -> None:
    """Delete temporary files and directories of processes that no longer run (a live writer's are left alone)."""
    for path in root.iterdir():
        match = _TMP_RE.match(path.name) or _LATEST_TMP_RE.match(path.name)
        if match is None:
            continue
        pid = int(match.group("pid"))
        if pid != os.getpid() and _pid_alive(pid):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _discard(path: Path, step: int, reason: str) -> None:
    """Rename a checkpoint out of the namespace first, so a crash mid-delete never leaves a half checkpoint."""
    doomed = path.with_name(f"{TMP_PREFIX}{step}-{os.getpid()}-{reason}")
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def save_checkpoint(root: Path, step: int, write: Callable[[Path], None], keep_last: int | None = None) -> Path:
    """Write `root/checkpoint-<step>` atomically with `write(tmpdir)`, point `root/latest` at it, prune old ones.

    keep_last: keep this many checkpoints (by step), deleting the oldest first; None keeps all. The checkpoint just
    written is never deleted. An existing checkpoint of the same step is replaced. If anything fails before the
    rename (a full disk included), the temporary directory is removed, `latest` and older checkpoints are not
    touched, and a CheckpointError says which checkpoint is still the latest. Returns the checkpoint directory.
    """
    if type(step) is not int or step < 0:
        raise ValueError(f"step ({step!r}) must be a non-negative int: it names the directory checkpoint-<step>.")
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last ({keep_last}) must be >= 1, or None to keep every checkpoint.")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"{CHECKPOINT_PREFIX}{step}"
    final = root / name
    tmp = root / f"{TMP_PREFIX}{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        write(tmp)
        (tmp / COMPLETE_MARKER).write_text(f"{step}\n")
        _fsync_tree(tmp)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(error, Exception):  # KeyboardInterrupt / SystemExit: clean up, then let it through
            raise
        raise CheckpointError(
            f"saving checkpoint {name} in {root} failed: {_describe_error(error)}; {_describe_latest(root)}."
        ) from error

    try:
        if final.exists():
            # rename() cannot replace a non-empty directory: move the old copy aside first, drop it after.
            replaced = root / f"{TMP_PREFIX}{step}-{os.getpid()}-replaced"
            shutil.rmtree(replaced, ignore_errors=True)
            os.rename(final, replaced)
            os.rename(tmp, final)
            shutil.rmtree(replaced, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_path(root)
        _write_latest(root, name)
    except OSError as error:
        raise CheckpointError(
            f"checkpoint {name} was written but could not be made the latest: {_describe_error(error)}; "
            f"{_describe_latest(root)}."
        ) from error

    _remove_stale(root)
    if keep_last is not None:
        older = [(s, path) for s, path in _checkpoints(root) if path != final]
        for old_step, path in older[: max(0, len(older) + 1 - keep_last)]:
            _discard(path, old_step, "pruned")
    return final


# ---------------------------------------------------------------- resolving


def _check_complete(path: Path, how: str) -> Path:
    if not path.is_dir():
        hint = ""
        match = _CHECKPOINT_RE.match(path.name)
        if match:
            hint = (
                f" A save may have been killed while replacing it: look for {TMP_PREFIX}{match.group(1)}-*"
                f" in {path.parent} and rename it to {path.name}."
            )
        raise CheckpointError(f"{how} points to {path}, which does not exist.{hint}")
    if not (path / COMPLETE_MARKER).is_file():
        raise CheckpointError(
            f"{path} is not a complete checkpoint (no {COMPLETE_MARKER} file): it was not fully written, or it is "
            f"not a checkpoint directory. Resume from an earlier checkpoint-<step> directory instead."
        )
    return path


def _follow_latest(run_dir: Path, how: str) -> Path:
    name = _read_latest(run_dir)
    if not name or not _CHECKPOINT_RE.match(name):
        raise CheckpointError(
            f"{run_dir / LATEST_FILE} holds {name!r}, not a checkpoint-<step> name; delete it or fix its content."
        )
    return _check_complete(run_dir / name, how)


def resolve_checkpoint(root_or_path: str | Path, output_dir: Path) -> Path:
    """The checkpoint directory to resume from.

    root_or_path: "latest" (the newest checkpoint of `output_dir`), a checkpoint directory, or a run directory
    holding a `latest` file. The result is verified to be complete; every failure is a CheckpointError.
    """
    output_dir = Path(output_dir)
    if str(root_or_path) == LATEST_FILE:
        if not (output_dir / LATEST_FILE).is_file():
            raise CheckpointError(
                f"resume_from='latest' but no checkpoint exists yet in {output_dir} (no {LATEST_FILE} file there). "
                f"Start without resume_from, or pass the path of a checkpoint directory."
            )
        return _follow_latest(output_dir, f"{output_dir / LATEST_FILE}")
    path = Path(root_or_path)
    if not path.exists():
        raise CheckpointError(f"resume_from={str(root_or_path)!r}: {path} does not exist.")
    if not path.is_dir():
        raise CheckpointError(
            f"resume_from={str(root_or_path)!r} is a file; pass a checkpoint-<step> directory, a run directory "
            f"with a {LATEST_FILE} file, or 'latest'."
        )
    if (path / LATEST_FILE).is_file():
        return _follow_latest(path, f"{path / LATEST_FILE}")
    return _check_complete(path, f"resume_from={str(root_or_path)!r}")


# ---------------------------------------------------------------- pickle-free state files


class _Flattener:
    """Turns a nested state into a JSON skeleton plus a flat {key: tensor} dict for safetensors."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._storages: set[int] = set()

    def _add(self, path: str, tensor: torch.Tensor) -> str:
        key, n = path or "root", 1
        while key in self.tensors:
            key, n = f"{path}#{n}", n + 1
        tensor = tensor.detach().cpu()
        storage = tensor.untyped_storage().data_ptr()
        # safetensors refuses tensors that share memory or are not contiguous; copy only those.
        if storage in self._storages or not tensor.is_contiguous():
            tensor = tensor.contiguous().clone()
        self._storages.add(tensor.untyped_storage().data_ptr())
        self.tensors[key] = tensor
        return key

    def encode(self, value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            if value.layout != torch.strided:
                raise TypeError(f"state at {path!r}: only dense tensors can be saved, got layout {value.layout}.")
            return {"type": "tensor", "key": self._add(path, value)}
        if isinstance(value, (np.ndarray, np.generic)):
            array = np.asarray(value)
            if array.dtype.hasobject:
                raise TypeError(f"state at {path!r}: numpy arrays of Python objects cannot be saved without pickle.")
            # Raw bytes + numpy dtype string keep any numpy dtype exact (uint32 RNG keys, float16, ...).
            raw = torch.from_numpy(np.frombuffer(array.tobytes(), dtype=np.uint8).copy())
            kind = "ndarray" if isinstance(value, np.ndarray) else "npscalar"
            return {"type": kind, "key": self._add(path, raw), "dtype": array.dtype.str, "shape": list(array.shape)}
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            # JSON has no NaN/inf; repr() round-trips them (and every finite float) exactly through float().
            return value if math.isfinite(value) else {"type": "float", "value": repr(value)}
        if isinstance(value, dict):
            items = []
            for key, item in value.items():
                if type(key) not in (str, int):
                    raise TypeError(f"state at {path!r}: dict keys must be str or int, got {type(key).__name__}.")
                items.append([key, self.encode(item, f"{path}/{key}" if path else str(key))])
            return {"type": "dict", "items": items}
        if isinstance(value, list) or type(value) is tuple:
            items = [self.encode(item, f"{path}/{i}" if path else str(i)) for i, item in enumerate(value)]
            return {"type": "list" if isinstance(value, list) else "tuple", "items": items}
        raise TypeError(
            f"state at {path!r}: cannot save a {type(value).__name__} without pickle; convert it to tensors, "
            f"numpy arrays, dicts, lists, tuples or Python scalars."
        )


def _decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if not isinstance(node, dict):
        return node
    kind = node["type"]
    if kind == "tensor":
        return tensors[node["key"]]
    if kind in ("ndarray", "npscalar"):
        array = np.frombuffer(tensors[node["key"]].numpy().tobytes(), dtype=np.dtype(node["dtype"]))
        array = array.reshape(node["shape"]).copy()
        return array if kind == "ndarray" else array[()]
    if kind == "float":
        return float(node["value"])
    if kind == "dict":
        return {key: _decode(item, tensors) for key, item in node["items"]}
    items = [_decode(item, tensors) for item in node["items"]]
    return items if kind == "list" else tuple(items)


def save_tensors_and_json(directory: Path, name: str, state: Any) -> None:
    """Store a nested state as `<name>.safetensors` (every tensor/array) and `<name>.json` (the structure).

    Supports dicts with str or int keys, lists, tuples, torch tensors (any dtype; loaded back on CPU, without
    requires_grad), numpy arrays and scalars, and Python None/bool/int/float/str. No pickle is involved.
    """
    flattener = _Flattener()
    skeleton = flattener.encode(state, "")
    directory = Path(directory)
    save_file(flattener.tensors, str(directory / f"{name}.safetensors"))
    document = {"format": _STATE_FORMAT, "version": 1, "state": skeleton}
    (directory / f"{name}.json").write_text(json.dumps(document, allow_nan=False))


def load_tensors_and_json(directory: Path, name: str) -> Any:
    """Inverse of `save_tensors_and_json`: the same structure, types, dtypes and values."""
    directory = Path(directory)
    json_path, tensor_path = directory / f"{name}.json", directory / f"{name}.safetensors"
    for path in (json_path, tensor_path):
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: {directory} does not hold a saved '{name}' state.")
    document = json.loads(json_path.read_text())
    if document.get("format") != _STATE_FORMAT:
        raise CheckpointError(f"{json_path} is not a detox state file (format {document.get('format')!r}).")
    return _decode(document["state"], load_file(str(tensor_path)))


# ---------------------------------------------------------------- RNG state


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG a training step draws from: Python, NumPy, torch CPU and (if present) each CUDA device."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": numpy_state["state"]["key"].tolist(),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`. CUDA states are restored for the devices present; a mismatch warns."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {"key": np.asarray(numpy_state["key"], dtype=np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    cuda_states = list(state["cuda"])
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(cuda_states) != available:
        warnings.warn(
            f"the checkpoint holds CUDA RNG states for {len(cuda_states)} devices but {available} are visible; "
            f"restoring the first {min(len(cuda_states), available)}, so CUDA sampling will not replay exactly.",
            stacklevel=2,
        )
    for device, cuda_state in enumerate(cuda_states[:available]):
        torch.cuda.set_rng_state(cuda_state, device)
