"""Detox methods re-judged: each method trained over seeds, then every model judged on three prompt sets by every
judge, each judge marked reward, sibling or independent of the model it scores.

    python -m benchmarks.rejudge [--output_dir outputs/rejudge] [--methods gd ppo] [--seeds 0 1 2] \
        [--method_seeds ppo=0,1] [--num_prompts 100] [--samples_per_prompt 3]

Methods (presets, each trained as shipped but for its seed):
  gd        configs/detox_gradient_difference.yaml with train_unlearn.py (`--optim.seed`)
  ppo       configs/offline_default.yaml with train_ppo.py, the main job (`--ppo.seed`)
  combined  configs/detox_combined.yaml with train_ppo.py: PPO plus gradient ascent and ptx on gradient difference's rows
  gd_ppo    configs/detox_gd_then_ppo.yaml with train_ppo.py, started from gd's model of the same seed (trained first)

Each seed trains in output_dir/<method>_s<seed>, one run after another; a seed whose final model exists is not trained
again (`--method_seeds` gives a method other seeds than `--seeds`). Then evaluate_toxicity.py scores the base model
and every trained model on the same prompts with the same decoding and sampling seed, in output_dir/eval_<set> (a
model's completions and scores are cached there, so adding a method or a seed evaluates only the new models):
  rtp       RealToxicityPrompts prompts that every training run held out (`--prompt_split heldout`)
  toxigen   the ToxiGen implicit-hate prompts (`builtin:toxigen_implicit`), which no training run reads
  nontoxic  non-toxic RealToxicityPrompts prompts (`builtin:rtp_nontoxic`), for locality

Prints, for each prompt set and judge (most valid first, by detox/assets/judge_validity.json): the judge's relation to
each method, the base's mean toxicity and each method's relative change per seed (with the paired 95% bootstrap
interval over prompts) and over seeds (mean, 95% t-interval), plus two changes that do not depend on where a judge's
scale starts (share of prompts whose completions became less toxic, AUC of base against model completions; means over
seeds). Then locality per set (generation perplexity under the base, distinct-n) and, per set and independent judge,
which method is less toxic and whether the two methods' seed intervals overlap. Writes output_dir/summary.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.harness import run, script, seed_interval
from detox.validity import load_ranking

METHODS = {
    "gd": ("train_unlearn.py", "configs/detox_gradient_difference.yaml", "--optim.seed"),
    "ppo": ("train_ppo.py", "configs/offline_default.yaml", "--ppo.seed"),
    "combined": ("train_ppo.py", "configs/detox_combined.yaml", "--ppo.seed"),
    "gd_ppo": ("train_ppo.py", "configs/detox_gd_then_ppo.yaml", "--ppo.seed"),
}
STARTS = {"gd_ppo": "gd"}
"""Methods that start from another method's model of the same seed (its final/, trained first when missing)."""
PROMPT_SETS = {
    "rtp": ["--prompt_split", "heldout"],
    "toxigen": ["--prompts", "builtin:toxigen_implicit", "--prompt_split", "all"],
    "nontoxic": ["--prompts", "builtin:rtp_nontoxic", "--prompt_split", "all"],
}
JUDGES = ["offline", "judge_combined", "judge_toxigen", "judge_stormfront", "judge_davidson", "judge_rtp",
          "minilm_davidson", "minilm_rtp"]
"""Every offline judge but minilm_davidson_reward (minilm_davidson's twin on other rows of the same tweets)."""


def train(out: Path, method: str, seed: int) -> None:
    target = out / f"{method}_s{seed}"
    if (target / "final").is_dir():
        print(f"{target}/final exists: not trained again")
        return
    start = []
    if method in STARTS:
        train(out, STARTS[method], seed)
        start = ["--model.name_or_path", out / f"{STARTS[method]}_s{seed}" / "final"]
    entry, config, seed_flag = METHODS[method]
    seconds = run(script(entry, "--config", config, seed_flag, seed, "--checkpoint.output_dir", target, *start,
                         "--logging.report_to", "none"), log=out / f"{method}_s{seed}.log")
    print(f"{method} seed {seed}: trained in {seconds:.0f} s")


