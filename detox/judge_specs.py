"""Judge specs: the names of the built-in toxicity judges and the `source` / `name=source` specs that name judges.

Parsing a spec loads nothing, so a run's config checks its judges before any model loads; detox.judges builds them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROBERTA = "facebook/roberta-hate-speech-dynabench-r4-target"
COMBINED_SOURCES = ("toxigen", "stormfront", "davidson")
"""The sources of the combined judge and, by default, of the `source_toxicity` reward."""
SOURCE_JUDGES = {
    "judge_davidson": ("davidson",),
    "judge_toxigen": ("toxigen",),
    "judge_stormfront": ("stormfront",),
    "judge_rtp": ("rtp",),
    "judge_combined": COMBINED_SOURCES,
}
"""Judge name -> the label sources (rewards.label_sources) whose judge part its classifier is fitted on
(rewards/source_classifier.py); one judge per fittable source, and the combined one."""
BUILTIN_JUDGES = {
    "offline": "alt-profanity-check",
    "minilm_davidson": "MiniLM + logistic regression, Davidson judge rows (odd row ids)",
    "minilm_davidson_reward": "MiniLM + logistic regression, Davidson reward rows (even row ids)",
    "minilm_rtp": "MiniLM + logistic regression, labelled RealToxicityPrompts continuations of the training prompts",
    "roberta": f"{ROBERTA} via evaluate.load('toxicity')",
    **{name: f"MiniLM mean pooling + logistic regression, judge part of {', '.join(sources)}"
       for name, sources in SOURCE_JUDGES.items()},
}
"""Built-in judge name -> what it is."""
_NAME = re.compile(r"^[\w.-]+$")


@dataclass
class Judge:
    name: str
    """Column name in tables and `judge/<name>/mean` in training logs."""
    source: str
    """Built-in judge name, classifier directory or Hub id."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of rewards.toxicity.ToxicityClassifier, for a directory or Hub id."""


def parse_judges(specs: list[str], options: dict[str, dict] | None = None) -> list[Judge]:
    """`["offline", "rob=facebook/x"]` -> judges; a bare directory or id is named after its last component."""
    judges = []
    for spec in specs:
        name, _, source = spec.rpartition("=") if "=" in spec else ("", "", spec)
        name = name or Path(source.rstrip("/")).name
        judges.append(Judge(name, source, dict((options or {}).get(name, {}))))
    names = [j.name for j in judges]
    if not names or len(set(names)) < len(names) or not all(_NAME.match(n) for n in names):
        raise ValueError(
            f"judges: names {names} must be given, unique, and only letters, digits, '.', '_', '-'. Built-in "
            f"judges: {sorted(BUILTIN_JUDGES)}; any classifier directory or Hub id works too (`name=path`)."
        )
    unknown = sorted(set(options or {}) - set(names))
    if unknown:
        raise ValueError(f"judge_options names {unknown}, which are not judges; judges are {names}.")
    return judges
