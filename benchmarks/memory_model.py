"""Peak memory of each preset's PPO step at full depth, extrapolated from runs at a few depths at full width.

    python -m benchmarks.memory_model [--presets gpt-j-6b ...] [--depths 1 2 4] [--check_depth N]

For each preset, `benchmarks/scale.py` runs one PPO step (one PPO epoch: the peak is reached in the first epoch,
once the optimizer state exists) at each depth in its own process, at the preset's width, dtype and batch. The
peaks of each phase are fitted with peak(L) = fixed + per_layer * L and the largest phase line is evaluated at the
preset's full depth (detox.memory_model.StepFit). `--check_depth` also measures that depth and prints the prediction's error. Beside the fit,
the analytic parts (weights, trainable state, activations, KV cache, logits) say where the memory goes.

On CPU the measured peak is the resident-set peak above the process's resident size before the model was built;
on a GPU it is torch.cuda.max_memory_allocated. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.harness import module, run
from benchmarks.scale import PRESETS, model_config, run_config
from detox.memory_model import GIB, StepFit, analytic_parts, analytic_peak, architecture_of, step_shape_of

MEASURE_FLAGS = ("--steps", "1", "--ppo.ppo_epochs", "1")
"""One step of one epoch reaches the peak (see the module docstring) at a fraction of a full step's time."""


STEADY_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024), "MALLOC_TRIM_THRESHOLD_": str(128 * 1024)}
"""glibc moves its mmap threshold after large frees, so whether a tensor's memory stays resident after it is freed
depends on the run's history; a fixed threshold makes the resident-set peaks follow the memory in use."""


def measure_peaks(preset: str, layers: int, width: int | None = None, extra: tuple[str, ...] = ()) -> dict[str, float]:
    """Bytes at the peak of each phase of one PPO step of `preset` with `layers` layers, measured in a fresh
    process (on CPU: above the resident size before the model was built)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scale.json"
        run(module("benchmarks.scale", "--preset", preset, "--layers", layers, *(["--width", width] if width else []),
                   *MEASURE_FLAGS, "--json", out, *extra), log=Path(tmp) / "scale.log", env=STEADY_ALLOCATOR)
        figures = json.loads(out.read_text())
    return {key.split("/", 1)[1]: value * GIB for key, value in figures.items() if key.startswith("peak_gib/")}


def default_depths(preset: str) -> list[int]:
    """1, 2 and 4 layers; twice that when the reference shares a fraction of the layers that a depth of 1 cannot
    keep (gpt-neo-125m shares 6 of 12: 1, 2 and 4 of 2, 4 and 8)."""
    full = model_config(preset).num_hidden_layers
    shared = run_config(preset, 1, tempfile.gettempdir(), None, full, []).model.num_shared_layers
    step = full // shared if shared else 1
    return [step, 2 * step, 4 * step]


def analytic_row(preset: str, depth: int, width: int | None) -> dict[str, float]:
    """GiB of each analytic part, and the analytic peak, at `depth` layers."""
    config = model_config(preset, depth, width)
    cfg = run_config(preset, 1, tempfile.gettempdir(), depth, model_config(preset).num_hidden_layers, [])
    parts = analytic_parts(architecture_of(config), step_shape_of(cfg, depth))
    row = {name: (fixed + per_layer * depth) / GIB for name, (fixed, per_layer) in parts.items()}
    row["peak"] = analytic_peak(parts, depth) / GIB
    row["per_layer"] = sum(per_layer for name, (_, per_layer) in parts.items() if name != "activations") / GIB
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", choices=PRESETS, default=list(PRESETS))
    parser.add_argument("--depths", nargs="+", type=int, default=None, help="default: see default_depths")
    parser.add_argument("--width", type=int, default=None, help="hidden size (default: the preset's width)")
    parser.add_argument("--check_depth", type=int, default=None, help="also measure this depth and compare")
    args = parser.parse_args(argv)
    lines = ["| preset | measured peak (GiB) at depths | largest phase at full depth: fixed + per layer (GiB) "
             "| analytic per layer (GiB) "
             "| full depth | predicted peak (GiB) | analytic peak (GiB) |", "|---|---|---|---|---|---|---|"]
    for preset in args.presets:
        depths = args.depths or default_depths(preset)
        peaks = []
        for depth in depths:
            peaks.append(measure_peaks(preset, depth, args.width))
            phases = ", ".join(f"{name} {value / GIB:.3f}" for name, value in peaks[-1].items())
            print(f"{preset} at {depth} layers, peak per phase (GiB): {phases}", flush=True)
        fit = StepFit.fit(depths, peaks)
        full = model_config(preset).num_hidden_layers
        for name, line in fit.phases.items():
            print(f"{preset} {name}: {line.fixed / GIB:.3f} + {line.per_layer / GIB:.4f} L GiB")
        analytic = analytic_row(preset, full, args.width)
        parts = ", ".join(f"{k} {analytic[k]:.2f}" for k in ("weights", "trainable_state", "activations",
                                                             "kv_cache", "logits"))
        print(f"{preset} analytic parts at {full} layers (GiB): {parts}")
        measured = ", ".join(f"{d}: {max(p.values()) / GIB:.3f}" for d, p in zip(depths, peaks))
        top = fit.phases[fit.peak_phase(full)]
        lines.append(f"| {preset} | {measured} | {fit.peak_phase(full)}: {top.fixed / GIB:.3f} + "
                     f"{top.per_layer / GIB:.4f} L | {analytic['per_layer']:.4f} | {full} | {fit.predict(full) / GIB:.2f} "
                     f"| {analytic['peak']:.2f} |")
        if args.check_depth:
            actual = max(measure_peaks(preset, args.check_depth, args.width).values())
            predicted = fit.predict(args.check_depth)
            print(f"{preset} at {args.check_depth} layers: predicted {predicted / GIB:.3f} GiB, measured "
                  f"{actual / GIB:.3f} GiB ({predicted / actual - 1:+.1%})", flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
