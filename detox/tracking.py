"""Trackers: W&B (offline on its own without a key or network), tensorboard, trackio or none, and local files.

The main process gets a `MainTracker`; every other rank gets a `Tracker`, whose methods do nothing, so the loop
never asks `if wandb:` or `if is_main_process:`. Whatever `report_to` says, rank 0 writes to the run directory:

    config.yaml      the resolved config, secrets removed
    metrics.jsonl    one JSON object per `log` call: {"step": s, "<name>": value, ...}; NaN/inf are written as null
    samples.jsonl    one JSON object per sample row, with its "step"
    curve_*.png      training curves, drawn by `finish` (see detox/plots.py)

Metric names share one namespace (METRIC_NAMES below; per-component rewards are `reward/<name>/mean|std`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import netrc
import os
import re
import socket
import struct
import sys
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary

from detox.config import LoggingConfig
from detox.plots import plot_curves

METRIC_NAMES = (
    "objective/kl",  # mean KL(policy || reference) per sequence, in nats
    "objective/kl_coef",  # beta of the KL penalty
    "objective/entropy",  # mean per-token entropy of the policy on its samples
    "reward/total",  # mean total (weighted) reward of the rollout batch
    "ppo/loss/policy",
    "ppo/loss/value",
    "ppo/clipfrac",
    "ppo/approxkl",
    "ppo/returns/mean",
    "time/generate",  # seconds per phase of the step
    "time/score",
    "time/update",
    "memory/peak_gb",  # peak accelerator memory of the step
)
"""The fixed metric names; `reward/<component>/mean|std` and `probe/<context>/<token>` complete the namespace."""

REDACTED = "<redacted>"
_SECRET_ENV_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)
_SECRET_FIELD_NAME = re.compile(
    r"(api|access|private)[_-]?key|secret|passw|credential|(auth|hf)[_-]?token|^token$", re.I
)
_MIN_SECRET_LEN = 8  # shorter values ("1", "true") would blank out ordinary text
_TRACKERS = ("wandb", "tensorboard", "trackio")  # each is also the name of the package it needs


def _print0(message: str) -> None:
    """Print on the first process only; `accelerate launch` sets RANK before any Accelerator exists."""
    if os.environ.get("RANK", "0") == "0":
        print(message, flush=True)


def _secret_values(environ: dict[str, str] | None = None) -> list[str]:
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if _SECRET_ENV_NAME.search(k) and len(v) >= _MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)  # longest first, so a secret containing another goes whole


def redact(obj: Any, environ: dict[str, str] | None = None) -> Any:
    """Return `obj` as plain data (dicts, lists, scalars) with secrets replaced by "<redacted>".

    A secret is the value (>= 8 characters) of an environment variable whose name contains KEY, TOKEN, SECRET or
    PASSWORD, wherever it appears inside a string, and the whole value of a field named like a secret (`api_key`,
    `hf_token`, `token`, `password`, ...). Dataclasses become dicts, tuples lists and paths strings.
    """
    return _redact(obj, _secret_values(environ))


def _redact(obj: Any, secrets: list[str]) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {
            _redact(k, secrets): REDACTED if _SECRET_FIELD_NAME.search(str(k)) and v else _redact(v, secrets)
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [_redact(v, secrets) for v in obj]
    if isinstance(obj, Path):
        obj = str(obj)
    if isinstance(obj, str):
        for secret in secrets:
            obj = obj.replace(secret, REDACTED)
    return obj


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists -> {"ppo.learning_rate": 1e-4, "rewards.0.type": ...}: tensorboard's hparams take scalars."""
    flat: dict[str, Any] = {}
    items = config.items() if isinstance(config, dict) else enumerate(config)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (dict, list)) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (dict, list)) else value
    return flat


def _wandb_host() -> str:
    return urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"


def _wandb_offline_reason() -> str | None:
    """Why W&B must run offline, or None when it can go online. Reads only whether a key exists, never its value."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode == "disabled":  # the user turned W&B off; leave it off
        return None
    if mode in ("offline", "dryrun"):
        return "WANDB_MODE is offline"
    host = _wandb_host()
    has_key = bool(os.environ.get("WANDB_API_KEY"))
    if not has_key:
        try:
            has_key = netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
        except (FileNotFoundError, netrc.NetrcParseError, OSError):
            has_key = False
    if not has_key:
        return f"no WANDB_API_KEY and no ~/.netrc entry for {host}"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return f"{host} cannot be reached"
    return None


def accelerate_log_with(cfg: LoggingConfig) -> list[str] | None:
    """What to pass as `Accelerator(log_with=...)`; tensorboard also needs `Accelerator(project_dir=run_dir)`.

    For W&B without a key or network this sets WANDB_MODE=offline, so the run is written locally and can be
    uploaded later with `wandb sync`. A tracker whose package is missing is an error (accelerate would drop it).
    """
    if cfg.report_to == "none":
        return None
    package = cfg.report_to
    if package not in _TRACKERS:
        raise ValueError(f"logging.report_to ({package!r}) must be one of {[*_TRACKERS, 'none']}.")
    if importlib.util.find_spec(package) is None:
        raise ImportError(
            f"logging.report_to ({package!r}) needs the `{package}` package: `pip install {package}`, "
            f"or set --logging.report_to none to keep only the local files."
        )
    if cfg.report_to == "wandb":
        reason = _wandb_offline_reason()
        if reason is not None:
            os.environ["WANDB_MODE"] = "offline"
            _print0(f"W&B runs offline ({reason}); the run directory and its `wandb sync` command follow at start.")
    return [cfg.report_to]


class Tracker:
    """The tracker of non-main ranks (and the interface of `MainTracker`): every method does nothing."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Log scalar metrics at `step`."""

    def log_samples(self, rows: list[dict[str, Any]], step: int) -> None:
        """Log a table of samples (prompt, completion, each reward component) at `step`."""

    def log_images(self, images: dict[str, Path], step: int) -> None:
        """Log PNG/GIF files under the given names at `step`."""

    def finish(self) -> None:
        """End the trackers and draw the training curves."""


