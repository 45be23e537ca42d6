"""A verbatim-overlap index of a forget corpus: the set of its token n-grams, stored as sorted 64-bit hashes.

Built once per (corpus, n, tokenizer) and cached as `.npy` + `.json`, so a large corpus is tokenised only once.
`NgramIndex.share(token_id_lists)` answers "what fraction of each completion's n-grams occur in the corpus?" with
one vectorised hash pass and one `np.searchsorted` over the whole batch (well under a millisecond for 64 completions
of 100 tokens; tokenising them costs more).

Hashes are 64-bit, so two different n-grams collide with probability ~2^-64 per pair: for a corpus of 10^8 n-grams
a completion n-gram is a false hit with probability ~10^-11, far below anything a reward can see.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path

import numpy as np

from detox.corpus import corpus_fingerprint, read_corpus
from detox.hub import cache_dir as detox_cache_dir

_CHUNK_CHARS = 65536  # tokenise big documents in newline-aligned chunks so the tokenizer never holds a whole book
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier (splitmix64's increment) for the rolling combine


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, elementwise on uint64 (wrap-around multiplication is the intended modulo 2^64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """Hash every length-n window of a token sequence.

    ids: (L,) integer token ids. Returns (max(L - n + 1, 0),) uint64, window i hashing ids[i:i+n] in order.
    """
    ids = np.asarray(ids, dtype=np.uint64)
    windows = len(ids) - n + 1
    if windows <= 0:
        return np.empty(0, dtype=np.uint64)
    token_hash = _mix64(ids + _GOLDEN)
    with np.errstate(over="ignore"):
        h = np.zeros(windows, dtype=np.uint64)
        for j in range(n):  # h = ((h * G) + hash(tok_j)) mod 2^64, one vector op per position in the window
            h = h * _GOLDEN + token_hash[j : j + windows]
        return _mix64(h)


def batch_ngram_hashes(token_id_lists, n: int, ignore_ids=()) -> tuple[np.ndarray, np.ndarray]:
    """Hash the n-grams of B sequences in one pass over their concatenation.

    token_id_lists: B sequences of token ids (lists or arrays); ids in `ignore_ids` are removed first.
    Returns (hashes (M,) uint64, owner (M,) int64): every n-gram lying inside one sequence, and that sequence's index.
    """
    lengths = [len(ids) for ids in token_id_lists]
    flat = np.fromiter(itertools.chain.from_iterable(token_id_lists), dtype=np.int64, count=sum(lengths))
    owner = np.repeat(np.arange(len(lengths)), lengths)
    if len(ignore_ids):
        keep = ~np.isin(flat, np.asarray(ignore_ids, dtype=np.int64))
        flat, owner = flat[keep], owner[keep]
    hashes = ngram_hashes(flat, n)
    # owner is non-decreasing, so window i = flat[i:i+n] stays in one sequence iff its ends have the same owner
    inside = owner[: len(hashes)] == owner[n - 1 :]
    return hashes[inside], owner[: len(hashes)][inside]


class NgramIndex:
    """Sorted unique uint64 hashes of every token n-gram of a corpus, plus metadata (n, tokenizer, fingerprint)."""

    def __init__(self, hashes: np.ndarray, n: int, meta: dict | None = None):
        if n < 1:
            raise ValueError(f"n ({n}) must be >= 1; 8 is a good default for verbatim recall of prose.")
        self.hashes = np.unique(np.asarray(hashes, dtype=np.uint64))  # np.unique sorts, as searchsorted requires
        self.n = n
        self.meta = dict(meta or {}, n=n, num_ngrams=int(len(self.hashes)))

    def __len__(self) -> int:
        return len(self.hashes)

    @classmethod
    def from_token_ids(cls, token_id_lists, n: int, meta: dict | None = None) -> NgramIndex:
        """Index the n-grams of each sequence separately (no n-gram spans two sequences)."""
        hashes, _ = batch_ngram_hashes(token_id_lists, n)
        return cls(hashes, n, meta)

    @classmethod
    def from_texts(cls, texts: list[str], tokenizer, n: int = 8, meta: dict | None = None) -> NgramIndex:
        """Tokenise texts (no special tokens) and index their n-grams."""
        chunks = [chunk for text in texts for chunk in _newline_chunks(text, _CHUNK_CHARS)]
        ids = tokenizer(chunks, add_special_tokens=False)["input_ids"] if chunks else []
        return cls.from_token_ids(ids, n, meta)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """hashes: (M,) uint64 -> (M,) bool membership."""
        if len(self.hashes) == 0 or len(hashes) == 0:
            return np.zeros(len(hashes), dtype=bool)
        pos = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        return self.hashes[pos] == hashes

    def share(self, token_id_lists, ignore_ids=()) -> np.ndarray:
        """For each sequence, the fraction of its n-grams found in the index.

        token_id_lists: B sequences of token ids; ids in `ignore_ids` (e.g. EOS, padding) are dropped first.
        Returns (B,) float64 in [0, 1]; 0 for a sequence with fewer than n tokens. The whole batch is hashed and
        looked up at once (one searchsorted), so the cost hardly depends on B.
        """
        batch = len(token_id_lists)
        hashes, owner = batch_ngram_hashes(token_id_lists, self.n, ignore_ids)
        counts = np.bincount(owner, minlength=batch)
        hits = np.bincount(owner, weights=self.contains(hashes), minlength=batch)
        return np.divide(hits, counts, out=np.zeros(batch), where=counts > 0)

    def save(self, stem: str | os.PathLike) -> None:
        """Write `<stem>.npy` (hashes) and `<stem>.json` (metadata), each atomically via a rename."""
        stem = Path(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        tmp = stem.with_name(f".{stem.name}.{os.getpid()}")
        with open(f"{tmp}.npy", "wb") as f:
            np.save(f, self.hashes, allow_pickle=False)
        Path(f"{tmp}.json").write_text(json.dumps(self.meta, indent=2, sort_keys=True))
        os.replace(f"{tmp}.npy", f"{stem}.npy")
        os.replace(f"{tmp}.json", f"{stem}.json")  # json last: its presence marks a complete index

    @classmethod
    def load(cls, stem: str | os.PathLike) -> NgramIndex:
        meta = json.loads(Path(f"{stem}.json").read_text())
        hashes = np.load(f"{stem}.npy", allow_pickle=False)
        index = cls.__new__(cls)  # the saved array is already sorted and unique: skip np.unique
        index.hashes, index.n, index.meta = hashes, int(meta["n"]), meta
        return index


def build_or_load_index(
    corpus: str | list[str], tokenizer, tokenizer_name: str, n: int = 8, text_field: str = "text",
    cache_dir: str | os.PathLike | None = None,
) -> NgramIndex:
    """The index of `corpus`, read from the cache when the corpus files (path, mtime, size), n and tokenizer match.

    `cache_dir` defaults to `<detox cache>/ngram_index` (`$DETOX_CACHE`, else ~/.cache/detox).
    """
    sources = [corpus] if isinstance(corpus, str) else list(corpus)
    if not sources:
        raise ValueError("corpus is empty: give a text/jsonl file, a directory of them, or a datasets id.")
    if cache_dir is None:
        cache_dir = detox_cache_dir() / "ngram_index"
    fingerprint = corpus_fingerprint(sources, text_field)
    key_material = json.dumps([fingerprint, n, tokenizer_name, len(tokenizer)])
    stem = Path(cache_dir) / hashlib.sha256(key_material.encode()).hexdigest()[:24]
    if Path(f"{stem}.json").exists() and Path(f"{stem}.npy").exists():
        return NgramIndex.load(stem)
    meta = {"tokenizer": tokenizer_name, "vocab_size": len(tokenizer), "corpus": sources,
            "corpus_fingerprint": hashlib.sha256(json.dumps(fingerprint).encode()).hexdigest()}
    index = NgramIndex.from_texts(read_corpus(sources, text_field), tokenizer, n, meta)
    index.save(stem)
    return index


def _newline_chunks(text: str, size: int) -> list[str]:
    """Split text into pieces of at most `size` characters, each cut after a newline. GPT-2-style pre-tokenisation
    already splits at newlines, so a cut changes no tokens; it only loses the n-1 n-grams that span it."""
    chunks, start = [], 0
    while start < len(text):
        end = text.rfind("\n", start, start + size) + 1 if start + size < len(text) else len(text)
        end = end if end > start else min(start + size, len(text))
        chunks.append(text[start:end])
        start = end
    return chunks
