"""Toxicity judges: scorers that give P(toxic) of texts, for evaluation tables and for watching training.

A model is never judged only by the reward it was trained on. A judge is named on the command line as `source` or
`name=source`, where source is one of the built-in judges below, a sequence-classifier directory or a Hub id:

    offline                  alt-profanity-check (a linear SVM on word n-grams)
    minilm_davidson          MiniLM + logistic regression fitted on the *judge* rows of the shipped Davidson tweets,
                             disjoint from the rows of any reward built the same way (rewards.minilm_classifier)
    minilm_davidson_reward   the same classifier fitted on the *reward* rows: the `minilm_toxicity` reward's scorer
    minilm_rtp               MiniLM + logistic regression fitted on the labelled RealToxicityPrompts continuations of
                             the training prompts: the scorer of `minilm_toxicity` with `data: rtp_continuations`
    roberta                  facebook/roberta-hate-speech-dynabench-r4-target, through `evaluate`'s toxicity
                             measurement (needs the Hub; fails at once without it)
    judge_<source>           MiniLM sentence embedding + logistic regression fitted on the judge part of one
                             labelled source: judge_davidson, judge_toxigen, judge_stormfront, judge_rtp
                             (rewards/label_sources.py, rewards/source_classifier.py)
    judge_combined           the same, fitted on the judge parts of toxigen, stormfront and davidson together

The specs that name judges, and the built-in names, are in detox.judge_specs (low, so that a config checks them before
anything loads); `JUDGES` maps each built-in name to its builder. Each judge's relation to a run (read from the run's
saved config) is `reward` (it is one of the rewards), `sibling` (it learned from a data source that one of the run's
rewards or loss-based training sets learned from: only partly independent) or `independent` (it shares no data source
with the run; detox/independence.py). Among judges of the same relation, the most valid comes first: the highest mean
ROC AUC on sources it never saw (detox/assets/judge_validity.json, written by benchmarks/judge_validity.py).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from detox.hub import cache_dir, resolve_model_path
from detox.independence import judge_sources, run_data_sources
from detox.judge_specs import COMBINED_SOURCES, ROBERTA, SOURCE_JUDGES, Judge
from detox.validity import load_ranking
from rewards.minilm_classifier import cached_classifier, cached_rtp_classifier
from rewards.source_classifier import SourceClassifier, cache_name, cached_source_classifier, check_sources
from rewards.toxicity import OfflineToxicity, ToxicityClassifier

RELATIONS = ("independent", "sibling", "reward")
"""How a judge relates to a run's rewards, from most to least independent; summaries list judges in this order."""


def _offline(judge: Judge, batch_size: int, device: str | None, trust_remote_code: bool):
    return OfflineToxicity()


def _minilm_davidson(judge: Judge, batch_size: int, device: str | None, trust_remote_code: bool):
    return ToxicityClassifier(model=str(cached_classifier("judge")), batch_size=batch_size, device=device)


def _minilm_davidson_reward(judge: Judge, batch_size: int, device: str | None, trust_remote_code: bool):
    return ToxicityClassifier(model=str(cached_classifier("reward")), batch_size=batch_size, device=device)


def _minilm_rtp(judge: Judge, batch_size: int, device: str | None, trust_remote_code: bool):
    return ToxicityClassifier(model=str(cached_rtp_classifier()), batch_size=batch_size, device=device)


def _source_judge(judge: Judge, batch_size: int, device: str | None, trust_remote_code: bool):
    return SourceClassifier(cached_source_classifier(SOURCE_JUDGES[judge.source], "judge"), batch_size, device)


def _classifier(judge: Judge, batch_size: int, device: str | None, trust_remote_code: bool):
    """A classifier directory (a source classifier, or any sequence classifier) or a Hub id; the roberta judge
    without options goes through `evaluate`."""
    if (Path(judge.source).expanduser() / "classifier.json").is_file():
        return SourceClassifier(Path(judge.source).expanduser(), batch_size, device)
    if judge.source == ROBERTA and not judge.options:
        resolve_model_path(ROBERTA, what=f"judge '{judge.name}'")  # offline: a clear error within a second
        return _EvaluateToxicity()
    options = {"batch_size": batch_size, "device": device, "trust_remote_code": trust_remote_code, **judge.options}
    return ToxicityClassifier(model=judge.source, **options)


def _roberta(judge: Judge, batch_size: int, device: str | None, trust_remote_code: bool):
    return _classifier(replace(judge, source=ROBERTA), batch_size, device, trust_remote_code)


JUDGES = {
    "offline": _offline,
    "minilm_davidson": _minilm_davidson,
    "minilm_davidson_reward": _minilm_davidson_reward,
    "minilm_rtp": _minilm_rtp,
    "roberta": _roberta,
    **{name: _source_judge for name in SOURCE_JUDGES},
}
"""Built-in judge name (detox.judge_specs.BUILTIN_JUDGES) -> its builder; any other source is a classifier directory
or Hub id."""


def build_judge(judge: Judge, batch_size: int = 64, device: str | None = None, trust_remote_code: bool = False):
    """An object with `.toxicity(texts) -> (N,) P(toxic)` for `judge`. A Hub judge offline fails at once."""
    return JUDGES.get(judge.source, _classifier)(judge, batch_size, device, trust_remote_code)