def evaluate(args, out: Path, models: list[str], prompt_set: str) -> dict:
    where = out / f"eval_{prompt_set}"
    seconds = run(script(
        "evaluate_toxicity.py", "--models", "base=smollm2-135m-instruct", *models, "--judges", *JUDGES,
        *PROMPT_SETS[prompt_set], "--num_prompts", args.num_prompts, "--samples_per_prompt", args.samples_per_prompt,
        "--batch_size", args.batch_size, "--seed", 0, "--output_dir", where,
    ), log=out / f"eval_{prompt_set}.log")
    print(f"evaluation of {prompt_set}: {seconds:.0f} s")
    return json.loads((where / "results.json").read_text())


def change(row: dict, base: dict, key: str) -> float:
    return row[key] / base[key] - 1


def judge_rows(results: dict, seeds_of: dict[str, list[int]]) -> list[dict]:
    """Per judge and method: the relation, the base mean, per-seed and over-seed relative changes, floor-free
    changes."""
    rows = {row["model"]: row for row in results["rows"]}
    base = rows["base"]
    ranking = load_ranking()
    out = []
    for judge in sorted(JUDGES, key=lambda j: -ranking.get(j, 0.0)):
        key = f"{judge}/mean_toxicity"
        for method, seeds in seeds_of.items():
            names = [f"{method}{s}" for s in seeds]
            changes = [change(rows[n], base, key) for n in names]
            lows = [rows[n][f"{judge}/delta_ci_low"] / base[key] for n in names]
            highs = [rows[n][f"{judge}/delta_ci_high"] / base[key] for n in names]
            mean, low, high = seed_interval(changes, lows, highs)
            out.append({
                "judge": judge, "validity": ranking.get(judge), "method": method,
                "relation": results["judge_relations"][names[0]][judge], "base": base[key],
                "seeds": [{"seed": s, "mean_toxicity": rows[n][key], "change": c, "low": lo, "high": hi}
                          for s, n, c, lo, hi in zip(seeds, names, changes, lows, highs)],
                "change": mean, "low": low, "high": high,
                "share_prompts_less_toxic": statistics.fmean(rows[n][f"{judge}/share_prompts_less_toxic"]
                                                             for n in names),
                "auc_base_vs_model": statistics.fmean(rows[n][f"{judge}/auc_base_vs_model"] for n in names),
            })
    return out


def locality_rows(results: dict, seeds_of: dict[str, list[int]]) -> list[dict]:
    rows = {row["model"]: row for row in results["rows"]}
    base = rows["base"]
    out = []
    for method, seeds in seeds_of.items():
        names = [f"{method}{s}" for s in seeds]
        changes = [rows[n]["perplexity_change"] for n in names]
        mean, low, high = seed_interval(changes, [rows[n]["perplexity_change_ci_low"] for n in names],
                                        [rows[n]["perplexity_change_ci_high"] for n in names])
        out.append({"method": method, "seeds": seeds, "base_perplexity": base["perplexity"],
                    "perplexity_change": mean, "low": low,
                    "high": high, "per_seed": changes,
                    **{f"distinct_{k}_gap": statistics.fmean(rows[n][f"distinct_{k}"] - base[f"distinct_{k}"]
                                                              for n in names) for k in (1, 2, 3)}})
    return out


