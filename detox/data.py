"""Prompt sets: read records, drop malformed rows, filter by toxicity and token length, split train/held-out.

Records may be nested (RealToxicityPrompts: `{"prompt": {"text": ..., "toxicity": ...}}`, reached with the dotted
field `prompt.text`) or flat (a plain `text` column). Sources: local .jsonl/.json/.csv/.parquet files, Hub datasets,
and the prompt files shipped in detox/assets, `builtin:rtp_challenging` and `builtin:rtp_nontoxic` (see
detox/assets/NOTICE.md). `continuation_records` gives the loss-based baselines labelled text from the same file: the
human-written continuations of the training prompts, by their Perspective toxicity.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from detox.config import DataConfig
from detox.hub import resolve_model_path

ASSETS = Path(__file__).resolve().parent / "assets"
BUILTIN = {
    "builtin:rtp_challenging": ASSETS / "rtp_challenging.jsonl",
    "builtin:rtp_nontoxic": ASSETS / "rtp_nontoxic.jsonl",  # low prompt toxicity: set data.min_toxicity null
    "builtin:toxigen_implicit": ASSETS / "toxigen_implicit.jsonl",  # evaluation only: EVALUATION_ONLY
}
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
CONTINUATION_SETS = {
    "builtin:rtp_toxic_continuations": (0.5, math.inf),  # Perspective toxicity of the continuation >= 0.5
    "builtin:rtp_clean_continuations": (0.0, 0.1),  # < 0.1
}
"""Continuation set -> [low, high) of the continuation's Perspective toxicity (RealToxicityPrompts' own labels)."""


@dataclass
class PromptSplit:
    train: list[str]
    heldout: list[str]
    stats: dict[str, int] = field(default_factory=dict)
    """Row counts: read, each kind of malformed row, filtered, truncated, kept."""


def load_prompts(cfg: DataConfig, tokenizer) -> PromptSplit:
    """Read, clean, filter and split the prompts named by `cfg.prompts`."""
    records = list(read_records(cfg.prompts, cfg.split))
    stats: Counter[str] = Counter(read=len(records))
    candidates = []
    for record in records:
        text, toxicity, problem = _extract(record, cfg)
        if problem:
            stats[f"bad/{problem}"] += 1
        elif cfg.min_toxicity is not None and toxicity <= cfg.min_toxicity:
            stats["filtered/toxicity"] += 1
        else:
            candidates.append(text)
    bad = sum(v for k, v in stats.items() if k.startswith("bad/"))
    if records and bad / len(records) > cfg.max_bad_fraction:
        raise ValueError(
            f"data.prompts '{cfg.prompts}': {bad} of {len(records)} rows are malformed ({_bad_summary(stats)}), more "
            f"than data.max_bad_fraction ({cfg.max_bad_fraction}). Check data.text_field ('{cfg.text_field}') and "
            f"data.toxicity_field ('{cfg.toxicity_field}'), or raise max_bad_fraction."
        )
    prompts = _fit_token_window(candidates, tokenizer, cfg, stats)
    if not prompts:
        raise ValueError(
            f"data.prompts '{cfg.prompts}': no prompt is left after filtering ({dict(stats)}). Lower "
            f"data.min_toxicity ({cfg.min_toxicity}) or widen data.min_prompt_tokens/max_prompt_tokens "
            f"({cfg.min_prompt_tokens}-{cfg.max_prompt_tokens})."
        )
    random.Random(cfg.seed).shuffle(prompts)
    if cfg.max_prompts is not None:
        prompts = prompts[: cfg.max_prompts]
    n_heldout = math.floor(len(prompts) * cfg.heldout_fraction)
    stats["kept"] = len(prompts)
    return PromptSplit(train=prompts[n_heldout:], heldout=prompts[:n_heldout], stats=dict(stats))


def continuation_records(source: str, tokenizer, cfg: DataConfig | None = None) -> list[dict[str, str]]:
    """`{"text": prompt, "completion": continuation}` records of a builtin continuation set (`CONTINUATION_SETS`): the
    human-written RealToxicityPrompts continuations whose Perspective toxicity lies in the set's range, of the
    *training* prompts of `cfg` only (the offline default's prompt data unless given, split as `load_prompts` splits
    it with this tokenizer), so that no prompt an evaluation holds out is ever learned or unlearned."""
    if source not in CONTINUATION_SETS:
        raise ValueError(f"unknown continuation set '{source}'; available: {sorted(CONTINUATION_SETS)}.")
    low, high = CONTINUATION_SETS[source]
    cfg = cfg or DataConfig()
    split = load_prompts(cfg, tokenizer)
    train = set(split.train) - set(split.heldout)  # a prompt text in both (a duplicate) counts as held out
    rows = []
    for record in read_records(cfg.prompts, cfg.split):
        text, _, problem = _extract(record, cfg)
        continuation, found = _get(record, "continuation")
        if problem or not found or not isinstance(continuation, dict):
            continue
        words, toxicity = continuation.get("text"), continuation.get("toxicity")
        if isinstance(words, str) and words.strip() and isinstance(toxicity, (int, float)) and low <= toxicity < high:
            rows.append((text, words))
    ids = tokenizer([text for text, _ in rows], add_special_tokens=False)["input_ids"] if rows else []
    records = [{"text": text, "completion": words} for (text, words), row_ids in zip(rows, ids)
               if _windowed(text, row_ids, tokenizer, cfg) in train]
    if not records:
        raise ValueError(f"{source}: no training prompt of '{cfg.prompts}' has a continuation in it.")
    return records


def check_held_out(heldout: list[str], fitted: dict[str, list[str]]) -> None:
    """Refuse a run that holds out a prompt one of its rewards was fitted on (`fitted`: {reward: prompts}): its
    evaluation on held-out prompts would not be held out. A held-out prompt is the start of the record's prompt (the
    token window may cut it); whitespace is not compared."""
    starts = tuple(" ".join(text.split()) for text in heldout)
    for name, prompts in fitted.items():
        leaked = [text for text in prompts if " ".join(text.split()).startswith(starts)]
        if leaked:
            raise ValueError(
                f"rewards '{name}' was fitted on the continuations of {len(leaked)} prompts this run holds out (e.g. "
                f"{leaked[0][:60]!r}), so they would not be held out. Split the prompts as the reward's rows were "
                "split (for minilm_toxicity with data: rtp_continuations: the offline default's data section, with "
                "options.split_model set to model.name_or_path), or use a reward fitted on other data."
            )


def step_prompts(prompts: list[str], step: int, batch_size: int, seed: int, world: int = 1, rank: int = 0) -> list[str]:
    """Rank `rank`'s `batch_size` prompts at training step `step`: a seeded pass over the prompt set per epoch, sliced
    by rank. Derived from the step alone, so any loop (and any resumed run) can ask for any step's batch."""
    n = len(prompts)
    orders: dict[int, list[int]] = {}
    chosen = []
    first = step * batch_size * world + rank * batch_size
    for position in range(first, first + batch_size):
        epoch, offset = divmod(position, n)
        if epoch not in orders:
            orders[epoch] = random.Random(seed * 100_003 + epoch).sample(range(n), n)
        chosen.append(prompts[orders[epoch][offset]])
    return chosen


