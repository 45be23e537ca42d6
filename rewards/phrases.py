"""Negative-phrase rewards: listed phrases and regexes after normalisation, or a learned character n-gram classifier.

Normalisation: Unicode NFKC, casefold, optional leetspeak folding, then every run of characters that are not letters
or digits (punctuation, symbols, whitespace) becomes one space. "F*ck!!  YOU" and "f ck you" normalise alike.
The prompt and the completion are normalised separately and joined, so the offset where the completion starts is
exact and a phrase that starts in the prompt and ends in the completion ("... sixty" + " nine") still counts.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from detox.config import ConfigTypeError

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_NON_WORD = re.compile(r"[\W_]+")  # anything but letters and digits, including whitespace runs
MODES = ("count", "any")


def normalize(text: str, leetspeak: bool = False) -> str:
    """NFKC, casefold, (leetspeak), non-alphanumeric runs -> " ". Edge spaces are kept (as one) so pieces join."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if leetspeak:
        text = text.translate(_LEET)  # before the punctuation pass: "@" and "$" would otherwise become spaces
    return _NON_WORD.sub(" ", text)


def join_normalized(prompt: str, completion: str, leetspeak: bool = False) -> tuple[str, int]:
    """normalize(prompt) + normalize(completion) and the offset where the completion's part starts."""
    head, tail = normalize(prompt, leetspeak), normalize(completion, leetspeak)
    if head.endswith(" ") and tail.startswith(" "):
        tail = tail[1:]  # "sixty " + " nine" must read "sixty nine", as normalize(prompt + completion) would
    return head + tail, len(head)


def _string_list(value: Any, option: str) -> list[str]:
    """A list of strings from a list, or from a text file (one per line, blank lines skipped) if `value` is a path."""
    if isinstance(value, (str, Path)):
        path = Path(value).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"rewards[].options.{option} '{value}' is a string but not a file; give a list of texts, or a path to "
                f"a text file with one per line."
            )
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not all(isinstance(v, str) for v in value):
        raise ConfigTypeError(f"rewards[].options.{option} must be a list of strings; got {value!r}.")
    return list(value)


class PhraseReward:
    """Penalty for forbidden phrases and regexes in the completion (or spanning the prompt/completion boundary).

    Phrases match whole words of the normalised text. Regexes are searched in the normalised text too (lowercase,
    single spaces, no punctuation), e.g. r"\\bkill(ed|ing)? (yo)?u\\b". mode "count": reward = -hits;
    mode "any": reward = -1 if anything matched, else 0.
    """

    __name__ = "phrase"

    def __init__(
        self,
        phrases: list[str] | str = (),
        regexes: list[str] | str = (),
        mode: str = "count",
        leetspeak: bool = False,
    ):
        if mode not in MODES:
            raise ValueError(f"rewards[].options.mode '{mode}' is not one of {list(MODES)}.")
        self.phrases = _string_list(phrases, "phrases")
        self.regexes = _string_list(regexes, "regexes")
        if not self.phrases and not self.regexes:
            raise ValueError("rewards[] type 'phrase' needs options.phrases or options.regexes (or both).")
        self.mode, self.leetspeak = mode, leetspeak
        normalized = [normalize(p, leetspeak).strip() for p in self.phrases]
        empty = [p for p, n in zip(self.phrases, normalized) if not n]
        if empty:
            raise ValueError(f"rewards[].options.phrases {empty} contain no letters or digits after normalisation.")
        self.max_phrase_chars = max(map(len, normalized), default=0)
        alternation = "|".join(re.escape(n) for n in sorted(set(normalized), key=len, reverse=True))
        self._phrase_re = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)") if normalized else None
        self._regexes = [self._compile(r) for r in self.regexes]

    @staticmethod
    def _compile(pattern: str) -> re.Pattern:
        try:
            return re.compile(pattern)
        except re.error as err:
            raise ValueError(f"rewards[].options.regexes: '{pattern}' is not a valid regex: {err}.") from err

    def __call__(self, prompts: list[str], completions: list[str], **kwargs) -> list[float]:
        hits = [self.hits(p, c) for p, c in zip(prompts, completions)]
        if self.mode == "any":
            return [-1.0 if h else 0.0 for h in hits]
        return [float(-h) for h in hits]

    def hits(self, prompt: str, completion: str) -> int:
        """Matches in normalize(prompt + completion) that overlap the completion's characters."""
        text, start = join_normalized(prompt, completion, self.leetspeak)
        count = 0
        if self._phrase_re is not None:
            # A phrase overlapping the completion starts at most max_phrase_chars before it; the lookbehind still
            # sees the characters before `pos`, so word boundaries stay exact.
            pos = max(0, start - self.max_phrase_chars)
            count += sum(1 for m in self._phrase_re.finditer(text, pos) if m.end() > start)
        for pattern in self._regexes:
            count += sum(1 for m in pattern.finditer(text) if m.end() > start and m.end() > m.start())  # skip empty
        return count