def print_set(prompt_set: str, judged: list[dict], locality: list[dict]) -> None:
    print(f"\n## {prompt_set}: mean toxicity, relative change per seed [paired 95% bootstrap over prompts] and over "
          f"seeds [95% t-interval]\n")
    print("| judge (validity) | method | relation | base | per seed | over seeds | prompts less toxic | AUC base vs "
          "model |")
    print("|---|---|---|---|---|---|---|---|")
    for r in judged:
        per_seed = "; ".join(f"{s['change']:+.1%} [{s['low']:+.1%}, {s['high']:+.1%}]" for s in r["seeds"])
        validity = f"{r['validity']:.3f}" if r["validity"] is not None else "n/a"
        print(f"| {r['judge']} ({validity}) | {r['method']} | {r['relation']} | {r['base']:.4f} | {per_seed} | "
              f"**{r['change']:+.1%}** [{r['low']:+.1%}, {r['high']:+.1%}] | {r['share_prompts_less_toxic']:.2f} | "
              f"{r['auc_base_vs_model']:.3f} |")
    print("\n| method | generation perplexity change over seeds | per seed | distinct-1 / 2 / 3 gap |")
    print("|---|---|---|---|")
    for r in locality:
        print(f"| {r['method']} | {r['perplexity_change']:+.1%} [{r['low']:+.1%}, {r['high']:+.1%}] "
              f"(base {r['base_perplexity']:.2f}) | {', '.join(f'{c:+.1%}' for c in r['per_seed'])} | "
              f"{r['distinct_1_gap']:+.4f} / {r['distinct_2_gap']:+.4f} / {r['distinct_3_gap']:+.4f} |")


def print_verdicts(summary: dict, methods: list[str]) -> None:
    """Per pair of methods, toxic prompt set and judge independent of both: the less toxic method and whether the
    two methods' seed intervals overlap."""
    by_set: dict[str, dict[str, dict[str, dict]]] = {}  # prompt set -> judge -> method -> row
    for prompt_set in ("rtp", "toxigen"):
        for r in summary.get(prompt_set, {}).get("judges", []):
            by_set.setdefault(prompt_set, {}).setdefault(r["judge"], {})[r["method"]] = r
    for i, first in enumerate(methods):
        for second in methods[i + 1:]:
            print(f"\n## {first} against {second} under the judges independent of both")
            for prompt_set, by_judge in by_set.items():
                for judge, rows in by_judge.items():
                    a, b = rows[first], rows[second]
                    if a["relation"] != "independent" or b["relation"] != "independent":
                        continue
                    better = a if a["change"] < b["change"] else b
                    overlap = a["low"] <= b["high"] and b["low"] <= a["high"]
                    print(f"{prompt_set}, {judge}: {better['method']} less toxic ({a['method']} {a['change']:+.1%}, "
                          f"{b['method']} {b['change']:+.1%}); intervals {'overlap' if overlap else 'do not overlap'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/rejudge")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--method_seeds", nargs="+", default=[], help="method=seed,seed... for a method whose seeds "
                        "differ from --seeds, e.g. ppo=0,1")
    parser.add_argument("--prompt_sets", nargs="+", default=list(PROMPT_SETS), choices=list(PROMPT_SETS))
    parser.add_argument("--num_prompts", type=int, default=100, help="prompts of each set evaluated")
    parser.add_argument("--samples_per_prompt", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()
    seeds_of = {method: args.seeds for method in args.methods}
    for entry in args.method_seeds:
        method, _, listed = entry.partition("=")
        if method not in seeds_of or not listed:
            parser.error(f"--method_seeds {entry}: expected method=seed,seed... for one of {args.methods}")
        seeds_of[method] = [int(s) for s in listed.split(",")]
    if any(len(set(seeds)) != len(seeds) for seeds in seeds_of.values()):
        parser.error(f"seeds {seeds_of}: each seed once per method")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for method, seeds in seeds_of.items():
        for seed in seeds:
            train(out, method, seed)
    models = [f"{m}{s}={out / f'{m}_s{s}' / 'final'}" for m, seeds in seeds_of.items() for s in seeds]
    summary = {}
    for prompt_set in args.prompt_sets:
        results = evaluate(args, out, models, prompt_set)
        summary[prompt_set] = {"judges": judge_rows(results, seeds_of), "locality": locality_rows(results, seeds_of),
                               "num_prompts": results["num_prompts"], "samples_per_prompt": args.samples_per_prompt}
        print_set(prompt_set, summary[prompt_set]["judges"], summary[prompt_set]["locality"])
    print_verdicts(summary, args.methods)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nwritten: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
