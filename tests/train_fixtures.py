"""Rewards and workers used by the training tests (loaded as `type: callable`, path "train_fixtures:<name>")."""

from __future__ import annotations


def token_set_share(prompts, completions, completion_ids=None, modulus=8, **kwargs):
    """Share of completion tokens whose id is divisible by `modulus`: about 1/modulus for a random model, so the
    reward is easy to earn and dense enough for a tiny model to learn from within a few dozen steps."""
    return [sum(t % modulus == 0 for t in ids) / max(1, len(ids)) for ids in completion_ids]
