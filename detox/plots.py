"""Training-curve PNGs from metrics.jsonl, so a run can be read without any dashboard.

Uses matplotlib's object API with the Agg canvas (no pyplot), so importing this module changes no global backend.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

_PANEL_SIZE = (5.0, 3.0)  # inches per panel
_DPI = 80


@dataclass(frozen=True)
class _Panel:
    name: str  # file name part: curve_<name>.png
    key: str  # metric drawn on the left axis
    std_key: str | None = None  # shaded band of +- one standard deviation, when logged
    twin_key: str | None = None  # metric on a right axis, for a different scale (kl_coef beside kl)


def read_metrics(metrics_jsonl: Path) -> dict[str, tuple[list[int], list[float]]]:
    """{metric: (steps, values)} sorted by step; for a step logged twice (a resumed run) the later line wins."""
    by_key: dict[str, dict[int, float]] = {}
    for number, line in enumerate(Path(metrics_jsonl).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            step = int(row["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{metrics_jsonl}:{number}: not a metrics row with a 'step' ({err}).") from None
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                by_key.setdefault(key, {})[step] = float(value)
    return {key: (sorted(s), [s[i] for i in sorted(s)]) for key, s in by_key.items()}


def _panels(keys: set[str]) -> list[_Panel]:
    panels = [_Panel("reward_total", "reward/total")]
    components = sorted({m.group(1) for k in keys if (m := re.fullmatch(r"reward/([^/]+)(/mean)?", k))} - {"total"})
    for name in components:
        key = f"reward/{name}/mean" if f"reward/{name}/mean" in keys else f"reward/{name}"
        panels.append(_Panel(f"reward_{name}", key, std_key=f"reward/{name}/std"))
    judges = sorted({m.group(1) for k in keys if (m := re.fullmatch(r"judge/([^/]+)/mean", k))})
    # each judge against the total reward on a second axis: a reward that climbs while a judge stays flat means the
    # policy learned the reward model's blind spots
    panels += [_Panel(f"judge_{name}", f"judge/{name}/mean", twin_key="reward/total") for name in judges]
    panels += [
        _Panel("kl", "objective/kl", twin_key="objective/kl_coef"),
        _Panel("entropy", "objective/entropy"),
        _Panel("value_loss", "ppo/loss/value"),
        # loss-based unlearning baselines (train_unlearn.py)
        _Panel("loss", "loss/total"),
        _Panel("forget_nll", "forget/nll"),
        _Panel("retain_nll", "retain/nll"),
        _Panel("npo_log_ratio", "npo/log_ratio"),
    ]
    return [p for p in panels if p.key in keys]


def _draw(ax, panel: _Panel, series: dict[str, tuple[list[int], list[float]]]) -> None:
    steps, values = series[panel.key]
    ax.plot(steps, values, color="C0", marker="." if len(steps) < 30 else None, label=panel.key)
    if panel.std_key in series:
        std_steps, std = series[panel.std_key]
        std_at = dict(zip(std_steps, std))
        shared = [(s, v, std_at[s]) for s, v in zip(steps, values) if s in std_at]
        if shared:
            s, v, d = zip(*shared)
            ax.fill_between(s, [a - b for a, b in zip(v, d)], [a + b for a, b in zip(v, d)], color="C0", alpha=0.2)
    ax.set_title(panel.key, fontsize=10)
    ax.set_xlabel("step")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if panel.twin_key in series:
        twin = ax.twinx()
        twin.plot(*series[panel.twin_key], color="C1", linestyle="--", label=panel.twin_key)
        twin.set_ylabel(panel.twin_key, color="C1")
        ax.set_title(f"{panel.key} (- -: {panel.twin_key})", fontsize=10)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: only drawing a picture needs matplotlib
    from matplotlib.figure import Figure  # lazy: only drawing a picture needs matplotlib

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_curves(metrics_jsonl: Path, out_dir: Path) -> list[Path]:
    """Write curve_<group>.png per metric group present (reward/total, each reward component, KL with its
    coefficient, entropy, value loss) and training_curves.png with every panel; returns the paths written.
    Missing metrics are skipped; a file without any of them writes nothing."""
    series = read_metrics(metrics_jsonl)
    panels = _panels(set(series))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for panel in panels:
        fig = _figure(*_PANEL_SIZE)
        _draw(fig.add_subplot(), panel, series)
        written.append(out_dir / f"curve_{re.sub(r'[^A-Za-z0-9_.-]', '_', panel.name)}.png")
        fig.savefig(written[-1])
    if panels:
        ncols = min(3, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        fig = _figure(_PANEL_SIZE[0] * ncols, _PANEL_SIZE[1] * nrows)
        for i, panel in enumerate(panels):
            _draw(fig.add_subplot(nrows, ncols, i + 1), panel, series)
        written.append(out_dir / "training_curves.png")
        fig.savefig(written[-1])
    return written
