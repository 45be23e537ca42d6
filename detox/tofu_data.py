"""TOFU (Maini et al. 2024): 200 fictitious authors, 20 question/answer pairs each, and the sets its metrics read.

The shipped copy is detox/assets/tofu (tools/make_tofu_assets.py; attribution in detox/assets/NOTICE.md). A folder
of TOFU's own JSON-lines files (`full.jsonl`, `forget10.jsonl`, ...: the Hub dataset locuslab/TOFU's subsets) can
stand in for it (`root`); its forget and retain files are then checked against `full`.

- `full`: 4,000 pairs in author order (author i holds rows 20i to 20i + 19).
- `forget01`, `forget05`, `forget10`: the last 2, 10 and 20 authors of `full`; `retain99/95/90` the rest.
- `<forget split>_perturbed`, `retain_perturbed` (400 retain questions): each question with a paraphrased answer and
  five wrong ("perturbed") answers, for the truth ratio.
- `real_authors_perturbed`, `world_facts_perturbed`: questions about real people and facts with three wrong answers.
- `holdout01/05/10`: pairs about other fictitious authors, never in `full`.
- `idontknow`: refusal answers, one a line.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets" / "tofu"
QA_PER_AUTHOR = 20
FORGET_AUTHORS = {"forget01": 2, "forget05": 10, "forget10": 20}
"""Each forget split and the number of authors (the last ones of `full`) it forgets."""
RETAIN_OF = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
FIELDS = {
    "qa": ("question", "answer"),
    "perturbed": ("question", "answer", "paraphrased_answer", "perturbed_answer"),
    "options": ("question", "answer", "perturbed_answer"),
}
"""The fields a row of each kind of set must hold."""


def kind_of(name: str) -> str:
    if name.endswith("_perturbed"):
        return "options" if name.startswith(("real_authors", "world_facts")) else "perturbed"
    return "qa"


def _path(name: str, root: str | Path | None) -> Path:
    folder = Path(root) if root is not None else ASSETS
    for candidate in (folder / f"{name}.jsonl", folder / f"{name}.jsonl.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"TOFU set '{name}': neither {name}.jsonl nor {name}.jsonl.gz in {folder}.")


def _lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def read_set(name: str, root: str | Path | None = None) -> list[dict]:
    """The rows of one TOFU set, each checked for the fields its kind needs; a missing or empty field is an error
    naming the file, the line and the fields expected."""
    if name in FORGET_AUTHORS or name in RETAIN_OF.values():
        return forget_retain(name if name in FORGET_AUTHORS else _forget_of(name), root)[name not in FORGET_AUTHORS]
    path = _path(name, root)
    lines = _lines(path)
    if name == "idontknow":
        return [{"answer": line.strip()} for line in lines if line.strip()]
    fields = FIELDS[kind_of(name)]
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not JSON ({error.msg}); each line must be one JSON object.") \
                from None
        missing = [f for f in fields if not row.get(f)] if isinstance(row, dict) else list(fields)
        if missing:
            raise ValueError(f"{path}, line {number}: missing {', '.join(missing)}; a row of TOFU's {name} needs "
                             f"{', '.join(fields)}.")
        if "perturbed_answer" in fields and not isinstance(row["perturbed_answer"], list):
            raise ValueError(f"{path}, line {number}: perturbed_answer must be a list of wrong answers.")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows.")
    return rows


def _forget_of(retain: str) -> str:
    return next(forget for forget, kept in RETAIN_OF.items() if kept == retain)


def forget_retain(split: str, root: str | Path | None = None) -> tuple[list[dict], list[dict]]:
    """(forget rows, retain rows) of a forget split: the last authors of `full` and the rest. With a `root` that holds
    the split's own files, each must be exactly that part of `full`, or the error says where they differ."""
    if split not in FORGET_AUTHORS:
        raise ValueError(f"forget split '{split}' is not one of TOFU's: {sorted(FORGET_AUTHORS)}.")
    full = read_set("full", root)
    cut = len(full) - FORGET_AUTHORS[split] * QA_PER_AUTHOR
    if cut <= 0 or len(full) % QA_PER_AUTHOR:
        raise ValueError(f"{_path('full', root)}: {len(full)} rows; TOFU's full set holds {QA_PER_AUTHOR} per author "
                         f"and more than the {FORGET_AUTHORS[split]} authors of {split}.")
    forget, retain = full[cut:], full[:cut]
    if root is not None:
        for name, expected in ((split, forget), (RETAIN_OF[split], retain)):
            try:
                path = _path(name, root)
            except FileNotFoundError:
                continue
            given = [{k: r.get(k) for k in FIELDS["qa"]} for r in map(json.loads, filter(str.strip, _lines(path)))]
            wanted = [{k: r[k] for k in FIELDS["qa"]} for r in expected]
            if given != wanted:
                where = next((i for i, (a, b) in enumerate(zip(given, wanted)) if a != b), min(len(given), len(wanted)))
                raise ValueError(f"{path}: row {where + 1} is not row {where + 1} of the {name} part of full.jsonl "
                                 f"({len(given)} rows given, {len(wanted)} expected); a forget split must be the last "
                                 f"authors of full and its retain split the rest.")
    return forget, retain


def authors(rows: list[dict]) -> list[list[dict]]:
    """`rows` (a part of `full`, whole authors) cut into authors of QA_PER_AUTHOR pairs."""
    if len(rows) % QA_PER_AUTHOR:
        raise ValueError(f"{len(rows)} rows are not whole authors of {QA_PER_AUTHOR} pairs.")
    return [rows[i : i + QA_PER_AUTHOR] for i in range(0, len(rows), QA_PER_AUTHOR)]


TEMPLATES = ("chat", "plain")


def qa_prompt(tokenizer, question: str, template: str) -> str:
    """The text a model reads before answering `question`: the tokenizer's chat template with the question as the
    user's turn and the assistant's turn opened (`chat`, as open-unlearning formats TOFU for chat models), or
    "Question: ...\\nAnswer:" (`plain`). Training, PPO prompts and every metric use this one function."""
    if template == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("template 'chat': the tokenizer has no chat template; use template 'plain'.")
        return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
    if template == "plain":
        return f"Question: {question}\nAnswer:"
    raise ValueError(f"template '{template}' is not one of {list(TEMPLATES)}.")


def qa_answer(answer: str, template: str) -> str:
    """The answer as it follows qa_prompt: after "Answer:" with a space; after a chat template as it stands."""
    return f" {answer}" if template == "plain" else answer
