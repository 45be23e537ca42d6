"""MiniLM embeddings (both poolings) of every row of every label source, computed once and kept on disk, so the
judge measurements (judge_choices.py, judge_validity.py) never encode a text twice.

    python -m benchmarks.judge_features [--cache /tmp/detox_judge_features]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

from rewards.label_sources import SOURCES, load_source
from rewards.source_classifier import MAX_TOKENS, POOLINGS, MiniLMEncoder

DEFAULT_CACHE = Path("/tmp/detox_judge_features")


def source_features(name: str, cache: Path = DEFAULT_CACHE, encoder: MiniLMEncoder | None = None):
    """(rows of source `name`, {pooling: (N, hidden) features in row order}), encoded on first use."""
    frame = load_source(name)
    key = hashlib.sha256("\n".join(frame["text"]).encode()).hexdigest()[:12]
    path = cache / f"{name}-{key}-t{MAX_TOKENS}.npz"
    if not path.is_file():
        print(f"encoding {len(frame)} rows of {name}", file=sys.stderr, flush=True)
        features = (encoder or MiniLMEncoder()).encode_all(frame["text"].tolist())
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **features)
        tmp.replace(path)
    stored = np.load(path)
    return frame, {p: stored[p] for p in POOLINGS}


def evaluation_rows(frame, max_rows: int | None, seed: int = 0, graded: bool = False) -> np.ndarray:
    """Positions of the rows a judge is validated on: labelled rows (or, `graded`, rows with a graded score), a
    seeded sample of `max_rows` of them (None: all). Every judge gets the same sample, less the rows it saw."""
    usable = np.flatnonzero(frame["score"].notna().to_numpy() if graded else frame["label"].to_numpy() >= 0)
    if max_rows is not None and len(usable) > max_rows:
        usable = np.sort(np.random.default_rng(seed).choice(usable, max_rows, replace=False))
    return usable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    encoder = MiniLMEncoder()
    for name in SOURCES:
        frame, features = source_features(name, args.cache, encoder)
        print(name, len(frame), features["mean"].shape)


if __name__ == "__main__":
    main()
