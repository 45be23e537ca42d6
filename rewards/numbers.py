"""Rewards of the obscene-numbers recipe: a penalty for every forbidden number written, in any word form, and a
bonus for writing the right next number of a count.

Both read numbers with `detox.number_words.read_numbers`, which understands every form the recipe's generator
writes ("sixty nine", "six hundred ninety one", "sixteen thousand nine hundred") and digits ("69").
"""

from __future__ import annotations

from detox.number_words import MAX_NUMBER, check_pair, forbidden_in, is_forbidden, read_numbers

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
