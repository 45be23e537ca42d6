"""Write the human-labelled sources the toxicity judges are fitted and validated on into detox/assets, compressed.

    python tools/make_label_assets.py [--data ../shared/data]

Each file keeps only the columns `rewards/label_sources.py` reads, with a stable row id, and drops rows whose text
is empty or repeats another row's (a text in both halves of a source would let a judge be validated on a row it was
fitted on):

    toxigen_annotated.csv.gz    id (row of annotated.csv), text, toxicity_human
    stormfront_sentences.csv.gz file_id (post_sentence), text, label
    hatecheck_cases.csv.gz      case_id, functionality, test_case, label_gold

gzip headers carry no time stamp, so the files are reproduced byte for byte.
"""

from __future__ import annotations

import argparse
import gzip
import io
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "detox" / "assets"


def unique_texts(frame: pd.DataFrame, text: str) -> pd.DataFrame:
    """The rows with a text that (whitespace collapsed) appears only once in `frame`."""
    frame = frame[frame[text].notna() & (frame[text].astype(str).str.strip() != "")]
    key = frame[text].astype(str).str.split().str.join(" ")
    return frame[~key.duplicated(keep=False)]


def write_gzip_csv(frame: pd.DataFrame, path: Path) -> None:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as handle:
        handle.write(buffer.getvalue().encode("utf-8"))
    print(f"{path.relative_to(REPO)}: {len(frame)} rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    toxigen = pd.read_csv(args.data / "toxigen" / "annotated.csv")
    toxigen.insert(0, "id", range(len(toxigen)))
    write_gzip_csv(unique_texts(toxigen[["id", "text", "toxicity_human"]], "text"), ASSETS / "toxigen_annotated.csv.gz")
    stormfront = pd.read_csv(args.data / "stormfront" / "sentences.csv")
    stormfront = stormfront[stormfront["label"].isin(["hate", "noHate"])]
    write_gzip_csv(unique_texts(stormfront[["file_id", "text", "label"]], "text"),
                   ASSETS / "stormfront_sentences.csv.gz")
    hatecheck = pd.read_csv(args.data / "hatecheck" / "test_suite_cases.csv")
    write_gzip_csv(hatecheck[["case_id", "functionality", "test_case", "label_gold"]],
                   ASSETS / "hatecheck_cases.csv.gz")


if __name__ == "__main__":
    main()
