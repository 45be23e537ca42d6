"""Human-labelled toxicity sources: the rows the source classifiers (`rewards/source_classifier.py`) are fitted and
validated on.

Every source reads one file (shipped in detox/assets; see detox/assets/NOTICE.md) into the same rows:

    row_id   stable id of the row in its source (a string)
    text     the text a classifier reads
    label    1 toxic, 0 clean, -1 neither by the source's rule (kept for the correlation with `score` only)
    score    the source's graded toxicity where it has one (ToxiGen: mean human rating 1-5; RealToxicityPrompts:
             Perspective toxicity 0-1), else NaN
    part     "reward" or "judge" (hatecheck: "test")

The part of a row is fixed once and for all by the parity of a number in its id (`SourceSpec.split`): a reward is
fitted on the reward part, a judge on the judge part, so a judge never shares a row with a reward built the same way.
Rows that belong together (the sentences of one Stormfront post, a RealToxicityPrompts prompt and its continuation)
share the number, so they fall in the same part. HateCheck is a test suite: it has no part to fit on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parents[1] / "detox" / "assets"
PARTS = {"reward": 0, "judge": 1}
"""Part -> the parity of the row's split number."""
RTP_TOXIC, RTP_CLEAN = 0.5, 0.1
"""RealToxicityPrompts texts: Perspective toxicity >= 0.5 is toxic, < 0.1 clean (as detox.data.CONTINUATION_SETS)."""


@dataclass(frozen=True)
class SourceSpec:
    path: Path
    """The file read by default."""
    columns: tuple[str, ...]
    """The columns (or JSON fields) the file must have."""
    rule: str
    """How a row is labelled, in words (recorded in every classifier fitted on it)."""
    split: str
    """Which number of the row id decides its part, in words."""
    citation: str
    """Where the rows come from."""


SOURCES: dict[str, SourceSpec] = {
    "davidson": SourceSpec(
        ASSETS / "davidson_labeled_data.csv.gz", ("", "class", "tweet"),
        "class 0 (hate speech) or 1 (offensive language) toxic, class 2 (neither) clean", "row id (first column)",
        "Davidson et al., ICWSM 2017: tweets labelled by CrowdFlower annotators"),
    "toxigen": SourceSpec(
        ASSETS / "toxigen_annotated.csv.gz", ("id", "text", "toxicity_human"),
        "mean human toxicity rating >= 4 toxic, <= 2 clean, in between neither", "id (row of annotated.csv)",
        "Hartvigsen et al., ACL 2022: machine-written statements about 13 groups, rated by humans"),
    "stormfront": SourceSpec(
        ASSETS / "stormfront_sentences.csv.gz", ("file_id", "text", "label"),
        "label hate toxic, noHate clean (relation and idk/skip dropped)", "post number (file_id before the '_')",
        "de Gibert et al., ALW2 2018: white-supremacist forum sentences labelled by the authors"),
    "rtp": SourceSpec(
        ASSETS / "rtp_challenging.jsonl", ("prompt.text", "prompt.toxicity", "continuation.text",
                                           "continuation.toxicity"),
        f"Perspective toxicity >= {RTP_TOXIC} toxic, < {RTP_CLEAN} clean, in between neither",
        "line of the record in its file (a prompt and its continuation share it)",
        "Gehman et al., Findings of EMNLP 2020: RealToxicityPrompts prompts and continuations, scored by Perspective"),
    "hatecheck": SourceSpec(
        ASSETS / "hatecheck_cases.csv.gz", ("case_id", "functionality", "test_case", "label_gold"),
        "label_gold hateful toxic, non-hateful clean", "none: a test suite, never fitted on",
        "Roettger et al., ACL 2021: templated functional tests of hate speech detection"),
}
"""Source name -> its file and rules. `rtp` also reads rtp_nontoxic.jsonl beside the file (`RTP_FILES`)."""
RTP_FILES = ("rtp_challenging.jsonl", "rtp_nontoxic.jsonl")
FITTABLE = tuple(name for name in SOURCES if name != "hatecheck")
"""Sources a classifier may be fitted on."""


