"""A corpus as texts: the files, directories and datasets a forget or retain corpus may be given as.

.txt/.txt.gz/.md files give one text each; .jsonl/.json(.gz) records give their `text_field` (dotted for nested
records); a directory gives every such file under it; a `datasets.save_to_disk` directory or a datasets id gives its
rows' `text_field`. The n-gram index, the token blocks of the loss-based methods and the evaluation's forget passages
all read corpora here.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

_TEXT_SUFFIXES = (".txt", ".txt.gz", ".md")
_JSON_SUFFIXES = (".jsonl", ".jsonl.gz", ".json")


def corpus_fingerprint(sources: list[str], text_field: str) -> list:
    """What identifies a corpus for caching: each file's absolute path, mtime and size; a dataset id as given."""
    out: list = [text_field]
    for source in sources:
        path = Path(source).expanduser()
        if _is_saved_dataset(path):
            files = sorted(f for f in path.rglob("*") if f.is_file())
        else:
            files = _files_under(path) if path.exists() else []
        out.extend([str(f.resolve()), f.stat().st_mtime_ns, f.stat().st_size] for f in files)
        if not path.exists():
            out.append(["dataset", source])
    return out


def read_corpus(corpus: str | list[str], text_field: str = "text") -> list[str]:
    """Texts of a corpus: .txt/.txt.gz/.md files (one text each), .jsonl/.json(.gz) records (their `text_field`,
    dotted for nested records, e.g. "prompt.text"), a directory of such files or a `datasets.save_to_disk` dir,
    or else a datasets id loaded with `datasets.load_dataset(id, split="train")`."""
    texts: list[str] = []
    for source in [corpus] if isinstance(corpus, str) else corpus:
        path = Path(source).expanduser()
        if _is_saved_dataset(path):
            import datasets  # lazy: datasets takes ~0.4 s to import; only saved-dataset sources need it

            texts.extend(_dataset_texts(datasets.load_from_disk(str(path)), text_field, source))
        elif path.exists():
            for file in _files_under(path):
                texts.extend(_file_texts(file, text_field))
        else:
            texts.extend(_hub_dataset_texts(source, text_field))
    return texts


def _is_saved_dataset(path: Path) -> bool:
    """A directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    return path.is_dir() and any((path / name).exists() for name in ("state.json", "dataset_dict.json"))


def _files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(f for f in path.rglob("*") if f.is_file() and f.name.endswith(_TEXT_SUFFIXES + _JSON_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"corpus directory {path} holds no {_TEXT_SUFFIXES + _JSON_SUFFIXES} files.")
    return files


def _file_texts(file: Path, text_field: str) -> list[str]:
    opener = gzip.open if file.name.endswith(".gz") else open
    with opener(file, "rt", encoding="utf-8") as f:
        if not file.name.endswith(_JSON_SUFFIXES):
            return [f.read()]
        if file.name.endswith(".json"):
            try:
                records = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"corpus file {file} is not JSON ({err.msg}, line {err.lineno} column {err.colno}); "
                                 f"fix it.") from None
            records = records if isinstance(records, list) else [records]
            return [_field(record, text_field, f"{file} record {i}") for i, record in enumerate(records)]
        texts = []
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"corpus file {file}: line {number} is not JSON ({err.msg}, column {err.colno}); "
                                     f"each line must be one JSON record: fix or delete that line.") from None
                texts.append(_field(record, text_field, f"{file} line {number}"))
        return texts


def _field(record: dict, text_field: str, where: str) -> str:
    value = record
    for part in text_field.split("."):
        if not isinstance(value, dict) or part not in value:
            keys = list(value) if isinstance(value, dict) else type(value).__name__
            raise ValueError(f"text_field '{text_field}' not found in {where} (its fields: {keys}); set text_field to "
                             f"the field that holds the text.")
        value = value[part]
    if not isinstance(value, str):
        raise TypeError(f"text_field '{text_field}' of {where} is {type(value).__name__}, expected a string.")
    return value


def _dataset_texts(dataset, text_field: str, source: str) -> list[str]:
    if hasattr(dataset, "keys"):  # a DatasetDict: index every split
        return [t for split in dataset.values() for t in _dataset_texts(split, text_field, source)]
    head = text_field.split(".")[0]
    if head not in dataset.column_names:
        raise ValueError(f"text_field '{text_field}' not in dataset {source} (its columns: {dataset.column_names}); "
                         f"set text_field to the column that holds the text.")
    return [_field(record, text_field, f"{source} row {i}") for i, record in enumerate(dataset.select_columns(head))]


def _hub_dataset_texts(source: str, text_field: str) -> list[str]:
    import datasets  # lazy: datasets takes ~0.4 s to import; only Hub and saved-dataset sources need it

    try:
        dataset = datasets.load_dataset(source, split="train")
    except Exception as exc:  # datasets raises several types for "not a file, not cached, Hub unreachable"
        raise FileNotFoundError(
            f"corpus '{source}' is not a local file or directory, and datasets.load_dataset('{source}') failed "
            f"({type(exc).__name__}: {exc}). Give a local .txt/.jsonl path, or a dataset id that is cached "
            f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')})."
        ) from exc
    return _dataset_texts(dataset, text_field, source)
