"""What turning off the frozen-trunk cache costs: the same run with and without it, seconds per phase.

    python benchmarks/trunk_cost.py [--steps 4] [--shared 20] [train_ppo.py flags ...]

The cache applies to full fine-tuning of a Llama-style decoder whose reference shares its lower layers (the offline
SmolLM2 here, 20 of 30 layers shared by default). Sharded runs (FSDP, DeepSpeed ZeRO-3) need LoRA, where the cache
never applies; this measures what a run gives up when it is off. Each run is the real train_ppo.py pipeline in this
process, alternating on and off `--repeats` times with the same seed; the first step of each run is dropped
(one-off costs) and the medians are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PHASES = ("generate", "forward", "update", "step")


def timed_run(argv: list[str], trunk: bool) -> dict[str, float]:
    """Median seconds per phase over the steps after the first, with the trunk cache on or off."""
    import json

    from detox.jobs import train_ppo

    with tempfile.TemporaryDirectory(prefix="trunk-") as out:
        run = train_ppo.build([*argv, "--checkpoint.output_dir", out])
        if not trunk:
            run.trainer.models.trunk_layers = 0
        layers = run.trainer.models.trunk_layers
        train_ppo.run(run)
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("step", 0) > 1 and "time/step" in r]
    return {"trunk_layers": layers, **{p: statistics.median(r[f"time/{p}"] for r in rows) for p in PHASES}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--shared", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2, help="alternate on/off runs this many times each")
    args, extra = parser.parse_known_args()
    argv = ["--config", str(REPO / "configs" / "offline_profanity.yaml"), "--lora.enabled", "false",
            "--model.num_shared_layers", str(args.shared), "--ppo.steps", str(args.steps),
            "--checkpoint.save_every", str(args.steps), "--logging.report_to", "none", "--logging.probes", "[]",
            *extra]
    runs: dict[str, list[dict[str, float]]] = {"cache on": [], "cache off": []}
    for _ in range(args.repeats):  # alternating, so a change in the machine's load hits both alike
        for name, trunk in (("cache on", True), ("cache off", False)):
            runs[name].append(timed_run(argv, trunk))
    results = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    for name, r in results.items():
        phases = ", ".join(f"{p} {r[p]:.2f} s" for p in PHASES)
        print(f"{name} (trunk layers {r['trunk_layers']}): {phases}")
    on, off = results["cache on"]["step"], results["cache off"]["step"]
    print(f"turning the cache off costs {off - on:+.2f} s per step ({off / on - 1:+.1%})")


if __name__ == "__main__":
    main()
