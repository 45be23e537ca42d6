"""Module-level reward functions that tests load through `type: callable` paths ("reward_fixtures:<name>")."""

from __future__ import annotations

NOT_CALLABLE = 3


def count_token_reward(prompts, completions, scale=1.0, **kwargs):
    """scale * number of whitespace-separated words in each completion."""
    return [scale * len(c.split()) for c in completions]


def constant_reward(prompts, completions, value=1.0, **kwargs):
    return [value] * len(completions)


def chunk_size_reward(prompts, completions, completion_ids, **kwargs):
    """1000 * (size of the chunk this call saw) + len(completion_ids[i]): shows chunking and kwargs alignment."""
    return [1000.0 * len(completions) + len(ids) for ids in completion_ids]


def raising_reward(prompts, completions, **kwargs):
    if any("boom" in c for c in completions):
        raise ValueError("cannot score 'boom'")
    return [0.0] * len(completions)


def nan_reward(prompts, completions, **kwargs):
    return [float("nan") if "nan" in c else 0.0 for c in completions]


def none_reward(prompts, completions, **kwargs):
    return [None] * len(completions)


def short_reward(prompts, completions, **kwargs):
    return [0.0] * (len(completions) - 1)
