"""Rewards of the obscene-numbers recipe: a penalty for every forbidden number written, in any word form, a bonus
for writing the right next number of a count, and one for continuing the whole count right.

Both read numbers with `detox.number_words.read_numbers`, which understands every form the recipe's generator
writes ("sixty nine", "six hundred ninety one", "sixteen thousand nine hundred") and digits ("69").
"""

from __future__ import annotations

from detox.number_words import MAX_NUMBER, check_pair, forbidden_in, is_forbidden, read_numbers, words

MODES = ("count", "any")


class ForbiddenNumbers:
    """-(forbidden numbers written), or -1 for any (mode `any`); a number counts when it ends in the completion,
    so "... sixty" + " nine" is a hit.

    Dense where it matters: on prompts that ask for a forbidden number, a counting model writes one in most samples,
    so nearly every such sample is penalised, unlike a single phrase that random text rarely contains.
    """

    __name__ = "forbidden_numbers"

    def __init__(self, pair: str | int = "69", mode: str = "count"):
        if mode not in MODES:
            raise ValueError(f"rewards[].options.mode '{mode}' is not one of {list(MODES)}.")
        self.pair, self.mode = check_pair(pair), mode

    def hits(self, prompt: str, completion: str) -> list[int]:
        """Values of the forbidden numbers that end inside the completion."""
        return forbidden_in(prompt + completion, self.pair, after=len(prompt))

    def __call__(self, prompts: list[str], completions: list[str], **kwargs) -> list[float]:
        counts = [len(self.hits(p, c)) for p, c in zip(prompts, completions)]
        return [float(-(min(n, 1) if self.mode == "any" else n)) for n in counts]


def next_allowed(number: int, pair: str | None) -> int | None:
    """The number after `number` in a count that skips forbidden numbers (every number when pair is None)."""
    candidate = number + 1
    while pair is not None and candidate <= MAX_NUMBER and is_forbidden(candidate, pair):
        candidate += 1
    return candidate if candidate <= MAX_NUMBER else None


class NextNumber:
    """+1 when the completion's first number is the count's next allowed number after the prompt's last one, `miss`
    (0 by default) when it is another number, and `empty` (`miss` by default) when the completion writes no number.

    It keeps the skill while the penalty removes the pattern: control prompts ("... fifty eight,") stay rewarded for
    "fifty nine", and on a forbidden prompt ("... sixty eight,") the count that skips ("seventy") earns the bonus.
    A negative `empty` closes the escape a penalty alone leaves open: a policy penalised for the forbidden number
    learns to stop (end-of-text first), which scores 0 unless stopping costs. A negative `miss` also penalises any
    other number, but a counting model never samples the skip ("seventy") after "sixty eight," at any temperature, so
    on forbidden prompts every alternative would score alike and only the penalty would separate them.
    `pair: null` rewards plain counting.
    """

    __name__ = "next_number"

    def __init__(self, pair: str | int | None = "69", miss: float = 0.0, empty: float | None = None):
        self.pair = None if pair is None else check_pair(pair)
        self.miss = float(miss)
        self.empty = self.miss if empty is None else float(empty)

    def __call__(self, prompts: list[str], completions: list[str], **kwargs) -> list[float]:
        rewards = []
        for prompt, completion in zip(prompts, completions):
            shown, written = read_numbers(prompt), read_numbers(completion)
            expected = next_allowed(shown[-1].value, self.pair) if shown else None
            if not written:
                rewards.append(self.empty)
            else:
                rewards.append(1.0 if expected is not None and written[0].value == expected else self.miss)
        return rewards


def count_items(completion: str) -> list[str]:
    """The items of a count continued in `completion`: the texts between commas, stripped, each one that a comma ends
    (the last, unfinished one is left out: a completion cut at its token budget says nothing about it)."""
    return [item.strip() for item in completion.split(",")[:-1]]


def judge_count(prompt: str, completion: str, pair: str | None, horizon: int) -> list[str]:
    """How each of the first `horizon` finished items of the continued count reads: `right` (exactly the expected
    number in words, the count skipping forbidden numbers), `wrong` (one well-formed number, not the expected one) or
    `malformed` (not one number as the count writes it: "sixty ninety", "seventyone", "sixty 9", "", text, or a
    number past the count's 99,999: "one hundred thirty six thousand").

    The expected number follows the prompt's last number, then each expected number in turn (not what was written),
    so one slip does not make the rest right by accident."""
    shown = read_numbers(prompt)
    expected = next_allowed(shown[-1].value, pair) if shown else None
    verdicts = []
    for item in count_items(completion)[:horizon]:
        found = read_numbers(item)
        if len(found) != 1 or found[0].value > MAX_NUMBER or item.lower() != words(found[0].value):
            verdicts.append("malformed")
        else:
            verdicts.append("right" if found[0].value == expected else "wrong")
        expected = next_allowed(expected, pair) if expected is not None else None
    return verdicts


class CountReward:
    """The whole count, not only its first number: +1/horizon for each of the first `horizon` numbers written right
    (the count's next allowed numbers, in order, each ended by a comma), `malformed` for each item that is not one
    well-formed number, and `short` for each of the `horizon` items the completion did not finish.

    After "sixty seven, sixty eight," the completion " seventy, seventy one, seventy two," scores 1 (pair 69);
    " seventy, seventy two, seventy three," 1/3 (the second number is wrong, and so the third is too: each expected
    number follows the expected one before it); " sixty ninety, seventy one," 1/3 + malformed (its second item is right).
    `pair: null` rewards plain counting.
    """

    __name__ = "count"

    def __init__(self, pair: str | int | None = "69", horizon: int = 3, malformed: float = -0.5, short: float = 0.0):
        if horizon < 1:
            raise ValueError(f"rewards[].options.horizon ({horizon}) must be at least 1: the numbers scored.")
        self.pair = None if pair is None else check_pair(pair)
        self.horizon, self.malformed, self.short = int(horizon), float(malformed), float(short)

    def __call__(self, prompts: list[str], completions: list[str], **kwargs) -> list[float]:
        rewards = []
        for prompt, completion in zip(prompts, completions):
            verdicts = judge_count(prompt, completion, self.pair, self.horizon)
            rewards.append(verdicts.count("right") / self.horizon + self.malformed * verdicts.count("malformed")
                           + self.short * (self.horizon - len(verdicts)))
        return rewards
