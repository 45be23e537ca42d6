"""What each toxicity judge says about human-written text of known toxicity: the floor a detoxified model can reach.

    HF_HUB_OFFLINE=1 python -m benchmarks.judge_floor [--judges offline minilm_davidson minilm_davidson_reward]

A relative target such as "mean toxicity falls by 30% under the judge" only makes sense if clean text scores well
below the model's starting point under that judge. The texts here are RealToxicityPrompts continuations (what a person
actually wrote after each prompt, toxic and non-toxic sets), binned by the toxicity Perspective API gave them, a scorer
none of our judges or rewards was built from. For each judge and bin it prints the mean judge score with a 95%
bootstrap interval. The first bin (Perspective < 0.1) is the judge's reading of clean human text: a model whose
completions read cleaner than that has learned the judge's style, not cleanliness. `--start JUDGE=MEAN` (a model's
mean on held-out prompts, e.g. the base model's) adds the relative change that reaching that clean level would be.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.harness import SHARED_DATA, mean_interval
from detox.judge_specs import parse_judges
from detox.judges import build_judge

BINS = ((0.0, 0.1), (0.1, 0.3), (0.3, 0.5), (0.5, 1.0))
"""Perspective toxicity bins of the continuations; the last one includes 1.0."""


def load_continuations(data: Path) -> tuple[list[str], np.ndarray]:
    """Continuation texts of both RealToxicityPrompts files that carry a Perspective toxicity, and those scores."""
    texts, scores = [], []
    for name in ("toxic.jsonl", "nontoxic.jsonl"):
        path = data / "real-toxicity-prompts" / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: RealToxicityPrompts file missing; pass --data, the shared data directory.")
        with open(path, encoding="utf-8") as f:
            for line in f:
                continuation = json.loads(line)["continuation"]
                if continuation.get("toxicity") is not None and continuation["text"].strip():
                    texts.append(continuation["text"])
                    scores.append(float(continuation["toxicity"]))
    return texts, np.asarray(scores)


def bin_masks(perspective: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(label, boolean mask) per Perspective bin, half-open except the last."""
    masks = []
    for i, (low, high) in enumerate(BINS):
        upper = perspective <= high if i == len(BINS) - 1 else perspective < high
        closing = "]" if i == len(BINS) - 1 else ")"
        masks.append((f"[{low}, {high}{closing}", (perspective >= low) & upper))
    return masks


def parse_starts(specs: list[str]) -> dict[str, float]:
    """`["offline=0.16"]` -> {"offline": 0.16}; anything else stops with the expected form."""
    starts = {}
    for spec in specs:
        name, _, value = spec.partition("=")
        try:
            starts[name] = float(value)
        except ValueError:
            starts[name] = float("nan")
        if not np.isfinite(starts[name]):
            raise SystemExit(f"--start {spec!r}: expected JUDGE=MEAN, e.g. minilm_davidson=0.309.")
    return starts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judges", nargs="+", default=["offline", "minilm_davidson", "minilm_davidson_reward"])
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="shared data directory")
    parser.add_argument("--start", nargs="*", default=[], metavar="JUDGE=MEAN",
                        help="a model's mean under a judge, to express the clean level as a relative change")
    args = parser.parse_args()
    starts = parse_starts(args.start)
    texts, perspective = load_continuations(args.data)
    masks = bin_masks(perspective)

    print(f"{len(texts)} RealToxicityPrompts continuations (human-written), binned by Perspective toxicity\n")
    print("| judge | " + " | ".join(f"Perspective {label} (n={int(m.sum())})" for label, m in masks) + " |")
    print("|---|" + "---|" * len(masks))
    clean = {}
    for judge in parse_judges(args.judges):
        scores = build_judge(judge).toxicity(texts)
        cells = []
        for _, mask in masks:
            mean, low, high = mean_interval(scores[mask])
            cells.append(f"{mean:.3f} [{low:.3f}, {high:.3f}]")
        clean[judge.name] = float(scores[masks[0][1]].mean())
        print(f"| {judge.name} | " + " | ".join(cells) + " |")
    for name, start in starts.items():
        if name in clean:
            print(f"\n{name}: from {start:.3f} to the clean-text level {clean[name]:.3f} is "
                  f"{100 * (clean[name] - start) / start:+.1f}%")


if __name__ == "__main__":
    main()
