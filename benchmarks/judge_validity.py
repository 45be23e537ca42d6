"""Validity of every toxicity judge on every labelled source, on the rows it never saw.

    HF_HUB_OFFLINE=1 python -m benchmarks.judge_validity [--max-rows 2000 | --all] [--out docs]

Rows of the table are judges (alt-profanity-check, the Davidson MiniLM classifiers, each source classifier, the
combined one, and roberta when the Hub is reachable); columns are sources. A cell is the ROC AUC [DeLong 95% CI] of the
judge on that source's labelled rows it was not fitted on (a seeded sample of --max-rows, the same for every judge,
less the rows the judge saw; HateCheck whole, as the test suite it is); "(own)" marks a source the judge was fitted on
(other rows of it: in-domain, left out of the mean), "seen" a source whose every row the judge saw. Then Spearman's
rho with ToxiGen's human ratings and with Perspective's scores (RealToxicityPrompts), each on rows the judge did not
see, and the mean AUC over the sources the judge never saw (its validity). A second table gives HateCheck accuracy per
functionality (P(toxic) >= 0.5).

Writes <out>/judge-validity.md and <out>/judge_validity.png, and the validity of each judge to
detox/assets/judge_validity.json, which orders evaluate_toxicity.py's headline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.judge_features import DEFAULT_CACHE, evaluation_rows, source_features
from detox.hub import OFFLINE_MODEL, resolve_model_path
from detox.judge_specs import ROBERTA, SOURCE_JUDGES
from detox.judges import _EvaluateToxicity
from detox.validity import VALIDITY_FILE, auc_delong, functionality_accuracy, spearman
from rewards.label_sources import SOURCES
from rewards.minilm_classifier import cached_classifier, cached_rtp_classifier, rtp_continuation_rows, training_data
from rewards.source_classifier import SourceClassifier, cached_source_classifier
from rewards.toxicity import OfflineToxicity, ToxicityClassifier

REPO = Path(__file__).resolve().parents[1]
GRADED = {"toxigen": "ToxiGen human rating", "rtp": "Perspective"}
"""Source -> the graded score its Spearman column compares with."""


class TextJudge:
    """A judge that reads texts: `seen[source]` is the set of row ids it was fitted on (None: every row)."""

    def __init__(self, name: str, scorer, seen: dict, seen_texts: set | None = None):
        self.name, self.scorer, self.seen, self.seen_texts = name, scorer, seen, seen_texts or set()

    def scores(self, source: str, frame, features, at: np.ndarray) -> np.ndarray:
        """P(toxic) of the rows at `at`, kept on disk beside the embeddings so a rerun never scores a text twice."""
        texts = frame["text"].iloc[at].tolist()
        key = hashlib.sha256("\n".join([self.name, str(getattr(self.scorer, "model_path", "")), *texts]).encode())
        path = DEFAULT_CACHE / f"scores-{self.name}-{source}-{key.hexdigest()[:12]}.npy"
        if not path.is_file():
            DEFAULT_CACHE.mkdir(parents=True, exist_ok=True)
            np.save(path, np.asarray(self.scorer.toxicity(texts), dtype=np.float64))
        return np.load(path)

    def unseen(self, source: str, frame, at: np.ndarray) -> np.ndarray | None:
        """The positions in `at` of rows the judge never saw; None when it saw every row of the source."""
        if source in self.seen and self.seen[source] is None:
            return None
        keep = ~frame["row_id"].iloc[at].isin(self.seen.get(source, set())).to_numpy()
        keep &= ~frame["text"].iloc[at].isin(self.seen_texts).to_numpy()
        return at[keep]


class FeatureJudge(TextJudge):
    """A source classifier scored from the cached embeddings of the same encoder, pooling and length."""

    def scores(self, source: str, frame, features, at: np.ndarray) -> np.ndarray:
        config = self.scorer.config
        raw = features[config["pooling"]][at].astype(np.float64) @ self.scorer.weight + self.scorer.bias
        calibration = config["calibration"]
        return raw if calibration["method"] == "none" else calibration["a"] * raw + calibration["b"]


def build_judges() -> list[TextJudge]:
    judges = [TextJudge("offline", OfflineToxicity(), {"davidson": None})]  # trained on every Davidson tweet
    for name, part in (("minilm_davidson", "judge"), ("minilm_davidson_reward", "reward")):
        directory = cached_classifier(part)
        judges.append(TextJudge(name, ToxicityClassifier(model=str(directory)),
                                {"davidson": {str(i) for i in training_data(directory)["row_ids"]}}))
    rtp_texts = {t.strip() for t in rtp_continuation_rows(OFFLINE_MODEL)[0]}
    # fitted on RealToxicityPrompts continuations: its rtp cell is in-domain; the rows it saw are known by their text
    judges.append(TextJudge("minilm_rtp", ToxicityClassifier(model=str(cached_rtp_classifier())), {"rtp": set()},
                            rtp_texts))
    for name, sources in SOURCE_JUDGES.items():
        classifier = SourceClassifier(cached_source_classifier(sources, "judge"))
        seen = {entry["source"]: set(entry["row_ids"]) | set(entry.get("calibration_row_ids", []))
                for entry in classifier.config["training_data"]}
        judges.append(FeatureJudge(name, classifier, seen))
    try:
        resolve_model_path(ROBERTA, what="judge roberta")
        judges.append(TextJudge("roberta", _EvaluateToxicity(), {}))
    except Exception as err:  # the Hub is unreachable: the table says so
        print(f"roberta left out: {str(err).splitlines()[0][:160]}", file=sys.stderr)
    return judges


def measure(judges, data: dict, max_rows: int | None) -> dict:
    """judge -> {"auc": {source: (auc, low, high, own)}, "spearman": {source: rho}, "hatecheck": {...},
    "mean_unseen_auc": float, "unseen_sources": [...]}."""
    results = {}
    for judge in judges:
        print(f"scoring {judge.name}", file=sys.stderr, flush=True)
        entry = {"auc": {}, "spearman": {}}
        for source, (frame, features) in data.items():
            own = source in judge.seen
            at = judge.unseen(source, frame, evaluation_rows(frame, None if source == "hatecheck" else max_rows))
            if at is None:
                entry["auc"][source] = None
                continue
            scores = judge.scores(source, frame, features, at)
            entry["auc"][source] = (*auc_delong(frame["label"].to_numpy()[at], scores), own)
            if source in GRADED:
                graded = judge.unseen(source, frame, evaluation_rows(frame, max_rows, graded=True))
                entry["spearman"][source] = spearman(judge.scores(source, frame, features, graded),
                                                     frame["score"].to_numpy()[graded])
            if source == "hatecheck":
                entry["hatecheck"] = functionality_accuracy(frame["functionality"].to_numpy()[at],
                                                            frame["label"].to_numpy()[at], _probability(judge, scores))
        unseen = {s: v[0] for s, v in entry["auc"].items() if v is not None and not v[3]}
        entry["unseen_sources"], entry["mean_unseen_auc"] = sorted(unseen), float(np.mean(list(unseen.values())))
        results[judge.name] = entry
    return results


def _probability(judge, scores: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-scores)) if isinstance(judge, FeatureJudge) else scores


def validity_table(results: dict) -> str:
    header = ["judge", *SOURCES, *(f"Spearman, {what}" for what in GRADED.values()), "mean AUC, unseen sources"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name, entry in sorted(results.items(), key=lambda kv: -kv[1]["mean_unseen_auc"]):
        cells = []
        for source in SOURCES:
            value = entry["auc"].get(source)
            cells.append("seen" if value is None else
                         f"{value[0]:.3f} [{value[1]:.3f}, {value[2]:.3f}]" + (" (own)" if value[3] else ""))
        cells += [f"{entry['spearman'][s]:.3f}" + (" (own)" if entry["auc"][s] is None or entry["auc"][s][3] else "")
                  if s in entry["spearman"] else "seen" for s in GRADED]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | **{entry['mean_unseen_auc']:.3f}** |")
    return "\n".join(lines)


def hatecheck_table(results: dict) -> str:
    names = sorted(results, key=lambda n: -results[n]["mean_unseen_auc"])
    functionalities = sorted(next(iter(results.values()))["hatecheck"])
    lines = ["| functionality (cases) | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for f in functionalities:
        n = results[names[0]]["hatecheck"][f][1]
        lines.append(f"| {f} ({n}) | " + " | ".join(f"{results[j]['hatecheck'][f][0]:.2f}" for j in names) + " |")
    return "\n".join(lines)


def heatmap(results: dict, path: Path) -> None:
    """Judges x (sources' AUC, Spearman columns) as a coloured grid, own-source cells marked with a dot."""
    from matplotlib.figure import Figure

    names = sorted(results, key=lambda n: -results[n]["mean_unseen_auc"])
    columns = [*(f"AUC {s}" for s in SOURCES), *(f"rho {s}" for s in GRADED), "mean unseen AUC"]
    grid = np.full((len(names), len(columns)), np.nan)
    for i, name in enumerate(names):
        entry = results[name]
        for j, source in enumerate(SOURCES):
            if entry["auc"].get(source) is not None:
                grid[i, j] = entry["auc"][source][0]
        for j, source in enumerate(GRADED, start=len(SOURCES)):
            grid[i, j] = entry["spearman"].get(source, np.nan)
        grid[i, -1] = entry["mean_unseen_auc"]
    fig = Figure(figsize=(1.1 * len(columns) + 3, 0.5 * len(names) + 2))
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="viridis", vmin=0.3, vmax=1.0, aspect="auto")
    for i, name in enumerate(names):
        for j in range(len(columns)):
            source = columns[j].split()[-1]  # "AUC toxigen", "rho toxigen": the source of the column
            own = source in SOURCES and (results[name]["auc"].get(source) or (0, 0, 0, False))[3]
            text = "seen" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}" + ("*" if own else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if grid[i, j] < 0.7 else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_title("Judge validity on rows each judge never saw (* = own source, other rows)")
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-rows", type=int, default=2000, help="validation rows per source (a seeded sample)")
    parser.add_argument("--all", action="store_true", help="validate on every row of every source")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--ranking", type=Path, default=VALIDITY_FILE, help="where the validity ranking goes")
    args = parser.parse_args()
    max_rows = None if args.all else args.max_rows
    data = {name: source_features(name) for name in SOURCES}
    results = measure(build_judges(), data, max_rows)
    table, hatecheck = validity_table(results), hatecheck_table(results)
    print(table + "\n\n" + hatecheck)
    args.out.mkdir(parents=True, exist_ok=True)
    heatmap(results, args.out / "judge_validity.png")
    rows = "all rows" if max_rows is None else f"a seeded sample of at most {max_rows} labelled rows"
    (args.out / "judge-validity.md").write_text(
        f"# Judge validity\n\n{__doc__.split(chr(10) * 2)[2]}\n\nROC AUC [95% CI] on {rows} per source, less the "
        f"rows each judge saw; `python -m benchmarks.judge_validity{' --all' if max_rows is None else ''}`. Each mean "
        "covers the sources that judge never saw, so judges fitted on more sources are averaged over fewer; HateCheck "
        f"is the one source no judge saw.\n\n{table}\n\n"
        f"## HateCheck accuracy per functionality (P(toxic) >= 0.5)\n\n{hatecheck}\n\n"
        "![judge validity](judge_validity.png)\n", encoding="utf-8")
    ranking = {name: {"mean_unseen_auc": round(e["mean_unseen_auc"], 4), "unseen_sources": e["unseen_sources"]}
               for name, e in results.items()}
    args.ranking.write_text(json.dumps({"rows_per_source": max_rows, "judges": ranking}, indent=1) + "\n")


if __name__ == "__main__":
    main()
