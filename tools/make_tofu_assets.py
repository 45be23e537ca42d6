"""Write the TOFU files the `tofu` recipe reads into detox/assets/tofu, compressed.

    python tools/make_tofu_assets.py [--data ../shared/data]

`full` holds every question/answer pair (200 authors x 20, in author order); the forget splits are its last 2, 10 and
20 authors and the retain splits the rest, so they are not shipped twice (detox.tofu_data cuts them from `full`).
Shipped as they stand: the perturbed sets of each forget split and of the retain set (paraphrased and wrong answers
for the truth ratio), the real-authors and world-facts sets with their wrong answers, the holdout sets (other
fictitious authors, never in `full`) and the refusal answers (`idontknow`, one a line). gzip headers carry no time
stamp, so the files are reproduced byte for byte.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "detox" / "assets" / "tofu"
FILES = ["full", "forget01_perturbed", "forget05_perturbed", "forget10_perturbed", "retain_perturbed",
         "real_authors_perturbed", "world_facts_perturbed", "holdout01", "holdout05", "holdout10", "idontknow"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the shared data folder")
    args = parser.parse_args()
    ASSETS.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        source = Path(args.data) / "tofu" / f"{name}.jsonl"
        target = ASSETS / f"{name}.jsonl.gz"
        with target.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as handle:
            handle.write(source.read_bytes())
        print(f"{target.relative_to(REPO)}: {target.stat().st_size:,} bytes")
    (ASSETS / "LICENSE").write_bytes((Path(args.data) / "tofu" / "LICENSE").read_bytes())


if __name__ == "__main__":
    main()
