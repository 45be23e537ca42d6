"""What every benchmark shares: running a script or module from the repository root, a measurement over seeds, and
the intervals the tables print.

Intervals over prompts are detox.metrics' percentile bootstraps (the prompt is the resampled unit there too); this
module adds the t-interval over seeds, how a table reads one run's interval or several seeds', and the bootstrap of a
statistic that is not a mean (an AUC of two samples) or of replicates a benchmark draws itself.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
from scipy import stats

from detox.checkpoint import LATEST_FILE
from detox.launch import RUN_FILES
from detox.metrics import bootstrap_ci

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
"""The real data beside the checkout (RealToxicityPrompts, Davidson, Tiny Shakespeare)."""
TAIL_LINES = 40
"""Lines of a failed command's output that its error repeats."""
TAIL_BYTES = 1 << 16
"""Output kept to find those lines in."""

T = TypeVar("T")


class CommandFailed(RuntimeError):
    """A command a benchmark started exited non-zero; the message holds its exit status and the tail of its output."""


def module(name: str, *args: object) -> list[str]:
    """`python -m name args...` with this interpreter."""
    return [sys.executable, "-m", name, *map(str, args)]


def script(path: str, *args: object) -> list[str]:
    """`python path args...` with this interpreter; `path` is relative to the repository root (e.g. train_ppo.py)."""
    return [sys.executable, path, *map(str, args)]


def continue_flags(out: Path) -> list[str]:
    """Flags that let a training script take up an interrupted run in `out`: resume from its latest checkpoint, or
    start afresh over one that saved none (the scripts refuse to start over an earlier run unless told)."""
    if (out / LATEST_FILE).is_file():
        return ["--checkpoint.resume_from_checkpoint", LATEST_FILE]
    if any((out / name).exists() for name in RUN_FILES):
        return ["--checkpoint.overwrite", "true"]
    return []


def run(command: Sequence[object], log: Path | None = None, env: Mapping[str, str | None] | None = None) -> float:
    """Run `command` from the repository root and return its wall-clock seconds.

    The Hub is offline, W&B local and Python's output unbuffered unless the environment says otherwise; `env` adds
    variables, and a None value removes one. The output (stdout and stderr together) goes to `log` when given, else to
    this process's stdout as it comes. A non-zero exit raises CommandFailed with the command, its exit status and the
    last TAIL_LINES lines of its output, so that a failure reads from the benchmark's own error.
    """
    command = [str(part) for part in command]
    merged = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"} | dict(os.environ)
    merged |= dict(env or {})
    print("$", " ".join(command), flush=True)
    tail = b""
    start = time.perf_counter()
    with open(log, "wb") if log else nullcontext(_stdout_bytes()) as out, subprocess.Popen(
            command, cwd=REPO, env={k: v for k, v in merged.items() if v is not None}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT) as proc:
        # chunks, not lines: progress bars redraw their line with carriage returns
        while chunk := proc.stdout.read1(1 << 16):
            out.write(chunk)
            out.flush()
            tail = (tail + chunk)[-TAIL_BYTES:]
    if proc.returncode:
        lines = tail.decode(errors="replace").replace("\r", "\n").splitlines()[-TAIL_LINES:]
        where = f" (whole output in {log})" if log else ""
        raise CommandFailed(f"command failed with exit status {proc.returncode}{where}: {' '.join(command)}\n"
                            f"last {len(lines)} lines of its output:\n" + "\n".join(lines))
    return time.perf_counter() - start


def _stdout_bytes() -> BinaryIO:
    """This process's stdout as bytes (a test's captured stdout has a buffer too)."""
    sys.stdout.flush()
    return sys.stdout.buffer


def over_seeds(measure: Callable[[int], T], seeds: Sequence[int]) -> dict[int, T]:
    """`measure(seed)` for each seed, one after another (never side by side: runs would share the CPU and time each
    other's load), by seed."""
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"seeds ({list(seeds)}) must be one or more distinct numbers.")
    return {seed: measure(seed) for seed in seeds}


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` (one per seed) and its Student-t interval; needs two values or more."""
    if len(values) < 2:
        raise ValueError(f"t_interval: {len(values)} value(s); a t-interval needs at least two seeds.")
    mean = statistics.fmean(values)
    half = stats.t.ppf((1 + confidence) / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def seed_interval(values: Sequence[float], lows: Sequence[float], highs: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high) over seeds: the 95% t-interval with several seeds; with one, that run's own interval
    (`lows[0]`, `highs[0]`: a bootstrap over prompts), the only spread one run has."""
    if len(values) == 1:
        return values[0], lows[0], highs[0]
    return t_interval(values)


def mean_interval(values: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of `values` (one per prompt or text) with detox.metrics' 95% bootstrap interval."""
    low, high = bootstrap_ci(values, n_boot, seed)
    return float(np.mean(values)), low, high


def percentile_interval(replicates: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """The (1 - alpha) percentile interval of bootstrap `replicates` (samples, ...) along the first axis. NaN
    replicates (a statistic with nothing to measure in a draw) are left out; a statistic never measured gets NaN."""
    with warnings.catch_warnings():  # an all-NaN column warns: its NaN interval is the answer
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(np.asarray(replicates, dtype=np.float64),
                                     [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    return low, high


def bootstrap_interval(statistic: Callable[..., float], samples: Sequence[np.ndarray], n_boot: int = 1000,
                       seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of `statistic(*samples)`, each replicate redrawing every sample on its own (with
    replacement, its own size): for statistics of independent samples, such as an AUC of two sets."""
    rng = np.random.default_rng(seed)
    replicates = np.array([statistic(*(rng.choice(s, s.size) for s in samples)) for _ in range(n_boot)])
    low, high = percentile_interval(replicates)
    return float(low), float(high)
