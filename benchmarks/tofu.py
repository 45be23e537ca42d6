"""TOFU, reward-based against loss-based unlearning, over seeds, then the relearning attack on every method.

    python -m benchmarks.tofu [--output_dir outputs/tofu] [--splits forget10 forget01] [--seeds 0 1 2] \
        [--methods ppo gradient_difference npo simnpo rmu] [--recipe_args "--tier cpu"] [--recipe_prompts N] \
        [--ppo_args "--ppo.ppo_epochs 1"] [--unlearn_args ...] [--relearn_steps 0 5 10 20] [--relearn_seeds 0] \
        [--no_relearn]

1. The tofu recipe (`python -m detox.recipes.tofu`, with --recipe_args) in output_dir, unless its target exists.
2. Per split, method and seed, one run after another: PPO from the split's ppo.yaml (`--ppo.seed`), each loss
   baseline from its unlearn.yaml (`--method.name`, `--optim.seed`), in output_dir/<split>/runs/<method>_s<seed>; a
   run whose final model exists is not trained again.
3. evaluate_toxicity.py scores the target, the retain model and every run with TOFU's metrics (the recipe table,
   every question unless --recipe_prompts; cached per model, so adding a seed scores only the new runs).
4. Per split, a table: forget quality, model utility, forget answer probability and ROUGE-L, each the mean over
   seeds with its 95% t-interval; the efficacy-against-utility picture (output_dir/<split>/tofu.png); and the
   figures published for the same methods on larger models, for orientation only (other models, other budgets).
5. benchmarks.relearn on each method's first seed (--relearn_seeds are the attack's seeds): the share of its unlearning gap that K steps of fine-tuning on
   half of the forget answers bring back, against as many retain answers.
Then the issue's target: a reward-based method with at least NPO's forget quality at a higher model utility, that
keeps at least twice the unlearning gap of the best loss-based method after the attack. Writes
output_dir/<split>/tofu.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import continue_flags, module, run, script, t_interval

LOSS_METHODS = ("gradient_ascent", "gradient_difference", "npo", "simnpo", "rmu")
REWARD_METHODS = ("ppo",)
KEYS = ("forget_quality", "model_utility", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_Truth_Ratio")
PUBLISHED = {
    "forget10": {"source": "Fan et al. 2024 (SimNPO), Llama-2-7b-chat, model card of "
                           "huggingface.co/OPTML-Group/SimNPO-TOFU-forget10-Llama-2-7b-chat",
                 "rows": {"target": (0.00, 0.62), "retain": (1.00, 0.62), "npo": (0.29, 0.55),
                          "simnpo": (0.45, 0.62)}},
    "forget05": {"source": "Fan et al. 2024 (SimNPO), Llama-2-7b-chat, model card of "
                           "huggingface.co/OPTML-Group/SimNPO-TOFU-forget05-Llama-2-7b-chat",
                 "rows": {"target": (0.00, 0.62), "retain": (1.00, 0.62), "npo": (0.79, 0.57),
                          "simnpo": (0.99, 0.58)}},
}
"""(forget quality, model utility) published for orientation: another model, another fine-tuning, other budgets."""


def train(method: str, split_dir: Path, seed: int, out: Path, extra: Sequence[str] = ()) -> float | None:
    """Train one method's seed into `out` unless its final model exists, with `extra` flags of its script; its
    seconds, or None when it was there."""
    if (out / "final").is_dir():
        return None
    if method in REWARD_METHODS:
        command = script("train_ppo.py", "--config", split_dir / "ppo.yaml", "--ppo.seed", seed, *extra)
    else:
        command = script("train_unlearn.py", "--config", split_dir / "unlearn.yaml", "--method.name", method,
                         "--optim.seed", seed, *extra)
    out.mkdir(parents=True, exist_ok=True)
    return run(command + ["--checkpoint.output_dir", str(out), "--logging.report_to", "none", *continue_flags(out)],
               log=out.with_suffix(".log"))


def evaluate(split_dir: Path, models: dict[str, Path], recipe_prompts: int | None) -> dict[str, dict]:
    """TOFU's metrics of each model (evaluate_toxicity.py's recipe_metrics.json)."""
    out = split_dir / "eval"
    command = script("evaluate_toxicity.py", "--models", *(f"{name}={path}" for name, path in models.items()),
                     "--run_config", split_dir / "ppo.yaml", "--recipe_dir", split_dir,
                     "--recipe_prompts", "null" if recipe_prompts is None else recipe_prompts,
                     "--judges", "offline", "--num_prompts", 20, "--samples_per_prompt", 1, "--output_dir", out)
    run(command, log=split_dir / "eval.log")
    return json.loads((out / "recipe_metrics.json").read_text(encoding="utf-8"))


def summarise(values: dict[str, dict], methods: list[str], seeds: list[int]) -> dict[str, dict]:
    """Per row (target, retain, each method): each key's mean over seeds, its interval (None with one seed) and the
    per-seed values."""
    rows = {name: {k: {"mean": values[name][k], "interval": None, "seeds": [values[name][k]]} for k in KEYS}
            for name in ("target", "retain")}
    for method in methods:
        rows[method] = {}
        for key in KEYS:
            found = [values[f"{method}_s{seed}"][key] for seed in seeds]
            interval = t_interval(found)[1:] if len(found) > 1 else None
            rows[method][key] = {"mean": statistics.fmean(found), "interval": interval, "seeds": found}
    return rows


def markdown(split: str, rows: dict[str, dict], seeds: list[int]) -> str:
    def cell(entry: dict) -> str:
        text = f"{entry['mean']:.3g}"
        return text + (f" [{entry['interval'][0]:.3g}, {entry['interval'][1]:.3g}]" if entry["interval"] else "")

    lines = [f"TOFU {split}: mean over seeds {seeds} [95% t-interval]; target and retain model are one model each",
             "| model | " + " | ".join(KEYS) + " |", "|---|" + "---|" * len(KEYS)]
    lines += [f"| {name} | " + " | ".join(cell(row[k]) for k in KEYS) + " |" for name, row in rows.items()]
    published = PUBLISHED.get(split)
    if published:
        lines += ["", f"Published for orientation ({published['source']}): forget quality / model utility: "
                  + "; ".join(f"{name} {fq:.2f} / {mu:.2f}" for name, (fq, mu) in published["rows"].items())]
    return "\n".join(lines)


def plot(split: str, rows: dict[str, dict], path: Path) -> None:
    """Forget quality (log scale) against model utility: one point per row, its seed interval as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, row in rows.items():
        fq, mu = row["forget_quality"], row["model_utility"]
        x_err = [[mu["mean"] - mu["interval"][0]], [mu["interval"][1] - mu["mean"]]] if mu["interval"] else None
        y_err = [[fq["mean"] - max(fq["interval"][0], 1e-300)], [fq["interval"][1] - fq["mean"]]] \
            if fq["interval"] else None
        ax.errorbar(mu["mean"], max(fq["mean"], 1e-300), xerr=x_err, yerr=y_err, fmt="o", capsize=3, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("model utility (higher keeps more)")
    ax.set_ylabel("forget quality (KS p-value; higher forgets better)")
    ax.set_title(f"TOFU {split}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def kept_gap(relearn: dict, method: str) -> float | None:
    """1 - the share of the unlearning gap in answer probability that the forget attack brought back at its last K
    (None when the method opened no gap)."""
    share = relearn["attacks"]["forget"][method]["gap_share"]["probability"][-1]
    return None if share is None else 1.0 - share


def verdict(rows: dict[str, dict], relearn: dict | None, methods: list[str]) -> list[str]:
    """The issue's target, per reward-based method, said plainly."""
    lines = []
    losses = [m for m in methods if m in LOSS_METHODS]
    for method in (m for m in methods if m in REWARD_METHODS):
        if "npo" in rows:
            fq, mu = rows[method]["forget_quality"]["mean"], rows[method]["model_utility"]["mean"]
            npo_fq, npo_mu = rows["npo"]["forget_quality"]["mean"], rows["npo"]["model_utility"]["mean"]
            met = fq >= npo_fq and mu > npo_mu
            lines.append(f"{method}: forget quality {fq:.3g} vs NPO's {npo_fq:.3g}, model utility {mu:.3f} vs "
                         f"{npo_mu:.3f}: {'met' if met else 'NOT met'} (at least NPO's quality at higher utility)")
        if relearn is not None and losses:
            kept = {m: kept_gap(relearn, m) for m in [method, *losses]}
            best = max((v for m, v in kept.items() if m != method and v is not None), default=None)
            if kept[method] is None or best is None:
                lines.append(f"{method}: the relearning comparison is undefined (no unlearning gap opened)")
            else:
                met = kept[method] >= 2 * best
                lines.append(f"{method}: keeps {kept[method]:.2f} of its gap after the attack, the best loss-based "
                             f"method {best:.2f}: {'met' if met else 'NOT met'} (at least twice)")
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/tofu")
    parser.add_argument("--splits", nargs="+", default=["forget10", "forget01"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["ppo", "gradient_difference", "npo", "simnpo", "rmu"],
                        choices=[*REWARD_METHODS, *LOSS_METHODS])
    parser.add_argument("--recipe_args", default="", help="extra flags of python -m detox.recipes.tofu")
    parser.add_argument("--ppo_args", default="", help="extra flags of every train_ppo.py run")
    parser.add_argument("--unlearn_args", default="", help="extra flags of every train_unlearn.py run")
    parser.add_argument("--recipe_prompts", type=int, default=None, help="questions per set (default: all)")
    parser.add_argument("--relearn_steps", nargs="+", type=int, default=[0, 5, 10, 20])
    parser.add_argument("--relearn_seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--no_relearn", action="store_true")
    args = parser.parse_args(argv)
    root = Path(args.output_dir)
    times: dict[str, float] = {}
    if not (root / "target").is_dir() or not all((root / s / "recipe.json").is_file() for s in args.splits):
        times["recipe"] = run(module("detox.recipes.tofu", "--output_dir", root, "--splits", *args.splits,
                                     *shlex.split(args.recipe_args)), log=root.with_suffix(".recipe.log"))
    report = {}
    for split in args.splits:
        split_dir = root / split
        runs = {f"{m}_s{s}": split_dir / "runs" / f"{m}_s{s}" for m in args.methods for s in args.seeds}
        for name, out in runs.items():
            method, seed = name.rsplit("_s", 1)
            extra = shlex.split(args.ppo_args if method in REWARD_METHODS else args.unlearn_args)
            seconds = train(method, split_dir, int(seed), out, extra)
            if seconds is not None:
                times[f"{split}/{name}"] = seconds
        models = {"target": root / "target", "retain": split_dir / "retain_model",
                  **{name: out / "final" for name, out in runs.items()}}
        values = evaluate(split_dir, models, args.recipe_prompts)
        rows = summarise(values, args.methods, args.seeds)
        plot(split, rows, split_dir / "tofu.png")
        relearn = None
        if not args.no_relearn:
            from benchmarks import relearn as relearn_benchmark

            relearn = relearn_benchmark.main([
                "--models", *(f"{m}={runs[f'{m}_s{args.seeds[0]}'] / 'final'}" for m in args.methods),
                "--reference", f"target={root / 'target'}", "--retain_model", f"retain={split_dir / 'retain_model'}",
                "--forget", str(split_dir / "forget.jsonl"), "--retain", str(split_dir / "retain.jsonl"),
                "--steps", *map(str, args.relearn_steps), "--seeds", *map(str, args.relearn_seeds),
                "--output_dir", str(split_dir / "relearn")])
        lines = verdict(rows, relearn, args.methods)
        print("\n" + markdown(split, rows, args.seeds) + "\n\n" + "\n".join(lines), flush=True)
        report[split] = {"rows": rows, "verdict": lines, "values": values}
        (split_dir / "tofu.json").write_text(json.dumps({**report[split], "times": times}, indent=1) + "\n",
                                             encoding="utf-8")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()), flush=True)
    return report


if __name__ == "__main__":
    main()
