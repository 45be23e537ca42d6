"""The choices that decide a source classifier's verdict, measured on sources it never saw.

    HF_HUB_OFFLINE=1 python -m benchmarks.judge_choices [--max-rows 2000] [--finetune-source toxigen]

For each source, a head is fitted on its judge part (2,000 rows, half toxic where it has enough) and validated on
every other source (and on its own rows it did not see):
1. pooling: BERT's pooler output against the mean of the last hidden states (frozen encoder, logistic regression);
2. calibration: a Platt map fitted on 500 further rows of the same part, by expected calibration error and Brier
   score on its own unseen rows and on the other sources (a monotone map leaves every AUC as it is);
3. head: the logistic regression on frozen mean-pooled features against fine-tuning the whole encoder end to end
   (mean pooling + a linear head, `--finetune-epochs` over `--finetune-rows` rows of one source; CPU-sized budget).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.judge_features import evaluation_rows, source_features
from detox.validity import auc_delong, brier, expected_calibration_error
from rewards.label_sources import FITTABLE, SOURCES, calibration_rows, fitting_rows
from rewards.source_classifier import N_CALIBRATION, POOLINGS, fit_head, fit_platt

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


def finetune(data: dict, source: str, rows: int, epochs: int, max_rows: int | None, seed: int = 0) -> list[str]:
    """Fine-tune MiniLM end to end (mean pooling + linear head) on `rows` judge rows of `source`, and compare with the
    logistic regression on frozen features of the same rows, on every other source."""
    import torch

    from rewards.minilm_classifier import minilm_dir
    from rewards.source_classifier import MAX_TOKENS, mean_pool
    from transformers import AutoModel, AutoTokenizer

    frame, features = data[source]
    fit = fitting_rows(frame, "judge", rows, seed)
    fit_at = frame.index.get_indexer(fit.index)
    labels = fit["label"].to_numpy()
    weight, bias = fit_head(features["mean"][fit_at], labels)
    torch.manual_seed(seed)
    tokenizer, encoder = AutoTokenizer.from_pretrained(minilm_dir()), AutoModel.from_pretrained(minilm_dir())
    head = torch.nn.Linear(encoder.config.hidden_size, 1)
    optimizer = torch.optim.AdamW([{"params": encoder.parameters(), "lr": 5e-5},
                                   {"params": head.parameters(), "lr": 1e-3}], weight_decay=0.01)
    # classes weighted to balance, as the logistic regression's class_weight="balanced"
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((labels == 0).sum() / max((labels == 1).sum(), 1)))
    texts = fit["text"].tolist()
    start = time.time()
    encoder.train()
    for epoch in range(epochs):
        order = np.random.default_rng(seed + epoch).permutation(len(texts))
        for at in range(0, len(order), 16):
            batch_rows = order[at : at + 16]
            batch = tokenizer([texts[i] for i in batch_rows], padding=True, truncation=True, max_length=MAX_TOKENS,
                              return_tensors="pt")
            out = encoder(**batch).last_hidden_state
            logits = head(mean_pool(out, batch["attention_mask"]) * 20).squeeze(-1)  # unit vectors: scale for the head
            loss = loss_fn(logits, torch.as_tensor(labels[batch_rows], dtype=torch.float32))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    minutes = (time.time() - start) / 60
    encoder.eval()
    lines = [f"Fine-tuned on {len(texts)} judge rows of {source}, {epochs} epoch(s), {minutes:.1f} min on this "
             "machine's CPU; both heads read the same rows.", "",
             "| validated on | logistic regression, frozen encoder | fine-tuned end to end |", "|---|---|---|"]
    for other, (other_frame, other_features) in data.items():
        if other == source:
            continue
        at = evaluation_rows(other_frame, max_rows)
        y = other_frame["label"].to_numpy()[at]
        tuned = []
        with torch.inference_mode():
            other_texts = other_frame["text"].iloc[at].tolist()
            for b in range(0, len(other_texts), 64):
                batch = tokenizer(other_texts[b : b + 64], padding=True, truncation=True, max_length=MAX_TOKENS,
                                  return_tensors="pt")
                pooled = mean_pool(encoder(**batch).last_hidden_state, batch["attention_mask"])
                tuned.append(head(pooled * 20).squeeze(-1).numpy())
        frozen = auc_delong(y, other_features["mean"][at] @ weight + bias)
        end_to_end = auc_delong(y, np.concatenate(tuned))
        lines.append(f"| {other} | " + " | ".join(f"{a:.3f} [{lo:.3f}, {hi:.3f}]" for a, lo, hi in
                                                   (frozen, end_to_end)) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-rows", type=int, default=2000, help="validation rows per source (a seeded sample)")
    parser.add_argument("--all", action="store_true", help="validate on every row of every source")
    parser.add_argument("--finetune-source", default="toxigen", choices=FITTABLE)
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
        sections += ["## Head: logistic regression against fine-tuning (mean pooling; ROC AUC [95% CI])",
                     "\n".join(finetune(data, args.finetune_source, args.finetune_rows, args.finetune_epochs,
                                        None if args.all else args.finetune_max_rows))]
    text = "\n\n".join(sections)
    print(text)
    if args.out:
        command = " ".join(["python -m benchmarks.judge_choices", *sys.argv[1:]])
        args.out.write_text(f"# What decides a judge's verdict\n\n{__doc__.split(chr(10) * 2, 2)[2]}\n`{command}`"
                            f"\n\n{text}\n", encoding="utf-8")


if __name__ == "__main__":
    main()
