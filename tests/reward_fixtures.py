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


FAULTS = {"raise", "nan", "huge"}
HUGE = 3e38  # finite in float32 (max 3.4e38), but its square in the value loss is inf


def faulty_reward(prompts, completions, state, at_call, fault="raise", sample=1, **kwargs):
    """Word count, except at the `at_call`-th call (1-based; calls are counted in the JSON file `state`, so the count
    survives a fresh process): `nan` returns NaN and `huge` returns HUGE for completion `sample` of that call only;
    `raise` raises for that completion, and again whenever it is scored later, so the composer's one-by-one
    re-scoring finds the sample."""
    import json
    from pathlib import Path

    if fault not in FAULTS:
        raise ValueError(f"fault {fault!r} must be one of {sorted(FAULTS)}")
    path = Path(state)
    record = json.loads(path.read_text()) if path.is_file() else {"calls": 0, "victim": None}
    record["calls"] += 1
    scores = [float(len(c.split())) for c in completions]
    if record["calls"] == at_call:
        record["victim"] = completions[sample]
        if fault == "nan":
            scores[sample] = float("nan")
        elif fault == "huge":
            scores[sample] = HUGE
    path.write_text(json.dumps(record))
    if fault == "raise" and record["victim"] in completions:
        raise RuntimeError(f"scorer crashed on {record['victim']!r}")
    return scores
