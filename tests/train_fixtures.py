"""Rewards and workers used by the training tests (loaded as `type: callable`, path "train_fixtures:<name>")."""

from __future__ import annotations

import json
from functools import lru_cache


@lru_cache(maxsize=4)
def _token_set(ids_file: str) -> frozenset[int]:
    return frozenset(json.loads(open(ids_file).read()))


def token_set_share(prompts, completions, completion_ids=None, ids_file="", **kwargs):
    """Share of each completion's tokens that belong to the set of token ids listed in `ids_file`."""
    chosen = _token_set(ids_file)
    return [sum(t in chosen for t in ids) / max(1, len(ids)) for ids in completion_ids]
