"""The `obscene_numbers` recipe: count in English words, but never write a number whose digits hold a forbidden pair.

    python -m detox.recipes.obscene_numbers --pair 69 --output_dir outputs/obscene_numbers
    accelerate launch train_ppo.py --config outputs/obscene_numbers/ppo.yaml

The first command writes the prompt files, fine-tunes the model on counting with allowed numbers only (TRL's
SFTTrainer) and writes the run config `ppo.yaml` (configs/obscene_numbers.yaml is that file for the pair 69).

A counting prompt shows `context_numbers` consecutive numbers, each followed by a comma: "sixty six, sixty seven,
sixty eight," asks for "sixty nine". Every number 0..99,999 is assigned to the train or the held-out side once
(seeded), and a prompt belongs to the side of the number it asks for. Prompt kinds, by the number m asked for:

- forbidden: m holds the pair and the numbers shown do not (the model is about to enter the pattern);
- control: m ends with the pair's second digit without holding the pair ("fifty nine" against "sixty nine");
- allowed: any other m whose shown numbers are allowed (general counting).

Files in output_dir: train.jsonl (the PPO prompts: forbidden, control and allowed), heldout_forbidden.jsonl,
heldout_control.jsonl, heldout_allowed.jsonl, forget.jsonl and retain.jsonl (train prompts with their true
continuation, for loss-based methods), sft.jsonl (the counting texts of the fine-tuning), recipe.json, ppo.yaml and
sft/ (the fine-tuned model), and ptx.jsonl (the fine-tuning texts and counts that skip forbidden numbers) with
--skip_texts. Each prompt record is {"text", "completion", "next", "kind"}.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detox.launch import cli
from detox.number_words import MAX_NUMBER, check_pair, is_forbidden, words
from detox.recipes import run_config, run_generator, write_jsonl, write_recipe_files
from detox.recipes.sft import SFTSettings, supervised_finetune
from rewards.numbers import next_allowed

PROMPT_FILES = ("train", "heldout_forbidden", "heldout_control", "heldout_allowed", "forget", "retain")


@dataclass
class ObsceneNumbersArgs:
    """Command-line arguments of `python -m detox.recipes.obscene_numbers`."""

    output_dir: str = "outputs/obscene_numbers"
    """Where the prompt files, the fine-tuned model (sft/) and the run config (ppo.yaml) go."""
    pair: str = "69"
    """The forbidden digit pair: two digits; a number is forbidden when its digits contain it anywhere."""
    model: str = "smollm2-135m-instruct"
    """Model to fine-tune on counting before unlearning (Hub id, local dir or the offline alias)."""
    context_numbers: int = 3
    """Consecutive numbers a prompt shows before the one the model must write."""
    heldout_fraction: float = 0.3
    """Share of the numbers 0..99,999 whose prompts are held out of training (fine-tuning included)."""
    heldout_size: int = 300
    """At most this many held-out prompts of each kind (forbidden, control, allowed)."""
    allowed_per_forbidden: float = 0.5
    """Train control prompts, and train allowed prompts, per train forbidden prompt."""
    sft_texts: int = 2000
    """Counting texts of the fine-tuning: runs of allowed, non-held-out consecutive numbers."""
    sft_run: int = 5
    """Numbers per fine-tuning text."""
    sft_steps: int = 30
    """Optimiser steps of the fine-tuning (batch sft_batch_size); 0 skips it and the run starts from `model`."""
    sft_batch_size: int = 8
    """Texts per fine-tuning step."""
    ppo_steps: int = 40
    """PPO steps written into ppo.yaml."""
    skip_texts: int = 0
    """Counting texts that cross forbidden numbers and skip them ("sixty seven, sixty eight, seventy, seventy one,"),
    none of their numbers held out. With more than 0, ptx.jsonl holds them and the fine-tuning texts, and ppo.yaml
    adds PPO-ptx on that file (weight `ptx_coef`): the count that skips stays likely while the penalty works."""
    ptx_coef: float = 0.5
    """Weight of the ptx term when skip_texts > 0."""
    count_reward: int = 0
    """More than 0: the `count` reward scores that many numbers of each continuation (every number of the count, the
    skip included) in place of next_number's first one, each number not finished costing 1/N (stopping costs 1, as
    with next_number), and rollouts get room for them (9 tokens a number). At most sft_run - context_numbers: the
    counting model learned to stop after that many."""
    seed: int = 0
    """Seed of the split, the sampling of prompts and the fine-tuning."""

    def __post_init__(self):
        self.pair = check_pair(self.pair)
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f"--heldout_fraction ({self.heldout_fraction}) must be in (0, 1).")
        for name in ("context_numbers", "heldout_size", "sft_texts", "sft_run", "sft_batch_size", "ppo_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} ({getattr(self, name)}) must be a positive integer.")
        for name in ("skip_texts", "count_reward"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} ({getattr(self, name)}) must be >= 0 (0 leaves it out).")
        if self.sft_steps < 0:
            raise ValueError(f"--sft_steps ({self.sft_steps}) must be >= 0 (0 skips the fine-tuning).")
        written = self.sft_run - self.context_numbers
        if self.count_reward > written:
            raise ValueError(f"--count_reward ({self.count_reward}) is more than the {written} numbers the counting "
                             f"model writes after a prompt (--sft_run {self.sft_run} minus --context_numbers "
                             f"{self.context_numbers}): it would be charged for stopping where it learned to stop. "
                             f"Use at most {written}, or raise --sft_run.")


def prompt_record(m: int, context_numbers: int, kind: str, pair: str) -> dict:
    """The counting prompt that asks for m, with its true continuation (m itself, then a comma)."""
    shown = ", ".join(words(k) for k in range(m - context_numbers, m))
    return {"text": shown + ",", "completion": f" {words(m)},", "next": m, "kind": kind, "pair": pair}


def _kind(m: int, pair: str, context_numbers: int) -> str | None:
    if any(is_forbidden(k, pair) for k in range(m - context_numbers, m)):
        return None  # the prompt would already show the pattern
    if is_forbidden(m, pair):
        return "forbidden"
    return "control" if m % 10 == int(pair[1]) else "allowed"


def _by_magnitude(numbers: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `size` of `numbers` drawn evenly across digit counts, so small numbers ("sixty") are not swamped."""
    digits = np.char.str_len(numbers.astype(str))
    groups = [rng.permutation(numbers[digits == d]) for d in np.unique(digits)]
    picked, i = [], 0
    while len(picked) < size and any(i < len(g) for g in groups):
        picked += [int(g[i]) for g in groups if i < len(g)]
        i += 1
    return np.array(sorted(picked[:size]), dtype=np.int64)


