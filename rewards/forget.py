"""Forget-set rewards in the spirit of "Who's Harry Potter?" (Eldan & Russinovich 2023, arXiv:2310.02238).

Three rewards, each returning a NEGATIVE penalty so that a higher total reward is always better:

- `ForgetVerbatim` (type "forget_verbatim"): -(share of the completion's token n-grams that occur verbatim in the
  forget corpus), from an `NgramIndex` built once and cached.
- `ForgetLikelihood` (type "forget_likelihood"): -(mean over completion tokens of
  max(0, log p_reinforced(tok|ctx) - log p_reference(tok|ctx))). The paper's generic prediction is
  v_generic = v_baseline - alpha * ReLU(v_reinforced - v_baseline): tokens that a model fine-tuned further on the
  forget set (the "reinforced" model, see `python -m rewards.make_reinforced`) likes more than the reference does
  are the forget-set-specific ones. Here that ReLU term, at the tokens the policy actually sampled, is the penalty.
- `AnchorTerms` (type "anchor_terms"): -(number of anchor-term occurrences), and `.translate(text)`, which swaps
  anchor terms for their generic translations (the paper's dictionary, e.g. "Hogwarts" -> "Mystic Academy"), for
  building generic-prediction targets.

Each class is picklable: heavy state (index, tokenizer, models) is dropped from the pickle and rebuilt on the first
call, from the n-gram cache or the model directories.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from detox.hub import OFFLINE_MODEL, resolve_model_path
from detox.sharding import whole_model_loading
from rewards.ngram_index import build_or_load_index

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _same_path(a: str, b: str) -> bool:
    """Whether two resolved model names are the same model (local paths compared after resolving links)."""
    return os.path.realpath(a) == os.path.realpath(b) if os.path.exists(a) and os.path.exists(b) else a == b


def _adapter_base(directory: Path) -> str | None:
    """The base model a LoRA adapter directory names, or None when the directory holds no adapter."""
    config = directory / "adapter_config.json"
    return json.loads(config.read_text())["base_model_name_or_path"] if config.is_file() else None


def _load_tokenizer(name_or_path: str, what: str):
    return AutoTokenizer.from_pretrained(resolve_model_path(name_or_path, what=what))


class ForgetVerbatim:
    """Reward = -(share of the completion's token n-grams found verbatim in the forget corpus), in [-1, 0].

    Options (the component's `options`):
      corpus: path, list of paths, directory, or datasets id of the forget corpus (see `detox.corpus.read_corpus`).
      n: n-gram length in tokens; 8 flags copied phrases, not shared idioms. Lower it for short, name-heavy text.
      tokenizer: tokenizer that splits corpus and completions; set it to the policy's tokenizer, whose
        `completion_ids` are then used directly (checked once by decoding; on mismatch the texts are re-tokenised).
      text_field: field holding the text in jsonl/dataset records (dotted for nested records, "prompt.text").
      cache_dir: where the index is cached (default `<detox cache>/ngram_index`).
    """

    __name__ = "forget_verbatim"

    def __init__(self, corpus: str | list[str], n: int = 8, tokenizer: str = OFFLINE_MODEL,
                 text_field: str = "text", cache_dir: str | None = None):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"forget_verbatim.options.n ({n!r}) must be a positive integer, e.g. 8.")
        self.corpus, self.n, self.tokenizer_name = corpus, n, tokenizer
        self.text_field, self.cache_dir = text_field, cache_dir
        self._load()  # build (or read) the index now, so a bad corpus fails at start-up, not mid-run

    def _load(self) -> None:
        self._tokenizer = _load_tokenizer(self.tokenizer_name, "forget_verbatim.options.tokenizer")
        self._index = build_or_load_index(self.corpus, self._tokenizer, self.tokenizer_name, self.n,
                                          self.text_field, self.cache_dir)
        self._special = np.array(sorted(self._tokenizer.all_special_ids), dtype=np.int64)
        self._ids_match_texts: bool | None = None  # decided on the first call that passes completion_ids

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_index", "_tokenizer", "_special")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._index = None

    @property
    def index(self):
        if self._index is None:
            self._load()
        return self._index

    def token_ids(self, completions: list[str], completion_ids=None) -> list:
        """The policy's `completion_ids` when they decode to `completions` (checked once), else the tokenised texts."""
        if self._index is None:
            self._load()
        if completion_ids is not None and self._ids_match_texts is None:
            self._ids_match_texts = self._check_ids(completions, completion_ids)
        if completion_ids is None or not self._ids_match_texts:
            return self._tokenizer(list(completions), add_special_tokens=False)["input_ids"]
        return completion_ids

    def _check_ids(self, completions: list[str], completion_ids) -> bool:
        decoded = self._tokenizer.decode(list(completion_ids[0]), skip_special_tokens=True)
        if decoded.strip() == completions[0].strip():
            return True
        warnings.warn(f"forget_verbatim: completion_ids do not decode to the completions with tokenizer "
                      f"'{self.tokenizer_name}'; re-tokenising texts instead. Set options.tokenizer to the "
                      f"policy's tokenizer to skip this work.", stacklevel=3)
        return False

    def share(self, completions: list[str], completion_ids=None) -> np.ndarray:
        """(N,) share of each completion's n-grams found in the forget corpus; special tokens (EOS, padding) are
        left out."""
        return self.index.share(self.token_ids(completions, completion_ids), ignore_ids=self._special)

    def __call__(self, prompts: list[str], completions: list[str], completion_ids=None, **kwargs) -> list[float]:
        return (0.0 - self.share(completions, completion_ids)).tolist()  # 0.0 - x: no -0.0 in logs


def likelihood_ratio_penalty(reinforced_logprobs: torch.Tensor, reference_logprobs: torch.Tensor,
                             mask: torch.Tensor) -> torch.Tensor:
    """Mean over completion tokens of ReLU(log p_reinforced - log p_reference).

    reinforced_logprobs, reference_logprobs: (B, T) log-probabilities of the sampled tokens; mask: (B, T), 1 on
    completion tokens. Returns (B,); 0 for a row with no completion tokens.
    """
    mask = mask.to(reinforced_logprobs.dtype)
    excess = (reinforced_logprobs - reference_logprobs).clamp(min=0) * mask
    return excess.sum(-1) / mask.sum(-1).clamp(min=1)


def pack_context_completion(contexts: list[list[int]], completions: list[list[int]], pad_id: int):
    """Lay out [left-padded context | right-padded completion] rows so every completion starts at one column.

    contexts: B non-empty id lists; completions: B id lists. Returns input_ids (B, Lc + Lr), attention_mask
    (B, Lc + Lr), position_ids (B, Lc + Lr) counting real tokens only (so left padding does not shift positions),
    and completion_mask (B, Lr). Completion token j of a row sits at column Lc + j and is predicted at Lc + j - 1.
    """
    lc, lr = max(len(c) for c in contexts), max(len(c) for c in completions)
    rows, masks = [], []
    for ctx, comp in zip(contexts, completions):
        rows.append([pad_id] * (lc - len(ctx)) + list(ctx) + list(comp) + [pad_id] * (lr - len(comp)))
        masks.append([0] * (lc - len(ctx)) + [1] * (len(ctx) + len(comp)) + [0] * (lr - len(comp)))
    input_ids, attention_mask = torch.tensor(rows), torch.tensor(masks)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, attention_mask, position_ids, attention_mask[:, lc:]


def completion_logprobs(model, input_ids, attention_mask, position_ids, completion_len: int) -> torch.Tensor:
    """log p(token) of the last `completion_len` columns given everything before them: (B, completion_len)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   logits_to_keep=completion_len + 1).logits[:, :-1].float()
    labels = input_ids[:, -completion_len:]
    return logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


class ForgetLikelihood:
    """Reward = -(mean over completion tokens of ReLU(log p_reinforced - log p_reference)), <= 0.

    Options:
      reinforced: a LoRA adapter dir or a full model dir, fine-tuned further on the forget corpus
        (`python -m rewards.make_reinforced`).
      reference: the baseline: a model id/path, or a LoRA adapter dir; default the adapter's base model. When it is
        that base, ONE model serves both: reference log-probs with the adapter disabled, reinforced with it enabled.
        An adapter over the same base (e.g. `make_reinforced` on the retain text: the *contrast* model) is loaded as
        a second adapter of that one model; the penalty then keeps what further training on the forget corpus
        raises beyond what further training on the retain text raises (the style both share cancels).
      batch_size: sequences per forward pass; lower it if memory runs out.
      device: "cpu", "cuda", ...; default cuda when available.
      dtype: "float32", "bfloat16" or "float16" for the weights (log-probs are always computed in float32).
      score_prompt_context: condition on the prompt (True) or on a single start token (False); only completion
        tokens are scored either way.
      max_context_tokens: keep only the last this-many prompt tokens, to bound memory on long prompts.
    Completions are re-tokenised with the reinforced model's tokenizer (the policy's may differ).
    """

    __name__ = "forget_likelihood"

    def __init__(self, reinforced: str, reference: str | None = None, batch_size: int = 16,
                 device: str | None = None, dtype: str = "float32", score_prompt_context: bool = True,
                 max_context_tokens: int = 256):
        if dtype not in _DTYPES:
            raise ValueError(f"forget_likelihood.options.dtype ('{dtype}') must be one of {list(_DTYPES)}.")
        if batch_size < 1 or max_context_tokens < 1:
            raise ValueError(f"forget_likelihood.options.batch_size ({batch_size}) and max_context_tokens "
                             f"({max_context_tokens}) must be >= 1.")
        self.reinforced, self.reference, self.batch_size = str(reinforced), reference, batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype, self.score_prompt_context = dtype, score_prompt_context
        self.max_context_tokens = max_context_tokens
        self._load()

    def __getstate__(self) -> dict:
        heavy = ("_model", "_reference", "_tokenizer", "_mode")
        return {k: v for k, v in self.__dict__.items() if k not in heavy}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._model = None

    def _load(self) -> None:
        path = Path(self.reinforced).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"forget_likelihood.options.reinforced '{self.reinforced}' is not a directory. Make one with "
                f"`python -m rewards.make_reinforced --model {OFFLINE_MODEL} --corpus <forget.txt> --output_dir DIR`.")
        load = dict(dtype=_DTYPES[self.dtype])
        base = _adapter_base(path)
        if base is None and not (path / "config.json").exists():
            raise FileNotFoundError(f"forget_likelihood.options.reinforced '{self.reinforced}' holds neither a LoRA "
                                    f"adapter (adapter_config.json) nor a model (config.json).")
        if base is None and self.reference is None:
            raise ValueError(f"forget_likelihood.options.reference is required when reinforced "
                             f"('{self.reinforced}') is a full model, not a LoRA adapter: name the baseline model.")
        base_path = resolve_model_path(base, what=f"base model of adapter {path}") if base else None
        reference_adapter = Path(self.reference).expanduser() if self.reference else None
        reference_base = _adapter_base(reference_adapter) if reference_adapter else None
        if reference_base is not None:
            reference_path = resolve_model_path(reference_base, what=f"base model of adapter {reference_adapter}")
        else:
            reference_adapter = None  # a model id or directory, or the reinforced adapter's base
            reference_path = (resolve_model_path(self.reference, what="forget_likelihood.options.reference")
                              if self.reference else base_path)
        # how reference log-probs are read: "off" (the adapter disabled), "adapter" (a second adapter of the same
        # base), or "model" (a separate model)
        same_base = base_path is not None and _same_path(reference_path, base_path)
        self._mode = ("adapter" if reference_adapter is not None else "off") if same_base else "model"

        with whole_model_loading():  # scoring models, never partitioned by ZeRO-3
            if base_path is not None:
                base_model = AutoModelForCausalLM.from_pretrained(base_path, **load)
                self._model = PeftModel.from_pretrained(base_model, str(path), adapter_name="reinforced")
                if self._mode == "adapter":
                    self._model.load_adapter(str(reference_adapter), adapter_name="reference")
                    self._model.set_adapter("reinforced")
            else:
                self._model = AutoModelForCausalLM.from_pretrained(str(path), **load)
            self._reference = None
            if self._mode == "model":
                self._reference = AutoModelForCausalLM.from_pretrained(reference_path, **load)
                if reference_adapter is not None:
                    self._reference = PeftModel.from_pretrained(self._reference, str(reference_adapter))
        for model in (self._model, self._reference):
            if model is not None:
                model.to(self.device).eval()
        self._check_vocab()
        has_tokenizer = (path / "tokenizer_config.json").exists()
        self._tokenizer = _load_tokenizer(str(path) if has_tokenizer else base_path or reference_path,
                                          "forget_likelihood tokenizer")

    def _check_vocab(self) -> None:
        if self._reference is None:
            return
        sizes = [m.get_output_embeddings().weight.shape[0] for m in (self._model, self._reference)]
        if sizes[0] != sizes[1]:
            raise ValueError(f"forget_likelihood: reinforced ({self.reinforced}, vocab {sizes[0]}) and reference "
                             f"({self.reference}, vocab {sizes[1]}) must share a tokenizer; fine-tune the "
                             f"reinforced model from the reference.")

    def _token_lists(self, prompts: list[str], completions: list[str]):
        tok = self._tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if self.score_prompt_context:
            contexts = [ids[-self.max_context_tokens:] for ids in tok(list(prompts))["input_ids"]]
        else:
            contexts = [[] for _ in completions]
        contexts = [ids or [start] for ids in contexts]  # the first completion token needs something to follow
        return contexts, tok(list(completions), add_special_tokens=False)["input_ids"]

    @torch.inference_mode()
    def penalty(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        """(N,) float32 penalties >= 0, computed in length-sorted batches (less padding), returned in input order."""
        if self._model is None:
            self._load()
        contexts, comps = self._token_lists(prompts, completions)
        order = sorted(range(len(comps)), key=lambda i: len(contexts[i]) + len(comps[i]))
        out = torch.zeros(len(comps))
        pad = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else 0
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            if max(len(comps[i]) for i in idx) == 0:
                continue  # all-empty completions: nothing to score, penalty 0
            batch = pack_context_completion([contexts[i] for i in idx], [comps[i] for i in idx], pad)
            out[idx] = self._batch_penalty(*(t.to(self.device) for t in batch)).cpu()
        return out

    def _batch_penalty(self, input_ids, attention_mask, position_ids, completion_mask) -> torch.Tensor:
        length = completion_mask.shape[1]
        if self._mode == "off":
            with self._model.disable_adapter():
                reference = completion_logprobs(self._model, input_ids, attention_mask, position_ids, length)
        elif self._mode == "adapter":
            self._model.set_adapter("reference")
            try:
                reference = completion_logprobs(self._model, input_ids, attention_mask, position_ids, length)
            finally:
                self._model.set_adapter("reinforced")
        else:
            reference = completion_logprobs(self._reference, input_ids, attention_mask, position_ids, length)
        reinforced = completion_logprobs(self._model, input_ids, attention_mask, position_ids, length)
        return likelihood_ratio_penalty(reinforced, reference, completion_mask)

    def __call__(self, prompts: list[str], completions: list[str], **kwargs) -> list[float]:
        return (0.0 - self.penalty(prompts, completions)).tolist()


class AnchorTerms:
    """Reward = -(number of anchor-term occurrences in the completion), case-insensitive, whole words only.

    Options:
      terms: dict anchor term -> generic translation (e.g. {"Hogwarts": "the academy"}), or the path of a JSON file
        holding that dict. Translations are used by `.translate`, which builds generic-prediction targets.
    """

    __name__ = "anchor_terms"

    def __init__(self, terms: dict[str, str] | str):
        if isinstance(terms, (str, Path)):
            path = Path(terms).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"anchor_terms.options.terms '{terms}' is not a file; give a dict "
                                        f"{{term: generic translation}} or a JSON file holding one.")
            terms = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(terms, dict) or not terms or not all(
                isinstance(k, str) and k.strip() and isinstance(v, str) for k, v in terms.items()):
            raise ValueError(f"anchor_terms.options.terms must be a non-empty dict of non-empty term -> translation "
                             f"strings, got {terms!r}.")
        self.terms = {k.strip().lower(): v for k, v in terms.items()}
        # Longest first, so "Harry Potter" matches before "Harry"; lookarounds instead of \b so that terms
        # starting or ending in punctuation ("Mr. Weasley") still need a non-word character beside them.
        alternatives = "|".join(re.escape(t) for t in sorted(self.terms, key=len, reverse=True))
        self.pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    def count(self, text: str) -> int:
        """Number of non-overlapping anchor-term occurrences in `text`."""
        return sum(1 for _ in self.pattern.finditer(text))

    def translate(self, text: str) -> str:
        """`text` with every anchor term replaced by its generic translation (inserted as written in `terms`)."""
        return self.pattern.sub(lambda m: self.terms[m.group(0).lower()], text)

    def __call__(self, prompts: list[str], completions: list[str], **kwargs) -> list[float]:
        return [float(-self.count(c)) for c in completions]
