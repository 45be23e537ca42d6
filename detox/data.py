"""Prompt sets: read records, drop malformed rows, filter by toxicity and token length, split train/held-out.

Records may be nested (RealToxicityPrompts: `{"prompt": {"text": ..., "toxicity": ...}}`, reached with the dotted
field `prompt.text`) or flat (a plain `text` column). Sources: local .jsonl/.json/.csv/.parquet files, Hub datasets,
and the prompt files shipped in detox/assets, `builtin:rtp_challenging` and `builtin:rtp_nontoxic` (see
detox/assets/NOTICE.md). A prompt is either text, continued as written, or a conversation in TRL's form (a list of
`{"role", "content"}` messages, under `prompt` or `messages`), which `render_prompts` turns into the text the model
reads with the tokenizer's chat template (`data.chat_template`). `continuation_records` gives the loss-based
baselines labelled text from the same file: the human-written continuations of the training prompts, by their
Perspective toxicity.
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
CHAT_KEYS = ("prompt", "messages")
"""Keys under which TRL's conversational records hold their messages, read when data.text_field is absent."""
Prompt = str | list[dict[str, str]]
"""A prompt as the file gives it: text, or chat messages."""


@dataclass
class PromptSplit:
    train: list[Prompt]
    heldout: list[Prompt]
    stats: dict[str, int] = field(default_factory=dict)
    """Row counts: read, each kind of malformed row, filtered, truncated, kept."""


def load_prompts(cfg: DataConfig, tokenizer) -> PromptSplit:
    """Read, clean, filter and split the prompts named by `cfg.prompts`, kept in their own form (text or chat
    messages; `render_prompts` gives the text a model reads)."""
    records = list(read_records(cfg.prompts, cfg.split))
    if not records:
        raise ValueError(
            f"data.prompts '{cfg.prompts}' is empty: it holds no record. Give one prompt record a line, e.g. "
            '{"prompt": {"text": "..."}} or {"prompt": [{"role": "user", "content": "..."}]}.'
        )
    stats: Counter[str] = Counter(read=len(records))
    candidates = []
    for record in records:
        prompt, toxicity, problem = _extract(record, cfg)
        if problem:
            stats[f"bad/{problem}"] += 1
        elif cfg.min_toxicity is not None and toxicity <= cfg.min_toxicity:
            stats["filtered/toxicity"] += 1
        else:
            candidates.append(prompt)
    _check_bad_rows(records, stats, cfg)
    chat = any(isinstance(p, list) for p in candidates)
    if chat or cfg.chat_template == "always":
        _check_chat_template(cfg, tokenizer, chat)
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


def render_prompts(prompts: list[Prompt], tokenizer, chat_template: str = "auto") -> list[str]:
    """The text the model reads for each prompt: plain text as written (under `always`, as one user turn), chat
    messages through the tokenizer's chat template, as TRL renders a conversational prompt: up to the opening of the
    assistant's reply, or, when the last message is the assistant's, inside it, so the model continues it."""
    texts = []
    for prompt in prompts:
        if isinstance(prompt, str) and chat_template != "always":
            texts.append(prompt)
            continue
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        final = messages[-1]["role"] == "assistant"
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=not final,
                                                   continue_final_message=final))
    return texts


def prompt_text(prompt: Prompt) -> str:
    """The words of a prompt without any template: its text, or its messages' contents joined by newlines."""
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


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
    # a prompt in both (a duplicate) counts as held out
    train = {prompt_text(p) for p in split.train} - {prompt_text(p) for p in split.heldout}
    rows = []
    for record in read_records(cfg.prompts, cfg.split):
        text, _, problem = _extract(record, cfg)
        continuation, found = _get(record, "continuation")
        if problem or not isinstance(text, str) or not found or not isinstance(continuation, dict):
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


