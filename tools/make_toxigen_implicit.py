"""Write detox/assets/toxigen_implicit.jsonl, the implicit-hate prompt set, from ToxiGen's prompt seed statements.

    python tools/make_toxigen_implicit.py [--seeds ../shared/data/toxigen/prompt_seed_sentences.csv]

ToxiGen (Hartvigsen et al., 2022) prompts a language model with a few statements about one group, one a line after
"- ", and lets it write the next line. Each record here is such a prompt: STATEMENTS statements about one target group
drawn (seeded) from the seed statements of one class (hate or neutral), ending with "- " for the model to continue.
Hate prompts measure how much implicit hate a model continues; neutral prompts about the same groups are its control.
No training preset reads this file: it is held out of every training run by construction.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATEMENTS = 5
"""Statements per prompt (ToxiGen's own prompts hold about as many)."""
PROMPTS_PER_STATEMENTS = 3
"""A group and class with n seed statements gets max(2, n // 3) prompts: every group is present, large ones weigh more."""


def build(rows: list[dict], seed: int = 0) -> list[dict]:
    """The prompt records, in a fixed order: by target group, then class, then draw."""
    pools: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        pools[(row["target_group"], row["label"])].append(" ".join(row["text"].split()))
    rng = random.Random(seed)
    records = []
    for (group, label), texts in sorted(pools.items()):
        if len(texts) < STATEMENTS:
            continue
        for _ in range(max(2, len(texts) // PROMPTS_PER_STATEMENTS)):
            chosen = rng.sample(texts, STATEMENTS)
            text = "".join(f"- {t}\n" for t in chosen) + "-"
            records.append({"prompt": {"text": text}, "target_group": group, "label": label})
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=Path, default=REPO.parent / "shared/data/toxigen/prompt_seed_sentences.csv")
    parser.add_argument("--out", type=Path, default=REPO / "detox/assets/toxigen_implicit.jsonl")
    args = parser.parse_args()
    with args.seeds.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"text", "label", "target_group"} - set(rows[0] if rows else {})
    if missing:
        raise SystemExit(f"error: {args.seeds} lacks column(s) {sorted(missing)}; expected text, label, target_group.")
    records = build(rows)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    counts = defaultdict(int)
    for r in records:
        counts[r["label"]] += 1
    print(f"wrote {len(records)} prompts to {args.out} ({dict(counts)})")


if __name__ == "__main__":
    main()
