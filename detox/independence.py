"""Which labelled data sources a scorer learned from, and so whether a judge is independent of a trained model.

A judge is independent of a model only if it shares no data source with any reward, or any loss-based training set,
in the model's saved config. Sources are named as in `rewards.label_sources` (davidson, toxigen, stormfront, rtp) plus
the data of the third-party scorers: alt-profanity-check was trained on Davidson et al.'s tweets and the Jigsaw
Wikipedia toxic comments (its package's README, "How"), the roberta judge on the Dynabench rounds of Vidgen et al.
(2021). A corpus or a model this module does not know is its own source, named by its path or id.
"""

from __future__ import annotations

import json
from pathlib import Path

from detox.judge_specs import COMBINED_SOURCES, SOURCE_JUDGES
from rewards.toxicity import DEFAULT_MODEL as ROBERTA

PROFANITY_CHECK_SOURCES = frozenset({"davidson", "jigsaw_toxic_comments"})
ROBERTA_SOURCES = frozenset({"dynabench_hate"})
_BUILTIN_JUDGE_SOURCES = {
    "offline": PROFANITY_CHECK_SOURCES,
    "minilm_davidson": {"davidson"},
    "minilm_davidson_reward": {"davidson"},
    "minilm_rtp": {"rtp"},
    "roberta": ROBERTA_SOURCES,
}
_CONTINUATIONS = {"builtin:rtp_toxic_continuations": "rtp", "builtin:rtp_clean_continuations": "rtp"}
# detox/data.py's labelled continuation sets: RealToxicityPrompts texts, labelled by their Perspective scores


def judge_sources(source: str) -> set[str]:
    """The data sources of the judge built from `source` (a built-in judge name or a classifier directory)."""
    if source in SOURCE_JUDGES:
        return set(SOURCE_JUDGES[source])
    if source in _BUILTIN_JUDGE_SOURCES:
        return set(_BUILTIN_JUDGE_SOURCES[source])
    return model_sources(source)


def model_sources(model: str) -> set[str]:
    """The sources of a classifier: read from the record a detox-built directory keeps, else the model itself."""
    directory = Path(model).expanduser()
    for name in ("classifier.json", "config.json"):
        record = directory / name
        if record.is_file():
            data = json.loads(record.read_text(encoding="utf-8"))
            if name == "classifier.json":
                return {entry["source"] for entry in data["training_data"]}
            fitted = data.get("detox_training_data")
            if fitted:
                return {"rtp"} if fitted.get("source") == "rtp_continuations" else {"davidson"}
    return set(ROBERTA_SOURCES) if model == ROBERTA else {model}


def reward_data_sources(component: dict) -> set[str]:
    """The data sources a reward (one `rewards[]` entry of a saved config, as a dict) learned from; empty for rewards
    that hold no learned toxicity scorer (phrases, numbers, n-gram indexes of a forget corpus are the corpus)."""
    kind, options = component.get("type"), component.get("options") or {}
    if kind == "offline_toxicity":
        return set(PROFANITY_CHECK_SOURCES)
    if kind == "minilm_toxicity":
        return {"rtp"} if options.get("data") == "rtp_continuations" else {"davidson"}
    if kind == "source_toxicity":
        sources = options.get("sources", COMBINED_SOURCES)
        return {sources} if isinstance(sources, str) else set(sources)
    if kind == "toxicity":
        return model_sources(options.get("model", ROBERTA))
    corpus = options.get("corpus")
    return {_CONTINUATIONS.get(corpus, corpus)} if corpus else set()


def run_data_sources(run_config: dict | None) -> set[str]:
    """Every data source a run learned from: its rewards' and its loss-based training sets' (data.forget and
    data.retain of train_unlearn.py's config; ptx.corpus and forget_loss.corpus of train_ppo.py's)."""
    config = run_config or {}
    sources = set().union(*(reward_data_sources(c) for c in config.get("rewards") or []))
    corpora = [(config.get("data") or {}).get(key) for key in ("forget", "retain")]
    corpora += [(config.get(section) or {}).get("corpus") for section in ("ptx", "forget_loss")]
    return sources | {_CONTINUATIONS.get(c, c) for c in corpora if c}