def make_tracker(cfg: LoggingConfig, accelerator, run_dir: Path, config: dict[str, Any]) -> Tracker:
    """Start the trackers named in `accelerate_log_with(cfg)` on the main process; a no-op `Tracker` elsewhere.

    `config` is the resolved run config (e.g. `detox.config.to_dict(cfg)`); it is stored with secrets removed.
    """
    if not accelerator.is_main_process:
        return Tracker()
    return MainTracker(cfg, accelerator, Path(run_dir), config)


class MainTracker(Tracker):
    """Rank 0: writes the local files and forwards everything to the accelerator's trackers."""

    def __init__(self, cfg: LoggingConfig, accelerator, run_dir: Path, config: dict[str, Any]):
        self.accelerator = accelerator
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        clean = redact(config)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(clean, sort_keys=False))
        name = redact(cfg.run_name or run_dir.resolve().name)  # W&B stores the run name in its run file
        accelerator.init_trackers(cfg.project, config=flatten(clean), init_kwargs=self._init_kwargs(name))
        self._sync_dir = self._wandb_offline_dir()
        if self._sync_dir is not None:
            print(f"W&B offline run: {self._sync_dir}\n  upload it later with: wandb sync {self._sync_dir}", flush=True)

    def _init_kwargs(self, name: str) -> dict[str, dict[str, Any]]:
        wandb_kwargs: dict[str, Any] = {"name": name, "dir": str(self.run_dir)}
        if "wandb" in map(str, self.accelerator.log_with) and redact(sys.argv) != sys.argv:
            # W&B stores the command line in its run metadata; drop the metadata rather than leak a secret.
            import wandb

            wandb_kwargs["settings"] = wandb.Settings(x_disable_meta=True)
            print("A secret appears on the command line: W&B system metadata is turned off for this run.")
        return {"wandb": wandb_kwargs, "trackio": {"name": name}}

    def _wandb_offline_dir(self) -> Path | None:
        run = self._backend("wandb")
        if run is None or run.tracker is None or run.tracker.settings.mode not in ("offline", "dryrun"):
            return None
        return Path(run.tracker.settings.sync_dir)

    def _backend(self, name: str):
        return next((t for t in self.accelerator.trackers if t.name == name), None)

    def _append(self, filename: str, rows: list[dict[str, Any]]) -> None:
        with open(self.run_dir / filename, "a") as f:
            for row in rows:
                f.write(json.dumps({k: _json_value(v) for k, v in row.items()}, allow_nan=False) + "\n")

    def log(self, metrics: dict[str, float], step: int) -> None:
        values = {}
        for key, value in redact(metrics).items():
            try:
                values[key] = float(value)
            except (TypeError, ValueError):
                raise TypeError(f"metric {key!r}: expected a number, got {type(value).__name__} ({value!r}).") from None
        self._append("metrics.jsonl", [{"step": step, **values}])
        self.accelerator.log(values, step=step)

    def log_samples(self, rows: list[dict[str, Any]], step: int) -> None:
        rows = [{k: _json_value(v) for k, v in row.items()} for row in redact(rows)]
        self._append("samples.jsonl", [{"step": step, **row} for row in rows])
        if not rows:
            return
        columns = list(dict.fromkeys(k for row in rows for k in row))
        data = [[row.get(c) for c in columns] for row in rows]
        for backend in self.accelerator.trackers:
            _TABLE_WRITERS[backend.name](backend.tracker, columns, data, step)

    def log_images(self, images: dict[str, Path], step: int) -> None:
        for name, path in images.items():
            if Path(path).suffix.lower() not in (".png", ".gif", ".jpg", ".jpeg"):
                raise ValueError(f"log_images: '{name}' is {path}; only .png, .gif and .jpg files are images.")
            if not Path(path).is_file():
                raise FileNotFoundError(f"log_images: '{name}' points to {path}, which does not exist.")
        for backend in self.accelerator.trackers:
            _IMAGE_WRITERS[backend.name](backend.tracker, {k: Path(v) for k, v in images.items()}, step)

    def finish(self) -> None:
        # Finish the trackers here rather than through accelerator.end_training(), which also destroys the process
        # group the caller may still need; emptying the list keeps a later end_training() from finishing twice.
        for backend in self.accelerator.trackers:
            backend.finish()
        self.accelerator.trackers.clear()
        if (self.run_dir / "metrics.jsonl").is_file():
            plot_curves(self.run_dir / "metrics.jsonl", self.run_dir)
        if self._sync_dir is not None:
            print(f"W&B offline run saved; upload it with: wandb sync {self._sync_dir}", flush=True)


