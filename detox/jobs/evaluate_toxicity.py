"""Compare the toxicity of several models' completions of the same prompts, under several judges: the job behind
`evaluate_toxicity.py`.

    python evaluate_toxicity.py --models base=smollm2-135m-instruct detox=outputs/offline_default/final \
        --judges offline minilm_davidson minilm_davidson_reward --num_prompts 200 --samples_per_prompt 4

Every flag is a field of detox.evaluation.EvalConfig (`--config eval.yaml` works too). Prints the Markdown table (one
column group per judge, the run's own reward marked) and one summary line per model, naming the most independent
judge's figure first. A model directory written by train_ppo.py gets the table in its model card. Writes to
output_dir: results.md/.csv/.json (the table), samples.csv/.jsonl (every completion with its scores),
forget_samples.jsonl (when a forget corpus is set) and toxicity.png (mean toxicity with 95% bootstrap intervals).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

from detox.config import LoggingConfig, parse_config, to_dict
from detox.evaluation import EvalConfig, EvalResult, log, run_evaluation
from detox.judges import judge_labels, summary_lines
from detox.metrics import markdown_table
from detox.model_card import update_evaluation
from detox.recipes.metrics import recipe_metrics
from detox.recipes.report import recipe_markdown
from detox.tracking import accelerate_log_with, redact

SAMPLE_FIELDS = ["model", "prompt_index", "sample_index", "prompt", "completion", "nll", "num_tokens"]


def _plain(value):
    """JSON-safe: NaN/inf become null (a perplexity over zero tokens is NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, list) else value


def table_keys(table: list[dict]) -> list[str]:
    """Every key of the rows, in the order of the fullest row (the base row has no delta keys)."""
    return list(dict.fromkeys(key for row in sorted(table, key=len, reverse=True) for key in row))


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(_plain(r)) + "\n" for r in rows), encoding="utf-8")


def plot_toxicity(table: list[dict], judges: list[str], path: Path) -> None:
    """Bars of each model's mean toxicity under each judge, with 95% bootstrap intervals as error bars."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    fig = Figure(figsize=(2.0 + 1.2 * len(table) * max(1, len(judges) / 2), 3.6))
    ax = fig.subplots()
    width, x = 0.8 / len(judges), np.arange(len(table))
    for i, judge in enumerate(judges):
        means = [r[f"{judge}/mean_toxicity"] for r in table]
        # max(0, .): when every score is (almost) equal, the interval's ends can fall a rounding error inside the mean
        errors = [[max(0.0, m - r[f"{judge}/mean_toxicity_ci_low"]) for m, r in zip(means, table)],
                  [max(0.0, r[f"{judge}/mean_toxicity_ci_high"] - m) for m, r in zip(means, table)]]
        ax.bar(x + (i - (len(judges) - 1) / 2) * width, means, width, yerr=errors, capsize=4, label=judge)
    ax.set_xticks(x, [r["model"] for r in table])
    ax.legend(fontsize=8)
    ax.set_ylabel("mean P(toxic) of completions")
    ax.set_title("Mean toxicity, 95% bootstrap CI over prompts", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def save(result: EvalResult, cfg: EvalConfig, table_md: str, summary: list[str]) -> Path:
    """Write the table, the per-sample files and the chart to cfg.output_dir."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = [s for run in result.runs.values() for s in run.samples]
    judges = [j.name for j in cfg.judge_list()]
    fields = SAMPLE_FIELDS[:5] + [f"toxicity/{j}" for j in judges] + SAMPLE_FIELDS[5:]
    fields += ["phrase_hit"] if cfg.phrases else []
    (out / "results.md").write_text(table_md + "\n\n" + "".join(f"- {line}\n" for line in summary), encoding="utf-8")
    _write_csv(out / "results.csv", result.table, table_keys(result.table))
    record = {"config": redact(to_dict(cfg)), "num_prompts": len(result.prompts), "rows": result.table,
              "judge_relations": result.relations, "summary": summary}
    (out / "results.json").write_text(json.dumps(_plain(record), indent=2) + "\n", encoding="utf-8")
    _write_csv(out / "samples.csv", samples, fields)
    _write_jsonl(out / "samples.jsonl", samples)
    forget_samples = [s for run in result.runs.values() for s in run.forget_samples]
    if forget_samples:
        _write_jsonl(out / "forget_samples.jsonl", forget_samples)
    recipe_samples = [s for run in result.runs.values() for s in run.recipe_samples]
    if recipe_samples:
        _write_jsonl(out / "recipe_samples.jsonl", recipe_samples)
        (out / "recipe.md").write_text(recipe_markdown(result.table) + "\n", encoding="utf-8")
        # each model's recipe metrics alone, under the recipe's own key names (a tofu recipe's are open-unlearning's)
        recipe_values = {name: run.recipe for name, run in result.runs.items() if run.recipe}
        (out / "recipe_metrics.json").write_text(json.dumps(_plain(recipe_values), indent=2) + "\n", encoding="utf-8")
    plot_toxicity(result.table, judges, out / "toxicity.png")
    return out


def log_to_wandb(result: EvalResult, cfg: EvalConfig, out: Path) -> None:
    """The table, the samples and the chart as one W&B run (offline without a key or network)."""
    accelerate_log_with(LoggingConfig(report_to="wandb", project=cfg.project))  # sets WANDB_MODE=offline if needed
    import wandb  # lazy: only runs that report to W&B need it, and importing wandb costs seconds

    run = wandb.init(project=cfg.project, job_type="evaluation", dir=str(out), config=redact(to_dict(cfg)))
    samples, keys = [s for r in result.runs.values() for s in r.samples], table_keys(result.table)
    run.log({
        "eval/results": wandb.Table(columns=keys, data=[[row.get(k) for k in keys] for row in result.table]),
        "eval/samples": wandb.Table(columns=list(samples[0]), data=[list(s.values()) for s in samples]),
        "eval/toxicity": wandb.Image(str(out / "toxicity.png")),
    })
    run.finish()


def main(argv: list[str] | None = None) -> EvalResult:
    cfg = parse_config(argv, EvalConfig, __doc__)
    result = run_evaluation(cfg, recipe_metrics)
    table_md = markdown_table(result.table, judge_labels(result.relations))
    summary = summary_lines(result.table, cfg.judge_list(), result.relations)
    out = save(result, cfg, table_md, summary)
    if cfg.report_to == "wandb":
        log_to_wandb(result, cfg, out)
    print(table_md + "\n\n" + "\n".join(summary), flush=True)
    if any(run.recipe for run in result.runs.values()):
        print("\n" + recipe_markdown(result.table), flush=True)
    command = "python evaluate_toxicity.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for name, path in cfg.model_specs():
        if update_evaluation(Path(path), table_md, summary, command, [f"{len(result.prompts)} prompts ({cfg.prompts},"
                             f" split {cfg.prompt_split}) x {cfg.samples_per_prompt} samples"]):
            log(f"model card {path}/README.md: evaluation section updated")
    log(f"results in {out}/ (results.md, results.csv, results.json, samples.csv, samples.jsonl, toxicity.png)")
    return result
