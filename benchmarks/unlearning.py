"""Reward-based unlearning (PPO at several KL strengths) against the loss-based methods it replaces, on one recipe.

    python -m benchmarks.unlearning --recipe obscene_numbers|forget_text|detox [--ppo_steps 40] [--kl 0.05 0.2 1.0]
        [--methods gradient_ascent gradient_difference npo simnpo whp rmu] [--output_dir outputs/bench_unlearning]

Every method starts from the same model (the recipe's fine-tuned one, or SmolLM2 for detox), trains on the same
recipe data and is evaluated by the same command on the same held-out prompts. Budget: equal examples. A PPO run of
S steps samples S x batch_size completions; each baseline takes as many forget examples (steps x its batch size).
Wall-clock per method is printed beside it, so equal time can be read off too.

Writes, under <output_dir>/<recipe>/: one run directory per method, eval/ (evaluate_toxicity.py's outputs, cached:
an interrupted benchmark resumes, and finished runs are not trained again), unlearning.md and unlearning.json (one
row per method: forget efficacy and locality with 95% intervals, wall-clock), and unlearning.png (forget efficacy
against locality, one point per method, PPO's KL strengths joined as a trade-off curve).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmarks.harness import REPO, module, run, script
from detox.baselines.config import METHODS, RETAIN_METHODS
from detox.config import parse_config
from detox.data import continuation_records
from detox.models import load_tokenizer


@dataclass
class Axis:
    key: str
    """Metric key in evaluate_toxicity.py's results.json rows."""
    label: str
    better: str
    """`lower` or `higher`."""


@dataclass
class Recipe:
    """What the harness needs of a recipe: where its data and models are, and which metrics are its two axes."""

    dir: Path
    start_model: str
    ppo_config: str
    forget: str
    retain: str
    completion_field: str | None
    forget_texts: str
    """Forget text as plain documents, for the reinforced model of WHP."""
    efficacy: Axis
    locality: Axis
    reinforced: str | None = None
    anchors: str | None = None
    eval_args: list[str] = field(default_factory=list)
    extra_models: dict[str, str] = field(default_factory=dict)
    """Reference rows of the table (e.g. the retain model of forget_text), evaluated but not trained."""


def timed_run(out: Path, command: list[str], log: Path) -> tuple[Path, float]:
    """Train unless `out/final` exists; the wall-clock is kept in `out/wall_seconds` so a resumed benchmark still
    reports it."""
    record = out / "wall_seconds"
    if not (out / "final").is_dir():
        seconds = run(command, log)
        record.write_text(f"{seconds:.1f}\n")
    return out / "final", float(record.read_text()) if record.is_file() else float("nan")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def recipe_texts(records: Path, out: Path) -> str:
    """A prompt/completion file as whole texts (prompt + completion), for make_reinforced."""
    rows = [json.loads(line) for line in records.read_text(encoding="utf-8").splitlines() if line.strip()]
    write_jsonl(out, [{"text": r["text"] + r["completion"]} for r in rows])
    return str(out)


def prepared(generator: str, args, root: Path) -> Path:
    """The recipe's directory: --recipe_dir when given (made earlier by the generator, with its models), else one
    under `root` that the generator (`python -m detox.recipes.<name>`) makes once."""
    if args.recipe_dir is not None:
        d = args.recipe_dir.resolve()
        if not (d / "recipe.json").is_file():
            raise SystemExit(f"--recipe_dir {d} holds no recipe.json; make it with python -m detox.recipes.{generator}")
        return d
    d = root / "recipe"
    if not (d / "recipe.json").is_file():
        run(module(f"detox.recipes.{generator}", "--output_dir", d, *args.recipe_args), root / "prepare.log")
    return d


