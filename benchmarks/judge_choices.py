"""The choices that decide a source classifier's verdict, measured on sources it never saw.

    HF_HUB_OFFLINE=1 python -m benchmarks.judge_choices [--max-rows 2000] [--finetune-sources toxigen ...] \
        [--out docs/judge-choices.md]

For each source, a head is fitted on its judge part (2,000 rows, half toxic where it has enough) and validated on
every other source (and on its own rows it did not see):
1. pooling: BERT's pooler output against the mean of the last hidden states (frozen encoder, logistic regression);
2. calibration: a Platt map fitted on 500 other rows of the same part (drawn first, at the source's prevalence), by
   expected calibration error and Brier score on its own unseen rows and on the other sources (a monotone map leaves
   every AUC as it is);
3. head: the logistic regression on frozen mean-pooled features against fine-tuning the whole encoder end to end
   (mean pooling + a linear head, `--finetune-epochs` over `--finetune-rows` judge rows of each source; a CPU-sized
   budget), validated on `--finetune-max-rows` rows of every other source.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.judge_features import DEFAULT_CACHE, evaluation_rows, source_features
from detox.validity import auc_delong, brier, expected_calibration_error
from rewards.label_sources import FITTABLE, SOURCES, calibration_rows, fitting_rows
from rewards.source_classifier import N_CALIBRATION, POOLINGS, MiniLMEncoder, finetune, fit_head, fit_platt

N_TRAIN = 2000


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def heads(data: dict, max_rows: int | None) -> tuple[list[str], list[str]]:
    """Pooler against mean pooling, then Platt calibration: two Markdown tables."""
    pool_lines = ["| fitted on | pooling | " + " | ".join(SOURCES) + " | mean, unseen sources |",
                  "|---|---|" + "---|" * (len(SOURCES) + 1)]
    calib_lines = ["| fitted on | rows | ECE before | ECE after Platt | Brier before | Brier after |",
                   "|---|---|---|---|---|---|"]
    for source in FITTABLE:
        frame, features = data[source]
        calibration = calibration_rows(frame, "judge", N_CALIBRATION, 1)  # as fit_classifier sets them aside
        fit = fitting_rows(frame[~frame["row_id"].isin(calibration["row_id"])], "judge", N_TRAIN, 0)
        seen = set(fit["row_id"]) | set(calibration["row_id"])
        fit_at, cal_at = frame.index.get_indexer(fit.index), frame.index.get_indexer(calibration.index)
        for pooling in POOLINGS:
            weight, bias = fit_head(features[pooling][fit_at], fit["label"].to_numpy())
            a, b = fit_platt(features[pooling][cal_at] @ weight + bias, calibration["label"].to_numpy())
            cells, unseen = [], []
            for other, (other_frame, other_features) in data.items():
                rows = evaluation_rows(other_frame, max_rows)
                rows = rows[~other_frame["row_id"].iloc[rows].isin(seen).to_numpy()] if other == source else rows
                labels, raw = other_frame["label"].to_numpy()[rows], other_features[pooling][rows] @ weight + bias
                auc, low, high = auc_delong(labels, raw)
                cells.append(f"{auc:.3f} [{low:.3f}, {high:.3f}]" + (" (own)" if other == source else ""))
                if other != source:
                    unseen.append(auc)
                if pooling == "mean":
                    before, after = sigmoid(raw), sigmoid(a * raw + b)
                    calib_lines.append(
                        f"| {source} | {other}{' (own, unseen rows)' if other == source else ''} | "
                        f"{expected_calibration_error(labels, before):.3f} | "
                        f"{expected_calibration_error(labels, after):.3f} | {brier(labels, before):.3f} | "
                        f"{brier(labels, after):.3f} |")
            pool_lines.append(f"| {source} | {pooling} | " + " | ".join(cells) + f" | **{np.mean(unseen):.3f}** |")
    return pool_lines, calib_lines


def finetune_rows(data: dict, source: str, rows: int, epochs: int, max_rows: int | None, seed: int = 0) -> list:
    """Fine-tune MiniLM end to end (rewards.source_classifier.finetune) on `rows` judge rows of `source`, and compare
    with the logistic regression on frozen features of the same rows on every other source: [(other, frozen AUC
    triple, fine-tuned AUC triple)], kept on disk so an interrupted run resumes with the next source."""
    cached = DEFAULT_CACHE / f"finetune-{source}-n{rows}-e{epochs}-v{max_rows}-s{seed}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    frame, features = data[source]
    fit = fitting_rows(frame, "judge", rows, seed)
    fit_at = frame.index.get_indexer(fit.index)
    labels = fit["label"].to_numpy()
    weight, bias = fit_head(features["mean"][fit_at], labels)
    start = time.time()
    encoder, tuned_weight, tuned_bias = finetune(fit["text"].tolist(), labels, seed, epochs)
    result = {"minutes": (time.time() - start) / 60, "n": len(fit), "rows": []}
    with tempfile.TemporaryDirectory() as tuned_dir:
        encoder.save_pretrained(tuned_dir)
        tuned_encoder = MiniLMEncoder(weights=tuned_dir)
        for other, (other_frame, other_features) in data.items():
            if other == source:
                continue
            at = evaluation_rows(other_frame, max_rows)
            y = other_frame["label"].to_numpy()[at]
            tuned = tuned_encoder.encode(other_frame["text"].iloc[at].tolist(), "mean") @ tuned_weight + tuned_bias
            result["rows"].append((other, auc_delong(y, other_features["mean"][at] @ weight + bias),
                                   auc_delong(y, tuned)))
    cached.write_text(json.dumps(result))
    return result


def finetune_table(results: dict, epochs: int) -> list[str]:
    sources = list(results)
    lines = [f"Fine-tuned for {epochs} epoch(s) on the judge rows of each source (" + ", ".join(
        f"{s}: {r['n']} rows, {r['minutes']:.1f} min" for s, r in results.items()) + " on this machine's CPU); "
        "both heads read the same rows. Cells: logistic regression on the frozen encoder → fine-tuned end to end.",
        "",
        "| fitted on | " + " | ".join(SOURCES) + " | mean, unseen sources |", "|---" * (len(SOURCES) + 2) + "|"]
    for source in sources:
        by_source = {other: (frozen, tuned) for other, frozen, tuned in results[source]["rows"]}
        cells = [f"{by_source[o][0][0]:.3f} → {by_source[o][1][0]:.3f} [{by_source[o][1][1]:.3f}, "
                 f"{by_source[o][1][2]:.3f}]" if o in by_source else "(own)" for o in SOURCES]
        means = [np.mean([v[i][0] for v in by_source.values()]) for i in (0, 1)]
        lines.append(f"| {source} | " + " | ".join(cells) + f" | **{means[0]:.3f} → {means[1]:.3f}** |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-rows", type=int, default=2000, help="validation rows per source (a seeded sample)")
    parser.add_argument("--all", action="store_true", help="validate on every row of every source")
    parser.add_argument("--finetune-sources", nargs="+", default=list(FITTABLE), choices=FITTABLE)
    parser.add_argument("--finetune-rows", type=int, default=2000)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--finetune-max-rows", type=int, default=1000, help="validation rows per source, fine-tuning")
    parser.add_argument("--skip-finetune", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this Markdown file")
    args = parser.parse_args()
    max_rows = None if args.all else args.max_rows
    data = {name: source_features(name) for name in SOURCES}
    pooling, calibration = heads(data, max_rows)
    sections = ["## Pooling (ROC AUC [95% CI]; own = the source's rows the head did not see)", "\n".join(pooling),
                "## Calibration (mean pooling)", "\n".join(calibration)]
    if not args.skip_finetune:
        tuned = {source: finetune_rows(data, source, args.finetune_rows, args.finetune_epochs,
                                       None if args.all else args.finetune_max_rows)
                 for source in args.finetune_sources}
        sections += ["## Head: logistic regression against fine-tuning (mean pooling; ROC AUC [95% CI])",
                     "\n".join(finetune_table(tuned, args.finetune_epochs))]
    text = "\n\n".join(sections)
    print(text)
    if args.out:
        command = " ".join(["python -m benchmarks.judge_choices", *sys.argv[1:]])
        args.out.write_text(f"# What decides a judge's verdict\n\n{__doc__.split(chr(10) * 2, 2)[2]}\n`{command}`"
                            f"\n\n{text}\n", encoding="utf-8")


if __name__ == "__main__":
    main()