def _json_value(value: Any) -> Any:
    """Tensors and numpy scalars become Python numbers; NaN/inf become null so every line stays strict JSON."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _wandb_table(run, columns: list[str], data: list[list[Any]], step: int) -> None:
    import wandb  # lazy: only runs that report to W&B need it, and importing wandb costs seconds

    run.log({"samples": wandb.Table(columns=columns, data=data)}, step=step)


def _wandb_images(run, images: dict[str, Path], step: int) -> None:
    import wandb  # lazy: only runs that report to W&B need it, and importing wandb costs seconds

    media = {k: wandb.Video(str(p)) if p.suffix.lower() == ".gif" else wandb.Image(str(p)) for k, p in images.items()}
    run.log(media, step=step)


def _tensorboard_table(writer, columns: list[str], data: list[list[Any]], step: int) -> None:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |" for row in data]
    writer.add_text("samples", "\n".join(lines), global_step=step)
    writer.flush()


def _tensorboard_images(writer, images: dict[str, Path], step: int) -> None:
    # The encoded file goes into the summary as is: tensorboard shows PNGs, and animates GIFs, without decoding.

    for tag, path in images.items():
        with Image.open(path) as image:
            (width, height), channels = image.size, {"L": 1, "LA": 2, "RGBA": 4}.get(image.mode, 3)
        encoded = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=path.read_bytes())
        writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=encoded)]), step)
    writer.flush()


def _trackio_table(run, columns: list[str], data: list[list[Any]], step: int) -> None:
    import pandas as pd  # lazy: pandas takes ~0.3 s to import; only .csv and .parquet files need it
    import trackio  # optional (the trackio extra): only a run that logs to trackio needs it

    run.log({"samples": trackio.Table(dataframe=pd.DataFrame(data, columns=columns))}, step=step)


def _trackio_images(run, images: dict[str, Path], step: int) -> None:
    import trackio  # optional (the trackio extra): only a run that logs to trackio needs it

    run.log({k: trackio.Image(str(p)) for k, p in images.items()}, step=step)


_TABLE_WRITERS = {"wandb": _wandb_table, "tensorboard": _tensorboard_table, "trackio": _trackio_table}
_IMAGE_WRITERS = {"wandb": _wandb_images, "tensorboard": _tensorboard_images, "trackio": _trackio_images}


_WANDB_HEADER = b":W&B" + (0xBEE1).to_bytes(2, "little") + bytes([0])  # ident, magic, version 0
_BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of [crc32 u32, length u16, type u8, data]
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _wandb_file(path: Path) -> Path:
    path = Path(path)
    if path.is_file() and path.suffix == ".wandb":
        return path
    found = sorted(path.rglob("run-*.wandb"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no W&B run file (run-*.wandb) under {path}; was the run logged with report_to wandb?")
    return found[-1]


def _wandb_records(path: Path):
    """Yield the protobuf `Record`s of a .wandb file, checking each chunk's CRC."""
    # lazy: only runs that report to W&B need it, and importing wandb costs seconds
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if not data.startswith(_WANDB_HEADER):
        raise ValueError(f"{path} is not a W&B run file (header {data[:7]!r}).")
    pos, pending = len(_WANDB_HEADER), b""
    while pos + 7 <= len(data):
        if _BLOCK - pos % _BLOCK < 7:  # a block's tail too short for a chunk header is zero padding
            pos += _BLOCK - pos % _BLOCK
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 or len(chunk) < length:  # end of what was flushed (a crashed run stops mid-block)
            return
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            raise ValueError(f"{path}: corrupt record at byte {pos - 7 - length} (CRC mismatch).")
        pending = chunk if kind in (_FULL, _FIRST) else pending + chunk
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def read_wandb_offline_history(run_dir_or_wandb_dir: Path) -> list[dict[str, Any]]:
    """The history rows (one dict per logged step, with "_step") of the newest W&B run under the directory.

    Accepts the run directory given to the tracker, its `wandb/` folder, an `offline-run-*` folder or the
    `.wandb` file itself. Media and tables come back as the dicts W&B stores for them ({"_type": ..., "path": ...}).
    """
    rows = []
    for record in _wandb_records(_wandb_file(run_dir_or_wandb_dir)):
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict[str, Any] = {}
        for item in record.history.item:
            keys = list(item.nested_key) or [item.key]
            node = row
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = json.loads(item.value_json)
        rows.append(row)
    return rows