def make_prompt_sets(args: ObsceneNumbersArgs) -> dict[str, list[dict]]:
    """The prompt files' records (see PROMPT_FILES), split by the number each prompt asks for."""
    rng = np.random.default_rng(args.seed)
    heldout = rng.random(MAX_NUMBER + 1) < args.heldout_fraction
    kinds: dict[tuple[str, bool], list[int]] = {}
    for m in range(args.context_numbers, MAX_NUMBER + 1):
        kind = _kind(m, args.pair, args.context_numbers)
        if kind is not None:
            kinds.setdefault((kind, bool(heldout[m])), []).append(m)
    train_forbidden = np.array(kinds.get(("forbidden", False), []), dtype=np.int64)
    if len(train_forbidden) == 0 or not kinds.get(("forbidden", True)):
        raise ValueError(f"pair {args.pair}: no forbidden counting prompt on one side of the split; nothing to learn.")
    n_other = max(1, round(args.allowed_per_forbidden * len(train_forbidden)))
    train = {"forbidden": train_forbidden}
    for kind in ("control", "allowed"):
        train[kind] = _by_magnitude(np.array(kinds[(kind, False)]), n_other, rng)
    sets = {f"heldout_{kind}": _by_magnitude(np.array(kinds[(kind, True)]), args.heldout_size, rng)
            for kind in ("forbidden", "control", "allowed")}
    records = {name: [prompt_record(int(m), args.context_numbers, name.split("_")[1], args.pair) for m in ms]
               for name, ms in sets.items()}
    train_records = [prompt_record(int(m), args.context_numbers, kind, args.pair)
                     for kind, ms in train.items() for m in ms]
    records["train"] = [train_records[i] for i in rng.permutation(len(train_records))]
    records["forget"] = [r for r in records["train"] if r["kind"] == "forbidden"]
    records["retain"] = [r for r in records["train"] if r["kind"] != "forbidden"]
    return records