EVALUATION_ONLY = {"builtin:toxigen_implicit"}
"""Prompt sets held out of every training run: a trainer refuses them as data.prompts."""


def refuse_evaluation_only(data: DataConfig) -> None:
    """Stop a training run whose prompts are an evaluation-only set, before anything loads."""
    if data.prompts in EVALUATION_ONLY:
        raise ValueError(f"data.prompts '{data.prompts}' is an evaluation prompt set, held out of every training run; "
                         f"train on builtin:rtp_challenging or your own prompt file and evaluate on it with "
                         f"evaluate_toxicity.py --prompts {data.prompts}.")


def read_records(source: str, split: str = "train") -> Iterable[Any]:
    """Rows of a builtin set, a local file, or a Hub dataset, as loaded (dicts, or whatever a line holds)."""
    path = BUILTIN.get(source, Path(source).expanduser())
    if source.startswith("builtin:") and source not in BUILTIN:
        raise ValueError(f"data.prompts: unknown builtin set '{source}'; available: {sorted(BUILTIN)}.")
    if path.suffix in FILE_SUFFIXES or path.exists():
        if not path.is_file():
            raise FileNotFoundError(
                f"data.prompts: prompt file '{path}' does not exist. Give a .jsonl/.json/.csv/.parquet file, a Hub "
                f"dataset id, or builtin:rtp_challenging."
            )
        return _read_file(path)
    return _read_hub_dataset(source, split)


def _read_file(path: Path) -> Iterable[Any]:
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        yield _Unparsable(f"{path}:{number}")
    elif path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        yield from data if isinstance(data, list) else data.get("data", [])
    else:
        import pandas as pd

        frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
        yield from frame.to_dict(orient="records")


def _read_hub_dataset(name: str, split: str) -> Iterable[Any]:
    import datasets

    resolve_model_path(name, what="data.prompts")  # fails fast, naming the offline preset, when the Hub is out of reach
    return datasets.load_dataset(name, split=split)


class _Unparsable:
    def __init__(self, where: str):
        self.where = where


def _extract(record: Any, cfg: DataConfig) -> tuple[str, float, str | None]:
    """(text, toxicity, problem); problem names why a row is malformed, or is None."""
    if isinstance(record, _Unparsable):
        return "", 0.0, "unparsable"
    text, found = _get(record, cfg.text_field)
    if not found:
        return "", 0.0, "missing_field"
    if not isinstance(text, str):
        return "", 0.0, "not_a_string"
    if not text.strip():
        return "", 0.0, "empty"
    toxicity = 0.0
    if cfg.toxicity_field is not None and cfg.min_toxicity is not None:
        toxicity, found = _get(record, cfg.toxicity_field)
        if not found or not isinstance(toxicity, (int, float)) or isinstance(toxicity, bool) or toxicity != toxicity:
            return "", 0.0, "bad_toxicity"
    return text, float(toxicity), None


def _get(record: Any, dotted: str) -> tuple[Any, bool]:
    node = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None, False
        node = node[part]
    return node, True


def _fit_token_window(texts: list[str], tokenizer, cfg: DataConfig, stats: Counter) -> list[str]:
    kept = []
    for text, ids in zip(texts, tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []):
        windowed = _windowed(text, ids, tokenizer, cfg)
        if windowed is None:
            stats["filtered/too_short" if len(ids) < cfg.min_prompt_tokens else "filtered/too_long"] += 1
            continue
        if windowed != text:
            stats["truncated"] += 1
        kept.append(windowed)
    return kept


def _windowed(text: str, ids: list[int], tokenizer, cfg: DataConfig) -> str | None:
    """The prompt as the token window keeps it (longer ones truncated), or None when the window drops it."""
    if len(ids) < cfg.min_prompt_tokens or (len(ids) > cfg.max_prompt_tokens and cfg.long_prompts == "drop"):
        return None
    return tokenizer.decode(ids[: cfg.max_prompt_tokens]) if len(ids) > cfg.max_prompt_tokens else text


def _bad_summary(stats: Counter) -> str:
    return ", ".join(f"{k.split('/', 1)[1]}: {v}" for k, v in sorted(stats.items()) if k.startswith("bad/"))