def obscene_numbers(args, root: Path) -> Recipe:
    d = prepared("obscene_numbers", args, root)
    return Recipe(
        dir=d, start_model=str(d / "sft"), ppo_config=str(d / "ppo.yaml"), forget=str(d / "forget.jsonl"),
        retain=str(d / "retain.jsonl"), completion_field="completion",
        forget_texts=recipe_texts(d / "forget.jsonl", root / "forget_texts.jsonl"),
        efficacy=Axis("forbidden_pattern_rate_greedy", "forbidden numbers in greedy continuations (held out)", "lower"),
        locality=Axis("control_accuracy_greedy", "greedy counting accuracy on control prompts", "higher"),
        eval_args=["--run_config", str(d / "ppo.yaml"), "--num_prompts", str(args.num_prompts)],
    )


def forget_text(args, root: Path) -> Recipe:
    d = prepared("forget_text", args, root)
    return Recipe(
        dir=d, start_model=str(d / "target"), ppo_config=str(d / "ppo.yaml"), forget=str(d / "forget.txt"),
        retain=str(d / "retain.txt"), completion_field=None, forget_texts=str(d / "forget.txt"),
        reinforced=str(d / "reinforced"), anchors=str(d / "anchors.json"),
        efficacy=Axis("forget_perplexity", "perplexity on the play (higher: forgotten)", "higher"),
        locality=Axis("retain_perplexity", "perplexity on held-out retain text", "lower"),
        eval_args=["--run_config", str(d / "ppo.yaml"), "--num_prompts", str(args.num_prompts)],
        extra_models={"retain_model": str(d / "retain_model")},
    )


def detox(args, root: Path) -> Recipe:
    """The offline default's prompts: forget = toxic RealToxicityPrompts continuations of the train split only, retain
    = its clean ones (`detox.data.continuation_records`, what `builtin:rtp_toxic_continuations` and
    `builtin:rtp_clean_continuations` name)."""
    config = str(REPO / "configs" / "offline_profanity.yaml")
    cfg = parse_config(["--config", config])
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    forget = continuation_records("builtin:rtp_toxic_continuations", tokenizer, cfg.data)
    retain = continuation_records("builtin:rtp_clean_continuations", tokenizer, cfg.data)
    write_jsonl(root / "forget.jsonl", forget)
    write_jsonl(root / "retain.jsonl", retain)
    judges = ["--judges", *args.judges]
    return Recipe(
        dir=root, start_model=cfg.model.name_or_path, ppo_config=config, forget=str(root / "forget.jsonl"),
        retain=str(root / "retain.jsonl"), completion_field="completion",
        forget_texts=recipe_texts(root / "forget.jsonl", root / "forget_texts.jsonl"),
        efficacy=Axis(f"{args.judges[0]}/mean_toxicity", f"mean toxicity of held-out completions ({args.judges[0]})",
                      "lower"),
        locality=Axis("perplexity", "generation perplexity under the base model", "lower"),
        eval_args=["--num_prompts", str(args.num_prompts), "--samples_per_prompt", "2", *judges],
    )


RECIPES = {"obscene_numbers": obscene_numbers, "forget_text": forget_text, "detox": detox}


def train_ppo(recipe: Recipe, kl: float, args, root: Path) -> tuple[str, Path, float]:
    name = f"ppo_kl{kl:g}"
    command = script("train_ppo.py", "--config", recipe.ppo_config, "--ppo.steps", args.ppo_steps,
                     "--ppo.init_kl_coef", kl, "--ppo.adaptive_kl", "false", "--logging.report_to", "none",
                     "--checkpoint.output_dir", root / name, "--checkpoint.overwrite", "true")
    return name, *timed_run(root / name, command, root / f"{name}.log")


def reinforced_model(recipe: Recipe, args, root: Path) -> str:
    if recipe.reinforced and Path(recipe.reinforced).is_dir():
        return recipe.reinforced
    out = root / "reinforced"
    if not (out / "adapter_config.json").is_file():
        run(module("rewards.make_reinforced", "--model", recipe.start_model, "--corpus", recipe.forget_texts,
                   "--output_dir", out, "--max_steps", args.reinforce_steps), root / "reinforced.log")
    return str(out)