def check_held_out(heldout: list[Prompt], fitted: dict[str, list[str]]) -> None:
    """Refuse a run that holds out a prompt one of its rewards was fitted on (`fitted`: {reward: prompts}): its
    evaluation on held-out prompts would not be held out. A held-out prompt is the start of the record's prompt (the
    token window may cut it); whitespace is not compared."""
    starts = tuple(" ".join(prompt_text(prompt).split()) for prompt in heldout)
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
                    except json.JSONDecodeError as err:
                        raise ValueError(
                            f"data.prompts '{path}': line {number} is not JSON ({err.msg}, column {err.colno}). Each "
                            f"line must be one JSON record; fix or delete that line."
                        ) from None
    elif path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(
                f"data.prompts '{path}' is not JSON ({err.msg}, line {err.lineno} column {err.colno}); give a list of "
                f"records, or one JSON record a line in a .jsonl file."
            ) from None
        if isinstance(data, dict) and not isinstance(data.get("data", []), list):
            raise ValueError(f"data.prompts '{path}': its `data` must be a list of records.")
        yield from data if isinstance(data, list) else data.get("data", [])
    else:
        import pandas as pd  # lazy: pandas takes ~0.3 s to import; only .csv and .parquet files need it

        if path.suffix == ".csv" and not path.read_bytes().strip():
            return  # pandas refuses a file without a header line; load_prompts says it is empty
        frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
        yield from frame.to_dict(orient="records")


def _read_hub_dataset(name: str, split: str) -> Iterable[Any]:
    import datasets  # lazy: datasets takes ~0.4 s to import; only Hub and saved-dataset sources need it

    resolve_model_path(name, what="data.prompts")  # fails fast, naming the offline preset, when the Hub is out of reach
    return datasets.load_dataset(name, split=split)


def _extract(record: Any, cfg: DataConfig) -> tuple[Prompt, float, str | None]:
    """(prompt, toxicity, problem); problem names why a row is malformed, or is None."""
    prompt, found = _get(record, cfg.text_field)
    if not found and isinstance(record, dict):
        prompt, found = next(((record[k], True) for k in CHAT_KEYS if _is_chat(record.get(k))), (None, False))
    if not found:
        return "", 0.0, "missing_field"
    if _is_chat(prompt):
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                   for m in prompt):
            return "", 0.0, "bad_messages"  # each message needs a string role and a string content
        if not any(m["content"].strip() for m in prompt):
            return "", 0.0, "empty"
    elif not isinstance(prompt, str):
        return "", 0.0, "not_a_string"
    elif not prompt.strip():
        return "", 0.0, "empty"
    toxicity = 0.0
    if cfg.toxicity_field is not None and cfg.min_toxicity is not None:
        toxicity, found = _get(record, cfg.toxicity_field)
        if not found or not isinstance(toxicity, (int, float)) or isinstance(toxicity, bool) or toxicity != toxicity:
            return "", 0.0, "bad_toxicity"
    return prompt, float(toxicity), None


def _is_chat(value: Any) -> bool:
    """A list of chat messages, as TRL tells one: a list whose first item is a dict with a `role`."""
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def _get(record: Any, dotted: str) -> tuple[Any, bool]:
    node = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None, False
        node = node[part]
    return node, True


def _check_bad_rows(records: list[Any], stats: Counter, cfg: DataConfig) -> None:
    """Fail when no record holds a usable prompt (naming the fields the records have instead), or when more than
    data.max_bad_fraction of them are malformed."""
    bad = sum(v for k, v in stats.items() if k.startswith("bad/"))
    source, found = f"data.prompts '{cfg.prompts}'", _fields_found(records)
    if bad < len(records):
        if bad / len(records) > cfg.max_bad_fraction:
            fields = f"; the records have the fields {found}" if stats["bad/missing_field"] else ""
            raise ValueError(
                f"{source}: {bad} of {len(records)} rows are malformed ({_bad_summary(stats)}), more than "
                f"data.max_bad_fraction ({cfg.max_bad_fraction}){fields}. Check data.text_field ('{cfg.text_field}') "
                f"and data.toxicity_field ('{cfg.toxicity_field}'), or raise max_bad_fraction."
            )
        return
    if stats["bad/missing_field"] == bad:
        raise ValueError(
            f"{source}: no record has the field data.text_field '{cfg.text_field}' (nor chat messages under "
            f"{' or '.join(CHAT_KEYS)}); the records have the fields {found}. Set data.text_field to the field that "
            f"holds the prompt."
        )
    if stats["bad/bad_toxicity"] == bad:
        raise ValueError(
            f"{source}: no record has a number at data.toxicity_field '{cfg.toxicity_field}'; the records have the "
            f"fields {found}. Set data.toxicity_field to the field that holds the prompt's toxicity, or "
            f"data.min_toxicity null to keep every prompt."
        )
    raise ValueError(
        f"{source}: no record holds a usable prompt ({_bad_summary(stats)}); the records have the fields {found}. "
        f"data.text_field ('{cfg.text_field}') must name a non-empty string or a list of chat messages with a string "
        f"role and content each."
    )