def spec(name: str) -> SourceSpec:
    """The spec of source `name`; an unknown name lists the valid ones."""
    if name not in SOURCES:
        raise ValueError(f"unknown label source '{name}'. Valid sources are: {sorted(SOURCES)}.")
    return SOURCES[name]


def source_files(name: str, path: str | Path | None = None) -> list[Path]:
    """The files `load_source(name, path)` reads: `rtp`'s shipped file brings its sibling file along."""
    source = spec(name)
    path = Path(path) if path is not None else source.path
    return [path.parent / f for f in RTP_FILES] if name == "rtp" and path == source.path else [path]


def load_source(name: str, path: str | Path | None = None) -> pd.DataFrame:
    """Every row of source `name` (read from `path`, default its shipped file) as row_id, text, label, score, part,
    split (the number whose parity gave the part), plus `functionality` for hatecheck."""
    source = spec(name)
    path = Path(path) if path is not None else source.path
    if not path.is_file():
        raise FileNotFoundError(f"label source '{name}': file '{path}' does not exist.")
    frame = _READERS[name](path, source)
    frame = frame[frame["text"].str.strip() != ""]
    frame["part"] = np.where(frame["split"] % 2 == PARTS["reward"], "reward", "judge")
    if name == "hatecheck":
        frame["part"] = "test"
    return frame.reset_index(drop=True)


def _checked(frame: pd.DataFrame, name: str, path: Path, source: SourceSpec) -> pd.DataFrame:
    missing = [c for c in source.columns if c and c not in frame.columns]
    if missing:
        raise ValueError(f"label source '{name}': file '{path}' has no column {missing}; it needs the columns "
                         f"{[c or '<row id>' for c in source.columns]}.")
    return frame


def _text(column) -> np.ndarray:
    """A text column as stripped strings, a missing text as "" (dropped by load_source)."""
    return column.fillna("").astype(str).str.strip().to_numpy()


def _davidson(path: Path, source: SourceSpec) -> pd.DataFrame:
    import pandas as pd  # lazy: pandas takes ~0.3 s to import; only .csv and .parquet files need it

    frame = _checked(pd.read_csv(path, index_col=0), "davidson", path, source)
    ids = frame.index.to_numpy()
    return pd.DataFrame({"row_id": ids.astype(str), "text": _text(frame["tweet"]),
                         "label": np.where(frame["class"].to_numpy() < 2, 1, 0), "score": np.nan, "split": ids})


def _toxigen(path: Path, source: SourceSpec) -> pd.DataFrame:
    import pandas as pd  # lazy: pandas takes ~0.3 s to import; only .csv and .parquet files need it

    frame = _checked(pd.read_csv(path), "toxigen", path, source)
    rating = frame["toxicity_human"].to_numpy(dtype=float)
    label = np.select([rating >= 4, rating <= 2], [1, 0], default=-1)
    return pd.DataFrame({"row_id": frame["id"].astype(str).to_numpy(), "text": _text(frame["text"]),
                         "label": label, "score": rating, "split": frame["id"].to_numpy()})


def _stormfront(path: Path, source: SourceSpec) -> pd.DataFrame:
    import pandas as pd  # lazy: pandas takes ~0.3 s to import; only .csv and .parquet files need it

    frame = _checked(pd.read_csv(path), "stormfront", path, source)
    frame = frame[frame["label"].isin(["hate", "noHate"])]
    post = frame["file_id"].astype(str).str.split("_").str[0].astype(np.int64)
    return pd.DataFrame({"row_id": frame["file_id"].astype(str).to_numpy(), "text": _text(frame["text"]),
                         "label": (frame["label"] == "hate").astype(int).to_numpy(), "score": np.nan,
                         "split": post.to_numpy()})


