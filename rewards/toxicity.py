"""Toxicity rewards: any Hugging Face sequence classifier, or the offline alt-profanity-check model.

Both score the completion alone by default (the prompt is given, the policy only answers for what it adds) and share
the output conventions: "logit" (TRL's detoxification example rewards the raw logit of the non-toxic label),
"neg_prob" = -P(toxic), "log_odds" = log P(non-toxic) - log P(toxic). `.toxicity(texts)` gives P(toxic) for evaluation.
Models load on first use and are dropped when pickled, so the rewards travel cheaply to worker processes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from detox.hub import resolve_model_path
from detox.sharding import whole_model_loading

DEFAULT_MODEL = "facebook/roberta-hate-speech-dynabench-r4-target"
OUTPUTS = ("logit", "neg_prob", "log_odds")
_DTYPES = ("float32", "bfloat16", "float16")
_PROB_EPS = 1e-6  # keeps the offline log-odds finite when the profanity model is certain


def _check_output(output: str) -> None:
    if output not in OUTPUTS:
        raise ValueError(f"rewards[].options.output '{output}' is not one of {list(OUTPUTS)}.")


def _texts(prompts: list[str], completions: list[str], score_prompt: bool) -> list[str]:
    return [p + c for p, c in zip(prompts, completions)] if score_prompt else list(completions)


class ToxicityClassifier:
    """Reward from an `AutoModelForSequenceClassification` and its own tokenizer.

    Labels are resolved by name through `config.id2label`: `nontoxic_label` (default "nothate", the roberta
    dynabench model's) and `toxic_label` (default: the other label of a binary head; required otherwise).
    Multi-label heads (`problem_type="multi_label_classification"`) use a sigmoid on the toxic logit.
    `score_prompt=True` scores prompt + completion and truncates from the left, so the completion is always seen.
    `device` None means "cuda" when available, else "cpu".
    """

    __name__ = "toxicity"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        output: str = "logit",
        nontoxic_label: str = "nothate",
        toxic_label: str | None = None,
        score_prompt: bool = False,
        device: str | None = None,
        batch_size: int = 64,
        dtype: str = "float32",
        max_length: int | None = None,
        trust_remote_code: bool = False,
    ):
        _check_output(output)
        if dtype not in _DTYPES:
            raise ValueError(f"rewards[].options.dtype '{dtype}' is not one of {list(_DTYPES)}.")
        if batch_size < 1:
            raise ValueError(f"rewards[].options.batch_size ({batch_size}) must be >= 1.")
        self.model_path = resolve_model_path(model, what="rewards[].options.model")
        config = AutoConfig.from_pretrained(self.model_path, trust_remote_code=trust_remote_code)
        self.labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        self.multi_label = config.problem_type == "multi_label_classification"
        self.nontoxic_index, self.toxic_index = self._resolve_labels(model, nontoxic_label, toxic_label)
        if output == "logit" and self.nontoxic_index is None:
            raise ValueError(
                f"rewards[].options.output 'logit' needs a nontoxic_label; the labels of {model} are {self.labels}."
            )
        self.output, self.score_prompt, self.batch_size = output, score_prompt, batch_size
        self.device, self.dtype, self.max_length = device, dtype, max_length
        self.trust_remote_code = trust_remote_code
        self._model = self._tokenizer = None

    def _resolve_labels(self, model: str, nontoxic: str | None, toxic: str | None) -> tuple[int | None, int]:
        """Indices of the non-toxic and toxic labels; a name that is not a label lists the labels there are."""

        def index(name: str, option: str) -> int:
            if name not in self.labels:
                raise ValueError(
                    f"rewards[].options.{option} '{name}' is not a label of {model}; its labels (config.id2label) "
                    f"are {self.labels}. Set options.{option} to one of them."
                )
            return self.labels.index(name)

        nontoxic_index = index(nontoxic, "nontoxic_label") if nontoxic is not None else None
        if toxic is not None:
            return nontoxic_index, index(toxic, "toxic_label")
        if len(self.labels) == 2 and nontoxic_index is not None:
            return nontoxic_index, 1 - nontoxic_index
        raise ValueError(
            f"rewards[].options.toxic_label is required for {model}, whose labels are {self.labels} "
            f"(it can only be inferred for a two-label head with a nontoxic_label)."
        )

    def __call__(self, prompts: list[str], completions: list[str], **kwargs) -> list[float]:
        logits = self.logits(_texts(prompts, completions, self.score_prompt))  # (N, L)
        if self.output == "logit":
            return logits[:, self.nontoxic_index].tolist()
        if self.output == "neg_prob":
            return (-self._p_toxic(logits)).tolist()
        return self._log_odds(logits).tolist()

    def toxicity(self, texts: list[str]) -> np.ndarray:
        """P(toxic) of each text, (N,) in [0, 1]."""
        return self._p_toxic(self.logits(list(texts)))

    def logits(self, texts: list[str]) -> np.ndarray:
        """Classifier logits (N, num_labels) as float32, computed in batches of `batch_size` without gradients."""
        if self._model is None:
            self._load()
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self._tokenizer(
                    texts[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self._max_length,
                    return_tensors="pt",
                ).to(self._model.device)
                out.append(self._model(**batch).logits.float().cpu())
        n_labels = len(self.labels)
        return torch.cat(out).numpy() if out else np.zeros((0, n_labels), dtype=np.float32)

    def _p_toxic(self, logits: np.ndarray) -> np.ndarray:
        if self.multi_label:
            return 1.0 / (1.0 + np.exp(-logits[:, self.toxic_index]))
        shifted = logits - logits.max(axis=1, keepdims=True)  # softmax without overflow
        probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        return probs[:, self.toxic_index]

    def _log_odds(self, logits: np.ndarray) -> np.ndarray:
        if self.multi_label:  # log(1 - sigmoid(z)) - log(sigmoid(z)) = -z
            return -logits[:, self.toxic_index]
        # log_softmax differences cancel the partition function: log p_n - log p_t = z_n - z_t
        return logits[:, self.nontoxic_index] - logits[:, self.toxic_index]

    def _load(self) -> None:
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=self.trust_remote_code)
        if self.score_prompt:
            self._tokenizer.truncation_side = "left"  # keep the completion, drop the prompt's start
        with whole_model_loading():  # a scorer, not a trained model: never partitioned by ZeRO-3
            self._model = AutoModelForSequenceClassification.from_pretrained(
                self.model_path, dtype=getattr(torch, self.dtype), trust_remote_code=self.trust_remote_code
            ).to(device)
        self._model.eval()
        self._max_length = self.max_length or _classifier_max_length(self._tokenizer, self._model.config)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_model", "_tokenizer", "_max_length")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._model = self._tokenizer = None


def _classifier_max_length(tokenizer: Any, config: Any) -> int:
    """The tokenizer's model_max_length unless it is the 'unset' sentinel (~1e30), else the position table size."""
    if tokenizer.model_max_length < 1_000_000:
        return int(tokenizer.model_max_length)
    return int(getattr(config, "max_position_embeddings", 512))


class OfflineToxicity:
    """Reward from alt-profanity-check (a linear SVM on word n-grams; runs anywhere, no download).

    Same conventions as `ToxicityClassifier`; its only probability is p = P(profane), so "logit" and "log_odds"
    both mean log(1 - p) - log(p), with p clipped to [1e-6, 1 - 1e-6].
    """

    __name__ = "offline_toxicity"

    def __init__(self, output: str = "logit", score_prompt: bool = False):
        _check_output(output)
        self.output, self.score_prompt = output, score_prompt

    def __call__(self, prompts: list[str], completions: list[str], **kwargs) -> list[float]:
        p = self.toxicity(_texts(prompts, completions, self.score_prompt))
        if self.output == "neg_prob":
            return (-p).tolist()
        p = np.clip(p, _PROB_EPS, 1 - _PROB_EPS)
        return (np.log1p(-p) - np.log(p)).tolist()

    def toxicity(self, texts: list[str]) -> np.ndarray:
        """P(profane) of each text, (N,) in [0, 1]."""
        from profanity_check import predict_prob  # loads its bundled model on first import

        texts = list(texts)
        return np.asarray(predict_prob(texts), dtype=np.float64) if texts else np.zeros(0)
