"""Alternative labels of "Who's Harry Potter?" (Eldan & Russinovich 2023) for a block of forget text.

Two ideas are combined, as in the paper:
1. Anchored terms. Each idiosyncratic term of the text ("Romeo") is swapped for a generic translation ("the young
   man"). The model reads the translated block, and its next-token predictions there are what it would say about a
   generic story; they are mapped back onto the positions of the original block.
2. Reinforcement bootstrapping. A "reinforced" model (the base fine-tuned further on the text,
   `python -m rewards.make_reinforced`) reads the same translated block; wherever its logits exceed the base
   model's, the base's logits are pushed down: v_generic = v_base - α ReLU(v_reinforced - v_base).

The argmax of v_generic at each mapped position is the alternative label. The base is then fine-tuned on the
original block towards those labels (`losses.alternative_label_loss`). Both models read the translated block, so the
reinforced model's residual familiarity with the story, given the generic names, is what gets subtracted.

Alignment. The block is cut into plain pieces and anchor pieces (an anchor piece carries the space before the term,
so byte-level BPE tokenises it as it would inside the text). Plain pieces tokenise identically in both versions, so
their tokens map one to one. An anchor's last token maps to its translation's last token: from there both versions
predict the same next plain token. Positions whose next token lies inside an anchor (past its first token) get no
label, because the original spelling of the term is exactly what is being unlearned; the position before an
anchor is kept and learns the translation's first token instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from detox.losses import IGNORE, whp_generic_logits


@dataclass
class AlignedBlock:
    """One forget block in its original and translated forms, with the map between their positions."""

    original_ids: list[int]
    translated_ids: list[int]
    source: list[int]
    """For each original position i: the translated position whose prediction serves as i's, or -1 for none."""
    keep: list[bool]
    """For each original position i: whether position i (predicting token i+1) gets an alternative label."""


def split_on_anchors(text: str, pattern) -> list[tuple[str, bool]]:
    """`text` as (piece, is_anchor) pieces; an anchor piece includes the single space before the term, if any."""
    pieces, cursor = [], 0
    for match in pattern.finditer(text):
        start = match.start() - 1 if match.start() > cursor and text[match.start() - 1] == " " else match.start()
        if start > cursor:
            pieces.append((text[cursor:start], False))
        pieces.append((text[start : match.end()], True))
        cursor = match.end()
    if cursor < len(text):
        pieces.append((text[cursor:], False))
    return pieces


def align_block(text: str, anchors, tokenizer) -> AlignedBlock:
    """Tokenise `text` and its anchor translation piece by piece and map their positions (see the module doc).

    `anchors` is a `rewards.forget.AnchorTerms` (its `pattern` finds the terms and `translate` swaps them).
    """
    original, translated, source, inside = [], [], [], []
    for piece, is_anchor in split_on_anchors(text, anchors.pattern):
        ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
        if not is_anchor:
            source.extend(range(len(translated), len(translated) + len(ids)))
            inside.extend([False] * len(ids))
            original.extend(ids)
            translated.extend(ids)
            continue
        generic = tokenizer(anchors.translate(piece), add_special_tokens=False)["input_ids"]
        translated.extend(generic)
        source.extend([-1] * (len(ids) - 1) + [len(translated) - 1 if generic else -1])
        inside.extend([False] + [True] * (len(ids) - 1))
        original.extend(ids)
    keep = [source[i] >= 0 and not inside[i + 1] for i in range(len(original) - 1)] + [False]
    return AlignedBlock(original, translated, source, keep)


@torch.no_grad()
def alternative_labels(
    blocks: list[AlignedBlock], base_logits_fn, reinforced_logits_fn, alpha: float
) -> list[list[int]]:
    """The alternative label sequence of each block, shifted like `input_ids` (label t is the token at t).

    base_logits_fn / reinforced_logits_fn: token id list -> (T, V) logits of that model on it.
    Returns, per block, a list as long as `original_ids`: IGNORE at position 0 and wherever no label applies.
    """
    out = []
    for block in blocks:
        base = base_logits_fn(block.translated_ids)
        reinforced = reinforced_logits_fn(block.translated_ids) if alpha > 0 else base
        labels = [IGNORE] * len(block.original_ids)
        rows = [i for i, k in enumerate(block.keep) if k]
        if rows:
            src = torch.tensor([block.source[i] for i in rows])
            generic = whp_generic_logits(base[src].float(), reinforced[src].float(), alpha)
            for i, token in zip(rows, generic.argmax(dim=-1).tolist()):
                labels[i + 1] = token
        out.append(labels)
    return out