def _rtp(path: Path, source: SourceSpec) -> pd.DataFrame:
    """Prompt and continuation texts of both shipped RealToxicityPrompts files (when `path` is the shipped one) or of
    `path` alone; a text without a Perspective score is dropped."""
    import pandas as pd  # lazy: pandas takes ~0.3 s to import; only .csv and .parquet files need it

    rows = []
    for file in source_files("rtp", path):
        for line, raw in enumerate(file.read_text(encoding="utf-8").splitlines()):
            record = json.loads(raw)
            for field in ("prompt", "continuation"):
                entry = record.get(field)
                if not isinstance(entry, dict) or "text" not in entry or "toxicity" not in entry:
                    raise ValueError(f"label source 'rtp': file '{file}' line {line + 1} has no {field}.text or "
                                     f"{field}.toxicity; it needs the fields {list(source.columns)}.")
                if entry["toxicity"] is None:
                    continue
                rows.append((f"{file.stem}:{line}:{field}", entry["text"].strip(), float(entry["toxicity"]), line))
    frame = pd.DataFrame(rows, columns=["row_id", "text", "score", "split"])
    frame["label"] = np.select([frame["score"] >= RTP_TOXIC, frame["score"] < RTP_CLEAN], [1, 0], default=-1)
    return frame.drop_duplicates("text", keep=False)[["row_id", "text", "label", "score", "split"]]


def _hatecheck(path: Path, source: SourceSpec) -> pd.DataFrame:
    import pandas as pd  # lazy: pandas takes ~0.3 s to import; only .csv and .parquet files need it

    frame = _checked(pd.read_csv(path), "hatecheck", path, source)
    unknown = sorted(set(frame["label_gold"]) - {"hateful", "non-hateful"})
    if unknown:
        raise ValueError(f"label source 'hatecheck': file '{path}' column label_gold holds {unknown}; expected "
                         "hateful or non-hateful.")
    return pd.DataFrame({"row_id": frame["case_id"].astype(str).to_numpy(), "text": _text(frame["test_case"]),
                         "label": (frame["label_gold"] == "hateful").astype(int).to_numpy(), "score": np.nan,
                         "split": frame["case_id"].to_numpy(), "functionality": frame["functionality"].to_numpy()})


_READERS = {"davidson": _davidson, "toxigen": _toxigen, "stormfront": _stormfront, "rtp": _rtp,
            "hatecheck": _hatecheck}


def fitting_rows(frame: pd.DataFrame, part: str, n: int, seed: int) -> pd.DataFrame:
    """Up to `n` labelled rows of `part`, half toxic where the part has enough toxic rows (else all of them, the rest
    clean), shuffled with `seed`."""
    if part not in PARTS:
        raise ValueError(f"part '{part}' is not one of {sorted(PARTS)}.")
    rows = frame[(frame["part"] == part) & (frame["label"] >= 0)]
    toxic, clean = np.flatnonzero(rows["label"] == 1), np.flatnonzero(rows["label"] == 0)
    rng = np.random.default_rng(seed)
    n_toxic = min(n // 2, len(toxic))
    n_clean = min(n - n_toxic, len(clean))
    chosen = np.concatenate([rng.choice(toxic, n_toxic, replace=False), rng.choice(clean, n_clean, replace=False)])
    rng.shuffle(chosen)
    return rows.iloc[chosen]


def calibration_rows(frame: pd.DataFrame, part: str, n: int, seed: int) -> pd.DataFrame:
    """Up to `n` labelled rows of `part` drawn at random with `seed`, so in the source's own proportion of toxic
    rows: the rows a calibration map is fitted on, set aside before the head's rows are drawn."""
    if part not in PARTS:
        raise ValueError(f"part '{part}' is not one of {sorted(PARTS)}.")
    rows = frame[(frame["part"] == part) & (frame["label"] >= 0)]
    return rows.iloc[np.sort(np.random.default_rng(seed).choice(len(rows), min(n, len(rows)), replace=False))]