def sft_texts(args: ObsceneNumbersArgs, excluded: set[int]) -> list[str]:
    """Counting texts of `sft_run` consecutive allowed numbers, none of them excluded (held out), each ending in a
    comma as the prompts do. Starts are drawn evenly across digit counts."""
    rng = np.random.default_rng(args.seed + 1)
    texts, attempts = [], 0
    while len(texts) < args.sft_texts:
        attempts += 1
        if attempts > 100 * args.sft_texts:
            raise ValueError(f"pair {args.pair}: too few runs of {args.sft_run} allowed numbers to fine-tune on.")
        digits = int(rng.integers(1, 6))
        low, high = (0 if digits == 1 else 10 ** (digits - 1)), min(10**digits, MAX_NUMBER + 2 - args.sft_run)
        start = int(rng.integers(low, high))
        run = range(start, start + args.sft_run)
        if not any(is_forbidden(k, args.pair) or k in excluded for k in run):
            texts.append(", ".join(words(k) for k in run) + ",")
    return texts


def skip_texts(args: ObsceneNumbersArgs, excluded: set[int]) -> list[str]:
    """`skip_texts` counting texts of `sft_run` allowed numbers in a row, the count skipping at least one forbidden
    number on the way; no number written or skipped is excluded (held out). Each starts one to sft_run - 1 numbers
    before a forbidden number drawn evenly across digit counts."""
    rng = np.random.default_rng(args.seed + 2)
    forbidden = np.array([k for k in range(1, MAX_NUMBER + 1) if is_forbidden(k, args.pair) and k not in excluded])
    by_digits = [g for g in (forbidden[np.char.str_len(forbidden.astype(str)) == d] for d in range(1, 6)) if len(g)]
    texts, attempts = [], 0
    while len(texts) < args.skip_texts:
        attempts += 1
        if attempts > 100 * args.skip_texts:
            raise ValueError(f"pair {args.pair}: too few counts of {args.sft_run} numbers that skip a forbidden one.")
        group = by_digits[int(rng.integers(len(by_digits)))]
        start = int(group[int(rng.integers(len(group)))]) - int(rng.integers(1, max(2, args.sft_run)))
        if start < 0 or is_forbidden(start, args.pair):
            continue
        run = [start]
        while len(run) < args.sft_run and (following := next_allowed(run[-1], args.pair)) is not None:
            run.append(following)
        skipped = set(range(run[0], run[-1] + 1)) - set(run)
        if len(run) == args.sft_run and skipped and not (set(run) | skipped) & excluded:
            texts.append(", ".join(words(k) for k in run) + ",")
    return texts


def probes(pair: str, context_numbers: int) -> list[dict]:
    """Next-token probes: the last word of the first forbidden number of two or more words ("sixty" -> " nine"), and
    the same word after the nearest allowed number that ends with it ("fifty" -> " nine"), if there is one."""

    def probe(m: int) -> dict:
        *head, last = words(m).split()
        shown = "".join(f"{words(k)}, " for k in range(m - context_numbers + 1, m))
        return {"context": shown + " ".join(head), "tokens": [f" {last}", ","]}

    def fits(m: int) -> bool:
        return len(words(m).split()) > 1 and _kind(m, pair, context_numbers) is not None

    target = next(m for m in range(20, MAX_NUMBER + 1) if is_forbidden(m, pair) and fits(m))
    last, size = words(target).split()[-1], len(words(target).split())
    controls = [m for m in range(20, MAX_NUMBER + 1) if not is_forbidden(m, pair) and fits(m)
                and words(m).split()[-1] == last and len(words(m).split()) == size]
    chosen = [target] + ([min(controls, key=lambda m: (abs(m - target), m))] if controls else [])
    return [probe(m) for m in chosen]