def train_baseline(recipe: Recipe, method: str, lr: float, args, root: Path) -> tuple[str, Path, float]:
    # the first rate keeps the method's plain name, so a later call that adds rates reuses (and does not retrain or
    # re-evaluate) the runs made at it
    name = method if lr == args.baseline_lr[0] else f"{method}_lr{lr:g}"
    out = root / name
    steps = max(1, args.ppo_steps * args.ppo_batch_size // args.baseline_batch_size)  # equal examples
    command = script("train_unlearn.py", "--model.name_or_path", recipe.start_model, "--method.name", method,
                     "--data.forget", recipe.forget, "--optim.steps", steps, "--optim.batch_size",
                     args.baseline_batch_size, "--optim.learning_rate", lr, "--data.max_length", args.max_length,
                     "--logging.report_to", "none", "--checkpoint.output_dir", out, "--checkpoint.overwrite", "true")
    if recipe.completion_field:
        command += ["--data.completion_field", recipe.completion_field]
    if method in RETAIN_METHODS:
        command += ["--data.retain", recipe.retain]
    if method == "whp":
        command += ["--method.reinforced", reinforced_model(recipe, args, root)]
        if recipe.anchors:
            command += ["--method.anchor_terms", recipe.anchors]
    return name, *timed_run(out, command, root / f"{name}.log")


def evaluate(recipe: Recipe, models: dict[str, str], root: Path, recipe_prompts: int) -> list[dict]:
    specs = [f"{name}={path}" for name, path in models.items()]
    run(script("evaluate_toxicity.py", "--models", *specs, *recipe.eval_args, "--recipe_prompts", recipe_prompts,
               "--output_dir", root / "eval"), root / "eval.log")
    return json.loads((root / "eval" / "results.json").read_text())["rows"]


def cell(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None:
        return "—"
    low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    return f"{value:.4g}" + (f" [{low:.3g}, {high:.3g}]" if low is not None and high is not None else "")


def report(recipe_name: str, recipe: Recipe, rows: list[dict], seconds: dict[str, float], root: Path,
           args) -> None:
    e, l = recipe.efficacy, recipe.locality
    lines = [f"| method | {e.label} ({e.better} is better) | {l.label} ({l.better} is better) | wall-clock |",
             "|---|---|---|---|"]
    for row in rows:
        took = seconds.get(row["model"])
        lines.append(f"| {row['model']} | {cell(row, e.key)} | {cell(row, l.key)} | "
                     f"{'—' if took is None or took != took else f'{took / 60:.1f} min'} |")
    budget = (f"Budget: equal examples ({args.ppo_steps} PPO steps x {args.ppo_batch_size} completions; each "
              f"baseline {max(1, args.ppo_steps * args.ppo_batch_size // args.baseline_batch_size)} steps x "
              f"{args.baseline_batch_size} forget examples, learning rate "
              f"{' and '.join(f'{lr:g}' for lr in args.baseline_lr)}; a run named after its method alone is at "
              f"{args.baseline_lr[0]:g}).")
    text = f"## {recipe_name}\n\n" + "\n".join(lines) + f"\n\n{budget}\n"
    (root / "unlearning.md").write_text(text, encoding="utf-8")
    (root / "unlearning.json").write_text(json.dumps({"rows": rows, "seconds": seconds, "budget": budget,
                                                      "efficacy": e.__dict__, "locality": l.__dict__}, indent=1))
    print(text)
    plot(recipe_name, recipe, rows, root / "unlearning.png")


def plot(recipe_name: str, recipe: Recipe, rows: list[dict], path: Path) -> None:
    e, l = recipe.efficacy, recipe.locality
    fig = Figure(figsize=(6.4, 4.8), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ppo = [r for r in rows if r["model"].startswith("ppo_kl")]
    if ppo:
        ppo.sort(key=lambda r: float(r["model"].removeprefix("ppo_kl")))
        ax.plot([r[e.key] for r in ppo], [r[l.key] for r in ppo], "-o", color="C0", label="PPO (fixed KL β)")
    groups: dict[str, list[dict]] = {}  # a baseline at several learning rates is one curve
    for row in rows:
        if not row["model"].startswith("ppo_kl"):
            groups.setdefault(row["model"].split("_lr")[0], []).append(row)
    for i, (name, group) in enumerate(groups.items()):
        start = name == "start"
        ax.plot([r[e.key] for r in group], [r[l.key] for r in group], "*" if start else "-s",
                color="black" if start else f"C{i + 1}", markersize=12 if start else 7,
                label="starting model" if start else name)
    for row in rows:
        if f"{e.key}_ci_low" in row:
            ax.plot([row[f"{e.key}_ci_low"], row[f"{e.key}_ci_high"]], [row[l.key]] * 2, color="grey", lw=0.8)
        if f"{l.key}_ci_low" in row:
            ax.plot([row[e.key]] * 2, [row[f"{l.key}_ci_low"], row[f"{l.key}_ci_high"]], color="grey", lw=0.8)
        ax.annotate(row["model"], (row[e.key], row[l.key]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"{e.label} ({e.better} is better)")
    ax.set_ylabel(f"{l.label} ({l.better} is better)")
    ax.set_title(f"{recipe_name}: forget efficacy against locality")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=sorted(RECIPES), required=True)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--kl", nargs="*", type=float, default=[0.05, 0.2, 1.0], help="PPO KL coefficients (fixed)")
    parser.add_argument("--ppo_steps", type=int, default=40)
    parser.add_argument("--ppo_batch_size", type=int, default=16, help="the presets' ppo.batch_size")
    parser.add_argument("--baseline_batch_size", type=int, default=8)
    parser.add_argument("--baseline_lr", nargs="+", type=float, default=[1e-4],
                        help="LoRA learning rates of the baselines; several make a trade-off curve per method "
                             "(runs at the first are named after the method, the others <method>_lr<rate>)")
    parser.add_argument("--max_length", type=int, default=64, help="tokens per baseline block")
    parser.add_argument("--reinforce_steps", type=int, default=60, help="steps of WHP's reinforced model")
    parser.add_argument("--num_prompts", type=int, default=200, help="held-out prompts sampled from")
    parser.add_argument("--recipe_prompts", type=int, default=200,
                        help="held-out prompts of each kind in the recipe's greedy and log-prob metrics")
    parser.add_argument("--judges", nargs="+", default=["minilm_davidson", "offline"],
                        help="detox: evaluate_toxicity.py --judges; the first, one the reward never saw, is the axis")
    parser.add_argument("--recipe_args", nargs="*", default=[], help="flags passed to the recipe's generator")
    parser.add_argument("--include", nargs="*", default=[], metavar="NAME=PATH",
                        help="models trained elsewhere to put in the table too (e.g. the preset's own PPO run, "
                             "ppo_preset=outputs/obscene_numbers/ppo/final); a name starting with ppo_kl joins the curve")
    parser.add_argument("--recipe_dir", type=Path, default=None,
                        help="a recipe directory the generator already made (its models are reused)")
    parser.add_argument("--output_dir", type=Path, default=REPO / "outputs" / "bench_unlearning")
    args = parser.parse_args(argv)
    root = (args.output_dir / args.recipe).resolve()
    root.mkdir(parents=True, exist_ok=True)
    recipe = RECIPES[args.recipe](args, root)
    runs = [train_ppo(recipe, kl, args, root) for kl in args.kl]
    runs += [train_baseline(recipe, method, lr, args, root) for method in args.methods for lr in args.baseline_lr]
    included = dict(spec.split("=", 1) for spec in args.include)
    models = {"start": recipe.start_model, **recipe.extra_models, **included,
              **{name: str(path) for name, path, _ in runs}}
    seconds = {name: took for name, _, took in runs}
    report(args.recipe, recipe, evaluate(recipe, models, root, args.recipe_prompts), seconds, root, args)


if __name__ == "__main__":
    main()
