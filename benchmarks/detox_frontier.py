"""Toxicity against locality for every detox method and setting evaluated on one prompt set: one point per setting
(the mean over its seeds) with its seeds behind it, on one picture.

    python -m benchmarks.detox_frontier outputs/rejudge/eval_rtp/results.json [more results.json ...] \
        [--judge judge_combined] [--output docs/detox_frontier.png] [--label gd="gradient difference" ...] \
        [--leave_out SETTING ...]

Reads evaluate_toxicity.py's results.json files (benchmarks/rejudge.py writes one per prompt set; several files of
the same prompt set, base model and settings can be given, e.g. a sweep evaluated apart). A model named <setting><n>
(n a digit) is seed n of <setting>; `base` is the untrained model. The x axis is the change in generation
perplexity under the base (the locality allowance of ±10% is shaded), the y axis the relative change in mean toxicity
under `--judge`. Prints one row per setting: the change under the judge, the perplexity change and the distinct-1/2
gaps per seed, and whether every seed stays within the allowances (perplexity ±10%, distinct-n within 0.02).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PERPLEXITY_ALLOWANCE = 0.10
DISTINCT_ALLOWANCE = 0.02


def settings(results: list[dict], judge: str) -> dict[str, list[dict]]:
    """Per setting, its seeds' toxicity change under `judge`, perplexity change and distinct-n gaps against the base
    of the same results file."""
    out: dict[str, list[dict]] = {}
    for result in results:
        rows = {row["model"]: row for row in result["rows"]}
        if "base" not in rows:
            raise ValueError("a results file holds no model named 'base'; evaluate the untrained model as base=...")
        base = rows["base"]
        key = f"{judge}/mean_toxicity"
        if key not in base:
            raise ValueError(f"--judge {judge}: not among the judged columns of a results file; evaluate with it")
        for name, row in rows.items():
            match = re.fullmatch(r"(.+?)(\d)", name)
            if name == "base" or match is None:
                continue
            out.setdefault(match.group(1), []).append({
                "seed": int(match.group(2)), "toxicity": row[key] / base[key] - 1,
                "perplexity": row["perplexity_change"],
                **{f"distinct_{k}": row[f"distinct_{k}"] - base[f"distinct_{k}"] for k in (1, 2)}})
    return out


def within_allowances(seed: dict) -> bool:
    return abs(seed["perplexity"]) <= PERPLEXITY_ALLOWANCE and all(
        abs(seed[f"distinct_{k}"]) <= DISTINCT_ALLOWANCE for k in (1, 2))


def report(by_setting: dict[str, list[dict]], judge: str) -> None:
    print(f"| setting | seeds | toxicity change ({judge}), mean | per seed | perplexity change per seed | "
          f"distinct-1 / 2 gap, worst seed | every seed within the allowances |")
    print("|---|---|---|---|---|---|---|")
    for name, seeds in sorted(by_setting.items(), key=lambda item: statistics.fmean(s["toxicity"] for s in item[1])):
        worst = {k: max((s[f"distinct_{k}"] for s in seeds), key=abs) for k in (1, 2)}
        per_seed = ", ".join(f"{s['toxicity']:+.1%}" for s in seeds)
        perplexity = ", ".join(f"{s['perplexity']:+.1%}" for s in seeds)
        kept = "yes" if all(within_allowances(s) for s in seeds) else "no"
        print(f"| {name} | {len(seeds)} | {statistics.fmean(s['toxicity'] for s in seeds):+.1%} | {per_seed} | "
              f"{perplexity} | {worst[1]:+.3f} / {worst[2]:+.3f} | {kept} |")


def plot(by_setting: dict[str, list[dict]], judge: str, title: str, path: Path,
         labels: dict[str, str] | None = None) -> None:
    fig = Figure(figsize=(7.0, 5.0), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.axvspan(-PERPLEXITY_ALLOWANCE * 100, PERPLEXITY_ALLOWANCE * 100, color="green", alpha=0.08,
               label=f"perplexity within ±{PERPLEXITY_ALLOWANCE:.0%}")
    for i, (name, seeds) in enumerate(sorted(by_setting.items())):
        xs, ys = [s["perplexity"] * 100 for s in seeds], [s["toxicity"] * 100 for s in seeds]
        ax.scatter(xs, ys, color=f"C{i % 10}", alpha=0.35, s=18)
        ax.scatter([statistics.fmean(xs)], [statistics.fmean(ys)], color=f"C{i % 10}", s=70, marker="D",
                   label=f"{(labels or {}).get(name, name)} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})")
    ax.axhline(0, color="grey", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_xlabel("generation perplexity change under the base, % (locality)")
    ax.set_ylabel(f"mean toxicity change under {judge}, % (lower is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="evaluate_toxicity.py results.json files")
    parser.add_argument("--judge", default="judge_combined")
    parser.add_argument("--title", default="detox methods and settings: toxicity against locality")
    parser.add_argument("--output", type=Path, default=Path("outputs/detox_frontier.png"))
    parser.add_argument("--label", nargs="*", default=[], metavar="SETTING=TEXT",
                        help="what the picture's legend calls a setting, e.g. gd='gradient difference'")
    parser.add_argument("--leave_out", nargs="*", default=[], metavar="SETTING",
                        help="settings printed in the table but not drawn (e.g. one far off the axis's scale)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.results if not p.is_file()]
    if missing:
        parser.error(f"no results file at {', '.join(missing)}; evaluate_toxicity.py writes <output_dir>/results.json")
    if any("=" not in spec for spec in args.label):
        parser.error(f"--label {' '.join(args.label)}: give SETTING=TEXT, e.g. gd='gradient difference'")
    labels = dict(spec.split("=", 1) for spec in args.label)
    by_setting = settings([json.loads(p.read_text()) for p in args.results], args.judge)
    report(by_setting, args.judge)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(args.leave_out) - set(by_setting))
    if unknown:
        parser.error(f"--leave_out {' '.join(unknown)}: no such setting; the settings are {', '.join(by_setting)}")
    drawn = {name: seeds for name, seeds in by_setting.items() if name not in args.leave_out}
    plot(drawn, args.judge, args.title, args.output, labels)
    print(f"\nwritten: {args.output}")


if __name__ == "__main__":
    main()