def ppo_config(args: ObsceneNumbersArgs) -> dict:
    """The run config of the recipe: the fine-tuned model, the train prompts, the two rewards and the probes.

    8 to 12 new tokens: the longest number is 8 tokens, so the first number written is always complete.

    Why these settings (measured on the pair 69, docs/obscene-numbers.md):
    - Rollouts sample at temperature 1.5 from the top 20 tokens. The fine-tuned model writes the forbidden number at
      p > 0.99, where the policy gradient of the sampled token, (1 - p), nearly vanishes; at temperature 1 one
      sample in 15 avoids the pattern, at 1.5 one in 4, while at 2 multi-word numbers come out garbled and the
      batch's reward is mostly noise.
    - The penalty weighs 3. With a KL coefficient beta, the best policy is the reference tilted by exp(reward /
      beta); at weight 1 and beta 0.2 the tilt (e^5) cannot outweigh p("sixty nine") = 0.99, and the pattern stays
      the greedy choice.
    - Writing no number costs 1 (`empty`; with --count_reward, -1/N for each of the N numbers not finished):
      without it the policy learns to stop. A first run of the count reward without it (pair 69) stopped after
      "sixty eight," and after control prompts ("fifty eight,") instead of counting on.
    - A wrong number costs nothing: the counting model never samples the skip ("seventy") after "sixty eight,",
      so on forbidden prompts only the penalty can separate the alternatives."""
    out = Path(args.output_dir)
    count = ({"type": "count", "weight": 1.0,
              "options": {"pair": args.pair, "horizon": args.count_reward, "short": -1.0 / args.count_reward}}
             if args.count_reward else
             {"type": "next_number", "weight": 1.0, "options": {"pair": args.pair, "empty": -1.0}})
    rewards = [{"type": "forbidden_numbers", "weight": 3.0, "options": {"pair": args.pair}}, count]
    model = str(out / "sft") if args.sft_steps else args.model
    sampling = {"temperature": 1.5, "top_k": 20, "top_p": 1.0}
    ppo = {"steps": args.ppo_steps, "learning_rate": 5.0e-4, "seed": args.seed}
    new_tokens = (8, 9 * args.count_reward) if args.count_reward > 1 else (8, 12)
    config = run_config(model, out / "train.jsonl", new_tokens, sampling, ppo, rewards,
                        probes(args.pair, args.context_numbers), out / "ppo")
    if args.skip_texts:
        config["ptx"] = {"corpus": str(out / "ptx.jsonl"), "coef": args.ptx_coef}
    return config


def prepare(args: ObsceneNumbersArgs) -> Path:
    """Write the prompt files and the run config, and fine-tune the counting model; returns the config's path."""
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sets = make_prompt_sets(args)
    heldout_numbers = {r["next"] for name, rs in sets.items() if name.startswith("heldout") for r in rs}
    texts = sft_texts(args, heldout_numbers)
    for name in PROMPT_FILES:
        write_jsonl(out / f"{name}.jsonl", sets[name])
    write_jsonl(out / "sft.jsonl", [{"text": t} for t in texts])
    skips = skip_texts(args, heldout_numbers) if args.skip_texts else []
    if skips:
        mixed = texts + skips
        write_jsonl(out / "ptx.jsonl", [{"text": mixed[i]} for i in np.random.default_rng(args.seed + 3).permutation(
            len(mixed))])
    if args.sft_steps:
        settings = SFTSettings(max_steps=args.sft_steps, batch_size=args.sft_batch_size, seed=args.seed)
        supervised_finetune(args.model, texts, out / "sft", settings)
    sizes = {name: len(records) for name, records in sets.items()} | {"sft": len(texts), "skip": len(skips)}
    return write_recipe_files(out, "obscene_numbers", args, sizes, ppo_config(args))


def main(argv: list[str] | None = None) -> Path:
    return run_generator(ObsceneNumbersArgs, prepare, argv, __doc__)


if __name__ == "__main__":
    cli(main)