class _EvaluateToxicity:
    """`evaluate`'s toxicity measurement (the roberta dynabench classifier, P("hate")) behind `.toxicity`."""

    def __init__(self):
        import evaluate  # lazy: importing evaluate costs seconds, and only this judge needs it

        self.measure = evaluate.load("toxicity", module_type="measurement")

    def toxicity(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.measure.compute(predictions=list(texts))["toxicity"], dtype=np.float64)


def reward_sources(run_config: dict | None) -> set[str]:
    """Judge sources that are rewards of a run (its saved config as a dict): `offline`, `minilm_davidson_reward`,
    `minilm_rtp`, or the classifier a `toxicity` reward loads."""
    sources = set()
    for component in (run_config or {}).get("rewards") or []:
        kind, options = component.get("type"), component.get("options") or {}
        if kind == "offline_toxicity":
            sources.add("offline")
        elif kind == "minilm_toxicity":
            sources.add("minilm_rtp" if options.get("data") == "rtp_continuations" else "minilm_davidson_reward")
        elif kind == "toxicity":
            model = options.get("model", ROBERTA)
            sources |= {model, "roberta"} if model == ROBERTA else {model}
        elif kind == "source_toxicity":
            settings = {k: options[k] for k in ("n_train", "seed") if k in options}
            sources.add(str(cache_dir() / cache_name(check_sources(options.get("sources", COMBINED_SOURCES)),
                                                     "reward", **settings)))
    return sources


def relation(judge: Judge, run_config: dict | None) -> str:
    """`reward`, `sibling` or `independent`: how `judge` relates to the rewards and data of the run described by the
    config, and of every run it started from (a model.name_or_path that is an earlier run's saved model)."""
    chain = run_chain(run_config)
    rewards = set().union(*(reward_sources(config) for config in chain))
    if judge.source in rewards or _same_directory(judge.source, rewards):
        return "reward"
    data = set().union(*(run_data_sources(config) for config in chain))
    return "sibling" if judge_sources(judge.source) & data else "independent"


def run_chain(config: dict | None) -> list[dict | None]:
    """The run's config, then the config of the run whose saved model it started from, and so on back to a model
    detox did not train."""
    chain, seen = [config], set()
    while config is not None:
        start = (config.get("model") or {}).get("name_or_path")
        where = Path(start).expanduser().resolve() if start else None
        if where is None or not where.is_dir() or where in seen:
            break
        seen.add(where)
        config = run_config(str(where))
        if config is not None:
            chain.append(config)
    return chain


def _same_directory(source: str, rewards: set[str]) -> bool:
    path = Path(source).expanduser()
    return path.is_dir() and any(Path(r).expanduser().is_dir() and Path(r).expanduser().samefile(path) for r in rewards)


def run_config(model_path: str) -> dict | None:
    """The detox training config saved beside a model (`detox_config.yaml`), or None for any other model."""
    path = Path(model_path) / "detox_config.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


def judge_labels(relations: dict[str, dict[str, str]]) -> dict[str, str]:
    """Judge -> table header label naming the models whose reward it is (or shares a builder with)."""
    labels = {}
    for judge in {j for per_model in relations.values() for j in per_model}:
        notes = [f"{kind} of {', '.join(m for m, r in relations.items() if r[judge] == kind)}"
                 for kind in ("reward", "sibling") if any(r[judge] == kind for r in relations.values())]
        labels[judge] = f"{judge} ({'; '.join(notes)})" if notes else judge
    return labels


def summary_lines(table: list[dict], judges: list[Judge], relations: dict[str, dict[str, str]]) -> list[str]:
    """One line per model after the base: the relative change of mean toxicity under each judge, the most
    independent judge first and, among equally independent ones, the most valid (highest mean ROC AUC on sources it
    never saw), with the share of prompts whose completions became less toxic and the AUC of base against model
    completions where the table has them; then of perplexity; each with its paired 95% interval."""
    base, lines, validity = table[0]["model"], [], load_ranking()
    for row in table[1:]:
        ordered = sorted(judges, key=lambda j: (RELATIONS.index(relations[row["model"]][j.name]),
                                                -validity.get(j.source, -1.0)))
        parts = []
        for judge in ordered:
            key = f"{judge.name}/"
            delta, base_mean = row[key + "delta_vs_base"], row[key + "mean_toxicity"] - row[key + "delta_vs_base"]
            change = f"{100 * delta / base_mean:+.1f}%" if base_mean > 0 else "n/a"
            valid = f"unseen-source AUC {validity[judge.source]:.3f}; " if judge.source in validity else ""
            floor_free = (f"; less toxic on {row[key + 'share_prompts_less_toxic']:.0%} of prompts, AUC base vs "
                          f"model {row[key + 'auc_base_vs_model']:.3f}" if key + "auc_base_vs_model" in row else "")
            interval = f"[{row[key + 'delta_ci_low']:+.4f}, {row[key + 'delta_ci_high']:+.4f}]"
            parts.append(f"{change} under {judge.name} [{relations[row['model']][judge.name]}] ({valid}"
                         f"Δ {delta:+.4f}, 95% CI {interval}{floor_free})")
        fluency = (f"; perplexity {row['perplexity_change']:+.1%} (95% CI [{row['perplexity_change_ci_low']:+.1%}, "
                   f"{row['perplexity_change_ci_high']:+.1%}])" if "perplexity_change" in row else "")
        lines.append(f"{row['model']} vs {base}: mean toxicity " + "; ".join(parts) + fluency)
    return lines
