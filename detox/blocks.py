"""Text as token blocks for training on it: a corpus cut into blocks, padded batches with their labels, and a
seeded draw of each step's blocks that depends on the step alone (so a resumed run sees the batches an uninterrupted
one would). The loss-based baselines train on forget and retain blocks; PPO-ptx (detox.ptx) on retain blocks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from detox.corpus import read_corpus
from detox.data import CONTINUATION_SETS, continuation_records
from detox.losses import IGNORE


@dataclass
class Blocks:
    """Token blocks of a corpus, and where each block's learned tokens start (0: every token counts)."""

    ids: list[list[int]]
    starts: list[int]

    def __len__(self) -> int:
        return len(self.ids)


def _read(corpus: str, text_field: str, what: str) -> list[str]:
    """The corpus's texts; a corpus that cannot be read is an error that names the setting it came from."""
    try:
        return read_corpus(corpus, text_field)
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"{what}: {err}") from None


def _record_pairs(corpus: str, data, tokenizer, what: str) -> list[tuple[str, str]] | None:
    """(text, completion) per record of a builtin continuation set or of a corpus with `data.completion_field`;
    None for a corpus of plain texts."""
    if corpus in CONTINUATION_SETS:
        return [(r["text"], r["completion"]) for r in continuation_records(corpus, tokenizer)]
    if not data.completion_field:
        return None
    texts, completions = _read(corpus, data.text_field, what), _read(corpus, data.completion_field, what)
    pairs = [(t, c) for t, c in zip(texts, completions) if c.strip()]
    if not pairs:
        raise ValueError(f"{what} '{corpus}' holds no record with a non-empty '{data.completion_field}'.")
    return pairs


def chunk_blocks(token_id_lists: list[list[int]], eos_id: int, max_length: int) -> list[list[int]]:
    """Concatenate documents (EOS after each) and cut into full `max_length` blocks; the ragged tail is dropped
    unless it is the only block."""
    stream = [t for ids in token_id_lists for t in (*ids, eos_id)]
    blocks = [stream[i:i + max_length] for i in range(0, len(stream) - max_length + 1, max_length)]
    return blocks or ([stream] if len(stream) >= 2 else [])


def load_blocks(corpus: str, data, tokenizer, what: str) -> Blocks:
    """A corpus as token blocks: text + completion per record (`data.completion_field`, or a builtin continuation
    set), or the texts joined with EOS and cut into `data.max_length` blocks (`data.pack`; else each text's first
    `data.max_length` tokens). An empty corpus is an error."""
    pairs = _record_pairs(corpus, data, tokenizer, what)
    if pairs is not None:
        prompts = tokenizer([t for t, _ in pairs], add_special_tokens=False)["input_ids"]
        answers = tokenizer([c for _, c in pairs], add_special_tokens=False)["input_ids"]
        blocks = Blocks([(p + a)[: data.max_length] for p, a in zip(prompts, answers)], [len(p) for p in prompts])
    else:
        texts = [t for t in _read(corpus, data.text_field, what) if t.strip()]
        if not texts:
            raise ValueError(f"{what} '{corpus}' holds no text (field '{data.text_field}'); give a corpus with at "
                             f"least one text.")
        token_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        if data.pack:
            ids = chunk_blocks(token_ids, tokenizer.eos_token_id, data.max_length)
        else:  # each text a block of its own, from its first token, as a model fine-tuned one text per example
            ids = [t[: data.max_length] for t in token_ids]
        blocks = Blocks(ids, [0] * len(ids))
    keep = [i for i, (b, s) in enumerate(zip(blocks.ids, blocks.starts)) if len(b) > max(s, 1)]
    if not keep:
        raise ValueError(f"{what} '{corpus}': no block has a token to learn within data.max_length "
                         f"({data.max_length}) tokens.")
    keep = keep[: data.max_blocks] if data.max_blocks else keep
    return Blocks([blocks.ids[i] for i in keep], [blocks.starts[i] for i in keep])


def pad_blocks(blocks: list[list[int]], pad_id: int, device, starts: list[int] | None = None):
    """Right-padded (input_ids, attention_mask, labels) of token blocks. Padding, and each block's tokens before
    its start (a record's prompt), are IGNORE in the labels."""
    width = max(len(b) for b in blocks)
    ids = torch.full((len(blocks), width), pad_id, dtype=torch.long)
    labels = torch.full((len(blocks), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(blocks), width), dtype=torch.long)
    for row, block in enumerate(blocks):
        start = starts[row] if starts else 0
        ids[row, : len(block)] = torch.tensor(block)
        labels[row, start : len(block)] = torch.tensor(block[start:])
        mask[row, : len(block)] = 1
    return ids.to(device), mask.to(device), labels.to(device)


def seeded_batch(n: int, batch: int, step: int, rank: int, world: int, seed: int) -> list[int]:
    """Indices of this rank's `batch` items at `step`: one seeded shuffle of range(n) per epoch."""
    chosen, orders = [], {}
    start = step * batch * world + rank * batch
    for position in range(start, start + batch):
        epoch, offset = divmod(position, n)
        if epoch not in orders:
            orders[epoch] = random.Random(seed * 100_003 + epoch).sample(range(n), n)
        chosen.append(orders[epoch][offset])
    return chosen