class LearnedPhraseReward:
    """Reward -P(forbidden) from a character n-gram classifier (TF-IDF over char_wb n-grams + logistic regression).

    Fit it from `forbidden` and `allowed` example texts (lists, or paths to text files with one per line), or load
    one saved with `save(dir)` via `model_path`. Char n-grams generalise to misspellings and spacing variants that a
    phrase list misses. `prompt_tail_chars` > 0 prepends that many of the prompt's last characters to the completion.
    Saved as JSON (vocabulary, settings) + npz (idf, coef, intercept), loaded without unpickling.
    """

    __name__ = "learned_phrase"
    FORMAT = "detox.learned_phrase/1"

    def __init__(
        self,
        forbidden: list[str] | str | None = None,
        allowed: list[str] | str | None = None,
        model_path: str | None = None,
        prompt_tail_chars: int = 0,
        leetspeak: bool = False,
        ngram_range: tuple[int, int] = (2, 5),
        C: float = 10.0,
    ):
        if prompt_tail_chars < 0:
            raise ValueError(f"rewards[].options.prompt_tail_chars ({prompt_tail_chars}) must be >= 0.")
        self.prompt_tail_chars = prompt_tail_chars
        if model_path is not None:
            if forbidden is not None or allowed is not None:
                raise ValueError(
                    "rewards[] type 'learned_phrase': give either model_path or forbidden + allowed, not both."
                )
            self._load(Path(model_path))
            return
        if forbidden is None or allowed is None:
            raise ValueError(
                "rewards[] type 'learned_phrase' needs options.forbidden and options.allowed, or model_path."
            )
        self.leetspeak, self.ngram_range = leetspeak, tuple(ngram_range)
        self._fit(_string_list(forbidden, "forbidden"), _string_list(allowed, "allowed"), C)

    def _vectorizer(self, vocabulary: dict[str, int] | None = None):
        from sklearn.feature_extraction.text import TfidfVectorizer  # lazy: only the learned phrase reward needs it

        return TfidfVectorizer(
            analyzer="char_wb", ngram_range=self.ngram_range, sublinear_tf=True, lowercase=False, vocabulary=vocabulary
        )

    def _fit(self, forbidden: list[str], allowed: list[str], C: float) -> None:
        from sklearn.linear_model import LogisticRegression  # lazy: only the learned phrase reward needs scikit-learn

        if not forbidden or not allowed:
            raise ValueError(
                f"learned_phrase needs examples of both classes; got {len(forbidden)} forbidden and "
                f"{len(allowed)} allowed texts."
            )
        self.vectorizer = self._vectorizer()
        features = self.vectorizer.fit_transform([self._prepare(t) for t in forbidden + allowed])
        labels = np.array([1] * len(forbidden) + [0] * len(allowed))
        self.classifier = LogisticRegression(C=C, class_weight="balanced", max_iter=1000).fit(features, labels)

    def _prepare(self, text: str) -> str:
        return normalize(text, self.leetspeak).strip()

    def __call__(self, prompts: list[str], completions: list[str], **kwargs) -> list[float]:
        tails = [p[-self.prompt_tail_chars :] if self.prompt_tail_chars else "" for p in prompts]
        return (-self.p_forbidden([t + c for t, c in zip(tails, completions)])).tolist()

    def p_forbidden(self, texts: list[str]) -> np.ndarray:
        """P(forbidden) of each text, (N,)."""
        if not texts:
            return np.zeros(0)
        features = self.vectorizer.transform([self._prepare(t) for t in texts])
        return self.classifier.predict_proba(features)[:, 1]

    def save(self, path: str | Path) -> Path:
        """Write config.json + weights.npz into the directory `path`; returns it."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {
            "format": self.FORMAT,
            "leetspeak": self.leetspeak,
            "ngram_range": list(self.ngram_range),
            "vocabulary": {k: int(v) for k, v in self.vectorizer.vocabulary_.items()},
        }
        (path / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
        np.savez(
            path / "weights.npz",
            idf=self.vectorizer.idf_,
            coef=self.classifier.coef_,
            intercept=self.classifier.intercept_,
            classes=self.classifier.classes_,
        )
        return path

    @classmethod
    def load(cls, path: str | Path, prompt_tail_chars: int = 0) -> "LearnedPhraseReward":
        return cls(model_path=str(path), prompt_tail_chars=prompt_tail_chars)
    def _load(self, path: Path) -> None:
        from sklearn.linear_model import LogisticRegression  # lazy: only the learned phrase reward needs scikit-learn

        if not (path / "config.json").is_file() or not (path / "weights.npz").is_file():
            raise FileNotFoundError(
                f"rewards[].options.model_path '{path}' must be a directory with config.json and weights.npz, "
                f"as written by LearnedPhraseReward.save."
            )
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if config.get("format") != self.FORMAT:
            raise ValueError(f"{path}/config.json has format {config.get('format')!r}, expected '{self.FORMAT}'.")
        self.leetspeak, self.ngram_range = bool(config["leetspeak"]), tuple(config["ngram_range"])
        with np.load(path / "weights.npz", allow_pickle=False) as weights:
            self.vectorizer = self._vectorizer(config["vocabulary"])
            self.vectorizer.idf_ = weights["idf"]
            self.classifier = LogisticRegression()
            self.classifier.coef_, self.classifier.intercept_ = weights["coef"], weights["intercept"]
            self.classifier.classes_ = weights["classes"]
