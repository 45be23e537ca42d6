"""Time each reward component on one batch of real completions and print a Markdown table.

    HF_HUB_OFFLINE=1 python -m benchmarks.rewards_speed [--repeats 5] [--batch 64] [--reinforced DIR]

Completions are RealToxicityPrompts continuations (the human-written text that followed each challenging prompt), so
lengths and vocabulary are those of real training batches. Each component is built once (build time in the notes),
called once (lazy model loading; its time is in the notes), then timed `--repeats` times; the table gives the median.
The forget components run when rewards/forget.py is present; forget_likelihood needs a reinforced model, and without
`--reinforced` it uses SmolLM2 as both reinforced and reference, which costs the same two forward passes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from transformers import AutoTokenizer

from benchmarks.harness import REPO, SHARED_DATA
from detox.config import RewardComponentConfig
from detox.hub import OFFLINE_MODEL, resolve_model_path
from rewards import RewardComposer
from rewards.minilm_classifier import build_minilm_toxicity_classifier, load_davidson

ANCHORS = {"Romeo": "the young man", "Juliet": "the young woman", "Montague": "the family", "Capulet": "the house",
           "Tybalt": "the cousin", "Verona": "the city"}


def load_batch(data: Path, n: int) -> tuple[list[str], list[str]]:
    """The first `n` (prompt, continuation) pairs of RealToxicityPrompts' challenging set."""
    prompts, completions = [], []
    with open(data / "real-toxicity-prompts" / "toxic.jsonl", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            prompts.append(record["prompt"]["text"])
            completions.append(record["continuation"]["text"])
            if len(completions) == n:
                break
    return prompts, completions


def components(data: Path, workdir: Path, reinforced: str | None) -> list[tuple[RewardComponentConfig, str]]:
    """(component config, notes) for every reward type that can run on this machine."""
    started = time.perf_counter()
    davidson = data / "davidson-hate-offensive" / "labeled_data.csv.gz"
    minilm = str(build_minilm_toxicity_classifier(workdir / "minilm", davidson, n_train=200, seed=0))
    minilm_note = f"MiniLM-L6 + head fitted on 200 tweets ({time.perf_counter() - started:.0f} s to fit)"
    phrases = ["kill yourself", "shut up", "piece of shit", "go to hell", "sixty nine"]
    rows = [
        (RewardComponentConfig("toxicity", options={"model": minilm}, device="cpu"), f"{minilm_note}; completion"),
        (RewardComponentConfig("toxicity", name="toxicity_prompt", device="cpu",
                               options={"model": minilm, "score_prompt": True}), "same, prompt + completion"),
        (RewardComponentConfig("offline_toxicity"), "alt-profanity-check (linear SVM, word n-grams)"),
        (RewardComponentConfig("phrase", options={"phrases": phrases, "regexes": [r"\bf+u+c+k+\w*"],
                                                  "leetspeak": True}), "5 phrases + 1 regex, leetspeak"),
        (RewardComponentConfig("learned_phrase", options=_learned_options(data)),
         "char 2-5-gram TF-IDF + logistic regression, 400 tweets"),
        (RewardComponentConfig("callable", options={"path": "benchmarks.rewards_speed:length_reward"}),
         "trivial Python function: dispatch overhead"),
    ]
    if (REPO / "rewards" / "forget.py").exists():
        rows += _forget_components(data, reinforced)
    return rows


def _learned_options(data: Path) -> dict[str, Any]:
    texts, toxic = load_davidson(data / "davidson-hate-offensive" / "labeled_data.csv.gz", 400, seed=2)
    return {"forbidden": [t for t, y in zip(texts, toxic) if y], "allowed": [t for t, y in zip(texts, toxic) if not y]}


def _forget_components(data: Path, reinforced: str | None) -> list[tuple[RewardComponentConfig, str]]:
    shakespeare = str(data / "tinyshakespeare" / "input.txt.gz")
    likelihood = {"reinforced": reinforced} if reinforced else {
        "reinforced": resolve_model_path(OFFLINE_MODEL), "reference": OFFLINE_MODEL}
    note = "reinforced adapter" if reinforced else "SmolLM2-135M as reinforced and reference (2 forward passes)"
    return [
        (RewardComponentConfig("forget_verbatim", options={"corpus": shakespeare, "n": 8}),
         "8-gram index of tinyshakespeare, policy's completion_ids given; target < 5 ms"),
        (RewardComponentConfig("forget_likelihood", options=likelihood, device="cpu", batch_size=16),
         f"{note}, batch_size 16"),
        (RewardComponentConfig("anchor_terms", options={"terms": ANCHORS}), "6 anchor terms"),
    ]


def length_reward(prompts: list[str], completions: list[str], **kwargs) -> list[float]:
    return [float(len(c)) for c in completions]


def time_call(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(seconds of the first call, which loads models lazily; median ms of the next `repeats` calls)."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return first, statistics.median(times)


def completion_ids(completions: list[str]) -> list[list[int]]:
    """Token ids as the policy (SmolLM2's tokenizer) would hand them to the rewards."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(OFFLINE_MODEL))
    return [tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="shared data directory")
    parser.add_argument("--batch", type=int, default=64, help="completions per batch")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per component (median reported)")
    parser.add_argument("--reinforced", help="reinforced model/adapter dir for forget_likelihood")
    parser.add_argument("--skip", nargs="*", default=[], help="component names to leave out, e.g. forget_likelihood")
    args = parser.parse_args()

    prompts, completions = load_batch(args.data, args.batch)
    kwargs = {"completion_ids": completion_ids(completions)}
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        configs = components(args.data, Path(workdir), args.reinforced)
        configs = [(cfg, notes) for cfg, notes in configs if cfg.name not in args.skip]
        for cfg, notes in configs:
            start = time.perf_counter()
            reward = RewardComposer([cfg]).reward_funcs[0]  # the checked, chunked callable training uses
            built = time.perf_counter() - start
            first, ms = time_call(lambda: reward(prompts, completions, **kwargs), args.repeats)
            rows.append((cfg.name, ms, f"{notes}; build {built:.1f} s + first call {first:.1f} s"))
        cheap = [c for c, _ in configs if c.type in ("phrase", "offline_toxicity", "anchor_terms")]
        composer = RewardComposer(cheap)
        _, ms = time_call(lambda: composer(prompts, completions, **kwargs), args.repeats)
        rows.append(("composer(" + "+".join(c.name for c in cheap) + ")", ms, "weighted sum, checks, stats tensors"))

    load = os.getloadavg()[0]
    print(f"\n{args.batch} completions per batch, median of {args.repeats}, {os.cpu_count()} CPUs, load {load:.1f}\n")
    print("| component | ms/batch (median of N) | notes |")
    print("|---|---:|---|")
    for name, ms, notes in rows:
        print(f"| {name} | {ms:.1f} | {notes} |")


if __name__ == "__main__":
    main()