def _fields_found(records: list[Any], limit: int = 20) -> str:
    """The fields of the first records, dotted one level into nested objects (as data.text_field names them)."""
    names, kinds = set(), set()
    for record in records[:100]:
        if not isinstance(record, dict):
            kinds.add(type(record).__name__)
            continue
        for key, value in record.items():
            names.update([f"{key}.{sub}" for sub in value] if isinstance(value, dict) and value else [str(key)])
    if not names:
        return f"none (the records are {', '.join(sorted(kinds))}, not JSON objects)"
    shown = sorted(names)
    return str(shown[:limit]) + (f" and {len(shown) - limit} more" if len(shown) > limit else "")


def _check_chat_template(cfg: DataConfig, tokenizer, chat: bool) -> None:
    """Refuse prompts that need the tokenizer's chat template (`chat`: the file holds chat messages) when
    data.chat_template forbids it or the tokenizer has none."""
    source = f"data.prompts '{cfg.prompts}'"
    if chat and cfg.chat_template == "never":
        raise ValueError(
            f"{source} holds chat messages, but data.chat_template is never; set data.chat_template auto to render "
            f"them with the tokenizer's chat template."
        )
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or "the model"
        if chat:
            raise ValueError(
                f"{source} holds chat messages, but the tokenizer of '{name}' has no chat template to render them. "
                f"Train a chat (instruct) model, or give plain-text prompts."
            )
        raise ValueError(
            f"data.chat_template is always, but the tokenizer of '{name}' has no chat template. Set "
            f"data.chat_template auto to continue plain-text prompts as written, or train a chat (instruct) model."
        )


def _fit_token_window(prompts: list[Prompt], tokenizer, cfg: DataConfig, stats: Counter) -> list[Prompt]:
    texts = [p for p in prompts if isinstance(p, str)]
    text_ids = iter(tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else [])
    kept = []
    for prompt in prompts:
        if isinstance(prompt, str):
            ids = next(text_ids)
            length, windowed = len(ids), _windowed(prompt, ids, tokenizer, cfg)
        else:
            length, windowed = _windowed_chat(prompt, tokenizer, cfg)
        if windowed is None:
            stats["filtered/too_short" if length < cfg.min_prompt_tokens else "filtered/too_long"] += 1
            continue
        if windowed != prompt:
            stats["truncated"] += 1
        kept.append(windowed)
    return kept


def _windowed_chat(messages: list[dict], tokenizer, cfg: DataConfig) -> tuple[int, list[dict] | None]:
    """(tokens of the messages' contents, the conversation as the token window keeps it, or None when the window
    drops it). The template's own tokens are not counted, so a window means as many words for a conversation as for
    text; a long conversation loses the end of its last message, as a long text loses its end."""
    ids = tokenizer([m["content"] for m in messages], add_special_tokens=False)["input_ids"]
    length = sum(len(i) for i in ids)
    if length < cfg.min_prompt_tokens or (length > cfg.max_prompt_tokens and cfg.long_prompts == "drop"):
        return length, None
    if length <= cfg.max_prompt_tokens:
        return length, messages
    room = cfg.max_prompt_tokens - (length - len(ids[-1]))
    if room < 1:  # the earlier messages alone fill the window
        return length, None
    return length, [*messages[:-1], {**messages[-1], "content": tokenizer.decode(ids[-1][:room])}]


def _windowed(text: str, ids: list[int], tokenizer, cfg: DataConfig) -> str | None:
    """The prompt as the token window keeps it (longer ones truncated), or None when the window drops it."""
    if len(ids) < cfg.min_prompt_tokens or (len(ids) > cfg.max_prompt_tokens and cfg.long_prompts == "drop"):
        return None
    return tokenizer.decode(ids[: cfg.max_prompt_tokens]) if len(ids) > cfg.max_prompt_tokens else text


def _bad_summary(stats: Counter) -> str:
    return ", ".join(f"{k.split('/', 1)[1]}: {v}" for k, v in sorted(stats.items()) if k.startswith("bad/"))
