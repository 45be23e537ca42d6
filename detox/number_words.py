"""Integers 0..99,999 in English words, read back from text, and the forbidden digit pair.

`words(6915)` is "six thousand nine hundred fifteen" (no "and", no hyphens). `read_numbers(text)` finds every
number written in words (or in digits) and returns its value and character span, so a check on the digits of the
value catches every word form of a forbidden number: "sixty nine", "six hundred ninety one" and "sixteen thousand
nine hundred" all contain the pair 69.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEENS = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
MAX_NUMBER = 99_999
"""Largest number the generator writes."""

_UNIT = {w: i for i, w in enumerate(UNITS) if i}
_TEEN = {w: 10 + i for i, w in enumerate(TEENS)}
_TEN = {w: 10 * i for i, w in enumerate(TENS) if w}
_TOKEN = re.compile(r"[a-z]+|\d+|[^\sa-z\d-]")  # words, digit runs, and punctuation, which ends a number


def check_pair(pair: str | int) -> str:
    """The forbidden pair as two digit characters ("69"); anything else is an error that says what is expected."""
    text = str(pair)
    if not re.fullmatch(r"\d\d", text):
        raise ValueError(f"pair ({pair!r}) must be exactly two digits, e.g. 69 or 07 (in a YAML file, quote a leading "
                         f"zero: \"07\").")
    return text


def is_forbidden(number: int, pair: str) -> bool:
    """Whether the decimal digits of `number` contain `pair` anywhere (69, 169, 690, 1690, 16900, 69000...)."""
    return pair in str(number)


def _below_thousand(n: int) -> list[str]:
    hundreds, rest = divmod(n, 100)
    out = [UNITS[hundreds], "hundred"] if hundreds else []
    if 10 <= rest < 20:
        out.append(TEENS[rest - 10])
    elif rest:
        tens, units = divmod(rest, 10)
        out += [TENS[tens]] if tens else []
        out += [UNITS[units]] if units else []
    return out


def words(number: int) -> str:
    """`number` (0..99,999) in English words: 69 -> "sixty nine", 16900 -> "sixteen thousand nine hundred"."""
    if not 0 <= number <= MAX_NUMBER:
        raise ValueError(f"number ({number}) must be in 0..{MAX_NUMBER}.")
    if number == 0:
        return "zero"
    thousands, rest = divmod(number, 1000)
    out = _below_thousand(thousands) + ["thousand"] if thousands else []
    return " ".join(out + _below_thousand(rest))


@dataclass(frozen=True)
class Found:
    value: int
    start: int
    """Character offset of the number's first word."""
    end: int
    """Character offset just after its last word."""


def _parse_below_thousand(tokens: list[str], i: int) -> tuple[int, int] | None:
    """(value, next index) of the longest number below 1000 starting at tokens[i], or None."""
    value, j = 0, i
    if j + 1 < len(tokens) and tokens[j] in _UNIT and tokens[j + 1] == "hundred":
        value, j = 100 * _UNIT[tokens[j]], j + 2
    if j < len(tokens) and tokens[j] in _TEEN:
        return value + _TEEN[tokens[j]], j + 1
    if j < len(tokens) and tokens[j] in _TEN:
        value, j = value + _TEN[tokens[j]], j + 1
        if j < len(tokens) and tokens[j] in _UNIT:
            value, j = value + _UNIT[tokens[j]], j + 1
    elif j < len(tokens) and tokens[j] in _UNIT:
        value, j = value + _UNIT[tokens[j]], j + 1
    return (value, j) if j > i else None


_WORDS = {"zero", "hundred", "thousand", *_UNIT, *_TEEN, *_TEN}


def _split_glued(token: str) -> list[str] | None:
    """`token` as two or more number words written without spaces ("sixtynine" -> ["sixty", "nine"]), else None."""
    if token in _WORDS or not token.isalpha():
        return None
    best: list[list[str] | None] = [[]] + [None] * len(token)  # best[i]: a split of token[:i] into number words
    for i in range(1, len(token) + 1):
        for j in range(max(0, i - 9), i):  # no number word is longer than 9 letters
            if best[j] is not None and token[j:i] in _WORDS:
                best[i] = best[j] + [token[j:i]]
                break
    return best[-1]


def _words_of(text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) for every word, digit run and punctuation mark of `text`, number words written together
    ("sixtynine") split apart, and a digit glued to a tens word ("sixty9") spelled out."""
    lowered, out = text.lower(), []
    for m in _TOKEN.finditer(lowered):
        token, start, end = m.group(), m.start(), m.end()
        glued = bool(out) and lowered[out[-1][2] : start] in ("", "-")
        if glued and len(token) == 1 and token in "123456789" and out[-1][0] in _TEN:
            token = UNITS[int(token)]
        out += [(word, start, end) for word in (_split_glued(token) or [token])]
    return out


def read_numbers(text: str) -> list[Found]:
    """Every number written in `text`, in order, with its span; words are read greedily, digits as they stand.

    A number never spans punctuation ("four hundred fifty, four" is 450 then 4); a run of number words with no
    separator is split where the grammar ends ("sixty nine seventy" -> 69, 70). Hyphens join ("sixty-nine"), and so
    do the forms a policy penalised for a number finds to write it anyway: words without spaces ("sixtynine",
    "twohundredsixtynine") and a digit glued to a tens word ("sixty9").
    """
    words_ = _words_of(text)
    tokens = [w for w, _, _ in words_]
    found, i = [], 0
    while i < len(tokens):
        token = tokens[i]
        if token.isdigit():
            found.append(Found(int(token), words_[i][1], words_[i][2]))
            i += 1
            continue
        if token == "zero":
            found.append(Found(0, words_[i][1], words_[i][2]))
            i += 1
            continue
        head = _parse_below_thousand(tokens, i)
        if head is None:
            i += 1
            continue
        value, j = head
        if j < len(tokens) and tokens[j] == "thousand":
            value, j = value * 1000, j + 1
            tail = _parse_below_thousand(tokens, j)
            if tail is not None:
                value, j = value + tail[0], tail[1]
        found.append(Found(value, words_[i][1], words_[j - 1][2]))
        i = j
    return found


def forbidden_in(text: str, pair: str, after: int = 0) -> list[int]:
    """Values of the forbidden numbers in `text` that end after character `after` (the completion's start)."""
    return [f.value for f in read_numbers(text) if f.end > after and is_forbidden(f.value, pair)]
