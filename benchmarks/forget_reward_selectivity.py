"""How selectively a `forget_likelihood` reward sees the play to forget: its penalty on held-out speeches of the play
against held-out speeches of the other plays.

    python -m benchmarks.forget_reward_selectivity --recipe_dir outputs/forget_text \
        --rewards base=reinforced contrast=reinforced:reinforced_retain

PPO can unlearn only what its reward tells apart. A variant is `NAME=REINFORCED[:REFERENCE]` (directories, relative to
the recipe directory unless absolute; without a reference the reinforced adapter's base, the target, is the baseline).
Each variant scores the true continuations of the play's held-out prompts (`heldout_forget.jsonl`: a speech's header
and first line, then its next lines) and of held-out speeches of the other plays (`heldout_retain.txt`, cut the same
way); neither set trained any model of the recipe. Printed per variant: the mean penalty on each set with 95%
bootstrap intervals, their ratio, and the AUC, the probability that a continuation of the play is penalised more than
one of another play (0.5: blind to the play; 1: perfectly selective), with a 95% bootstrap interval.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.harness import bootstrap_interval, mean_interval
from detox.recipes.forget_text import prompt_record, speeches
from rewards.forget import ForgetLikelihood


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe_dir", required=True, help="a directory written by detox.recipes.forget_text")
    parser.add_argument("--rewards", nargs="+", default=["base=reinforced"],
                        help="NAME=REINFORCED[:REFERENCE] per variant")
    parser.add_argument("--limit", type=int, default=None, help="at most this many continuations of each set")
    parser.add_argument("--bootstrap_samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="also write the results here as JSON")
    return parser.parse_args(argv)


def variants(specs: list[str], recipe: Path) -> dict[str, tuple[str, str | None]]:
    """`["contrast=reinforced:reinforced_retain"]` -> {"contrast": (reinforced dir, reference dir or None)}."""
    out = {}
    for spec in specs:
        name, sep, dirs = spec.partition("=")
        if not sep or not name or not dirs:
            raise SystemExit(f"--rewards '{spec}': expected NAME=REINFORCED[:REFERENCE], e.g. "
                             f"contrast=reinforced:reinforced_retain.")
        paths = [str(p if p.is_absolute() else recipe / p) for p in map(Path, dirs.split(":", 1))]
        for path in paths:
            if not Path(path).is_dir():
                raise SystemExit(f"--rewards '{spec}': {path} is not a directory.")
        out[name] = (paths[0], paths[1] if len(paths) > 1 else None)
    return out


def continuation_pairs(recipe: Path, limit: int | None) -> dict[str, list[tuple[str, str]]]:
    """(prompt, true continuation) pairs of the play's held-out speeches and of held-out speeches of other plays."""
    with open(recipe / "heldout_forget.jsonl", encoding="utf-8") as f:
        play = [(r["text"], r["completion"]) for r in map(json.loads, f)]
    retain_text = (recipe / "heldout_retain.txt").read_text(encoding="utf-8").splitlines()
    retain = [(r["text"], r["completion"]) for r in map(prompt_record, speeches(retain_text))
              if r["completion"].strip()]
    if not play or not retain:
        raise SystemExit(f"{recipe}: no held-out speeches of the play or of the other plays; give a directory that "
                         f"detox.recipes.forget_text wrote.")
    return {"play": play[:limit], "other plays": retain[:limit]}


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half (the Mann-Whitney statistic over its maximum)."""
    above = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(above + ties / 2)


def run(args: argparse.Namespace) -> dict:
    recipe = Path(args.recipe_dir)
    pairs = continuation_pairs(recipe, args.limit)
    result = {"counts": {k: len(v) for k, v in pairs.items()}, "rows": []}
    for name, (reinforced, reference) in variants(args.rewards, recipe).items():
        reward = ForgetLikelihood(reinforced=reinforced, reference=reference)
        scores = {k: reward.penalty(*map(list, zip(*v))).numpy().astype(np.float64) for k, v in pairs.items()}
        row = {"variant": name, "reinforced": reinforced, "reference": reference or "(the adapter's base)"}
        for k, values in scores.items():
            mean, low, high = mean_interval(values, args.bootstrap_samples, args.seed)
            row[k] = {"mean": mean, "ci_low": low, "ci_high": high}
        row["ratio"] = row["play"]["mean"] / max(row["other plays"]["mean"], 1e-12)
        row["auc"] = auc(scores["play"], scores["other plays"])
        row["auc_ci_low"], row["auc_ci_high"] = bootstrap_interval(auc, [scores["play"], scores["other plays"]],
                                                                   args.bootstrap_samples, args.seed)
        result["rows"].append(row)
        del reward
    return result


def markdown(result: dict) -> str:
    counts = result["counts"]
    lines = [f"| variant | penalty, play ({counts['play']} held-out speeches) | penalty, other plays "
             f"({counts['other plays']}) | ratio | AUC (play above other plays) |", "|---|---|---|---|---|"]
    for row in result["rows"]:
        cells = [f"{row[k]['mean']:.4f} [{row[k]['ci_low']:.4f}, {row[k]['ci_high']:.4f}]"
                 for k in ("play", "other plays")]
        lines.append(f"| {row['variant']} | {cells[0]} | {cells[1]} | {row['ratio']:.2f} | "
                     f"{row['auc']:.3f} [{row['auc_ci_low']:.3f}, {row['auc_ci_high']:.3f}] |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = run(args)
    print(markdown(result))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
