"""Wall-clock to a detoxified model: every trainer a user could pick, on the same model, prompts, reward and budget.

    HF_HUB_OFFLINE=1 python -m benchmarks.detox_per_minute \
        --trainers ours_ppo trl_grpo trl_rloo trl011_ppo gd --budget_minutes 8 --seeds 0 [1 2] --threads 2

Trainers, run one after another (never side by side), each in a fresh process with `--threads` torch CPU threads:
- `ours_ppo`: train_ppo.py's PPO loop;
- `trl_grpo`, `trl_rloo`: TRL's current GRPOTrainer and RLOOTrainer through train_grpo.py (`--num_generations`
  completions per prompt);
- `trl011_ppo`: TRL 0.11.4's classic PPOTrainer in its own virtual environment (benchmarks/trl011_worker.py), LoRA
  with the reference being the base with the adapter off, as TRL does for peft models;
- `gd`: not a reinforcement learner but the loss-based route a user could take instead: train_unlearn.py's gradient
  difference (`--gd_config`, configs/detox_gradient_difference.yaml) on the labelled RealToxicityPrompts
  continuations of the same training prompts. It reads no reward and samples nothing; everything else below holds.
The reinforcement learners read the same run config (`--config`, configs/offline_profanity.yaml unless told
otherwise; TRL 0.11.4's worker takes its alt-profanity-check reward or the offline default's MiniLM classifier
reward, configs/offline_default.yaml): SmolLM2-135M-Instruct with the same LoRA, the same training
prompts, the same reward (there, capped alt-profanity-check), the same generation lengths,
learning rate, batch of 16 completions, mini-batch and epochs, and the same initial KL coefficient. The clock runs
from the first training step (model loading is reported apart) and stops while a model is written; a model is saved
at each quarter of the budget (benchmarks/budget_clock.py).

Every saved model, and the base, is then evaluated by evaluate_toxicity.py on the same held-out prompts (those no
run trained on), the same decoding and the same sampling seed, scored by the reward's own scorer (`offline`), by a
judge no trainer saw (`minilm_davidson`: MiniLM + logistic regression fitted on Davidson rows no reward uses) and by
the base model's perplexity of the completions.

Resumable: a finished (trainer, seed) run leaves done.json and is not trained again; an unfinished one starts again
from scratch (its clock would be meaningless otherwise); every evaluated model is cached under output_dir/eval/cache.
Outputs in output_dir: table.md, summary.json, detox_per_minute.png. summary.json keeps every model's scores and the
settings they were measured with, so seeds run at different times (their models long gone) combine into one table,
mean and t-interval over seeds: `--summaries seed0/summary.json seed1/summary.json` trains and evaluates nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import time
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmarks.harness import REPO, module, over_seeds, run, seed_interval
from benchmarks.trl011_env import ensure_venv, trl_model_dir, worker_command
from detox.baselines.config import UnlearnConfig
from detox.config import DataConfig, TrainConfig, parse_config
from detox.data import CONTINUATION_SETS, load_prompts, step_prompts
from detox.hub import resolve_model_path
from detox.jobs import evaluate_toxicity
from detox.models import load_tokenizer
from detox.state import name_base_by_hub_id
from rewards import build_reward

TRAINERS = ("ours_ppo", "trl_grpo", "trl_rloo", "trl011_ppo", "gd")
LABELS = {"ours_ppo": "ours (PPO)", "trl_grpo": "TRL GRPO", "trl_rloo": "TRL RLOO", "trl011_ppo": "TRL 0.11.4 PPO",
          "gd": "gradient difference (loss-based)"}
PARTS = 4


def train_config(path: str):
    return parse_config(["--config", path], TrainConfig)


def check_gd_split(cfg, gd_config: str) -> None:
    """The gd trainer's builtin continuation sets take the continuations of the *offline default's* training prompts;
    they are held out of the evaluation only when `--config` splits the same prompts the same way."""
    gd = parse_config(["--config", gd_config], UnlearnConfig)
    corpora = [c for c in (gd.data.forget, gd.data.retain) if c]
    if any(c not in CONTINUATION_SETS for c in corpora):
        raise ValueError(f"--gd_config {gd_config}: the gd trainer reads builtin continuation sets "
                         f"({sorted(CONTINUATION_SETS)}), whose prompts are held out of the evaluation; it has "
                         f"{corpora}.")
    if cfg.data != DataConfig():
        raise ValueError("--trainers gd: the builtin continuation sets come from the offline default's training "
                         "prompts, and --config splits its prompts otherwise (data section "
                         f"{cfg.data}); use a config with the default data section, or leave out gd.")


def parse_trainer_flags(parser, items: list[str]) -> dict[str, list[str]]:
    """`TRAINER=FLAGS` items into {trainer: [flag, ...]}; TRL 0.11.4's worker takes no run-config flags."""
    flags = {}
    for item in items:
        trainer, sep, text = item.partition("=")
        if not sep or trainer not in TRAINERS or trainer == "trl011_ppo":
            parser.error(f"--trainer_flags {item!r}: expected TRAINER='--section.field value ...' with TRAINER one of "
                         f"{[t for t in TRAINERS if t != 'trl011_ppo']}")
        flags[trainer] = shlex.split(text)
    return flags


def run_trainer(args, trainer: str, seed: int) -> dict:
    """Train one (trainer, seed) for the budget unless done.json says it already was; return done.json's record."""
    run_dir = args.output_dir / "runs" / f"{trainer}-s{seed}"
    done = run_dir / "done.json"
    flags = args.trainer_flags.get(trainer, [])
    if done.is_file():
        record = json.loads(done.read_text())
        if (record["budget_minutes"], record["threads"], record.get("flags", [])) == (
                args.budget_minutes, args.threads, flags):
            print(f"{trainer} seed {seed}: trained before, reusing {run_dir}", flush=True)
            return record
        print(f"{trainer} seed {seed}: {done} was made with another budget, thread count or flags; training again")
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    env = {"OMP_NUM_THREADS": str(args.threads)}
    if trainer == "trl011_ppo":
        command = trl011_command(args, seed, run_dir)
        env["PYTHONPATH"] = None  # TRL 0.11.4's environment must not see this one's packages
    else:
        command = module("benchmarks.timed_train", "--trainer", trainer, "--budget_minutes", args.budget_minutes,
                         "--seed", seed, "--threads", args.threads, "--run_dir", run_dir, "--config", args.config,
                         "--num_generations", args.num_generations, "--gd_config", args.gd_config, "--", *flags)
    started = time.perf_counter()
    run(command, log=run_dir / "log.txt", env=env)
    checkpoints = [json.loads(line) for line in (run_dir / "checkpoints.jsonl").read_text().splitlines()]
    if trainer == "trl011_ppo":
        adapt_trl011_checkpoints([Path(point["path"]) for point in checkpoints], args.cfg.model.name_or_path)
    wall = time.perf_counter() - started
    record = {"trainer": trainer, "seed": seed, "budget_minutes": args.budget_minutes, "threads": args.threads,
              "wall_seconds": wall, "setup_seconds": wall - checkpoints[-1]["minutes"] * 60
              - sum(p["save_seconds"] for p in checkpoints), "checkpoints": checkpoints, "command": command,
              "flags": flags}
    done.write_text(json.dumps(record, indent=1))
    return record


def trl011_command(args, seed: int, run_dir: Path) -> list[str]:
    """TRL 0.11.4's worker with the run config's settings, and the prompt batches our loop would draw for `seed`."""
    cfg = args.cfg
    reward_flags = trl011_reward_flags(args)
    cap = cfg.rewards[0].clip
    cap = cap[1] if isinstance(cap, list) else cap
    python = ensure_venv()
    model_dir = trl_model_dir(Path(resolve_model_path(cfg.model.name_or_path)), args.output_dir / "model_trl011")
    prompts = load_prompts(cfg.data, load_tokenizer(cfg.model.name_or_path)).train
    most_steps = int(args.budget_minutes * 60) + 10  # more than any CPU step rate needs
    batches = [step_prompts(prompts, step, cfg.ppo.batch_size, seed) for step in range(most_steps)]
    (run_dir / "prompts.json").write_text(json.dumps(batches))
    ppo, gen = cfg.ppo, cfg.generation
    flags = {"model_dir": model_dir, "prompts": run_dir / "prompts.json", "out": run_dir / "steps.jsonl",
             **reward_flags, "batch_size": ppo.batch_size,
             "mini_batch_size": ppo.mini_batch_size, "ppo_epochs": ppo.ppo_epochs, "seed": seed,
             "threads": args.threads, "min_new_tokens": gen.min_new_tokens, "max_new_tokens": gen.max_new_tokens,
             "learning_rate": ppo.learning_rate, "max_grad_norm": ppo.max_grad_norm, "init_kl_coef": ppo.init_kl_coef,
             "target_kl": ppo.target_kl, "lora_r": cfg.lora.r, "lora_alpha": cfg.lora.alpha,
             "budget_minutes": args.budget_minutes, "save_dir": run_dir}
    if cap is not None:
        flags["reward_cap"] = cap
    return worker_command(python, flags)


def trl011_reward_flags(args) -> dict:
    """The worker's flags for the run config's reward: one alt-profanity-check logit, or one MiniLM classifier's
    log-odds (the offline default's), weight 1, on the completion alone, with an all-linear LoRA adapter."""
    cfg = args.cfg
    rewards = [(r.type, r.options.get("output"), r.weight, r.options.get("score_prompt", False)) for r in cfg.rewards]
    known = [("offline_toxicity", "logit", 1.0, False)], [("minilm_toxicity", "log_odds", 1.0, False)]
    if rewards not in known or not cfg.lora.enabled or cfg.lora.target_modules != "all-linear":
        raise ValueError(f"{args.config}: trl011_ppo reproduces one offline_toxicity reward (output: logit) or one "
                         "minilm_toxicity reward (output: log_odds), weight 1, completion alone, with an all-linear "
                         f"LoRA adapter; this config has rewards {rewards} and lora {cfg.lora}.")
    flags = {"reward_file": REPO / "rewards" / "toxicity.py"}
    if rewards == known[1]:
        scorer = build_reward(cfg.rewards[0])
        flags.update(classifier_dir=scorer.model_path, nontoxic_index=scorer.nontoxic_index,
                     toxic_index=scorer.toxic_index)
    return flags


def adapt_trl011_checkpoints(adapter_dirs: list[Path], name: str) -> None:
    """Name each adapter's base by Hub id (it names the 4.46 view of the model) and add this environment's tokenizer."""
    tokenizer = load_tokenizer(name)
    for adapter_dir in adapter_dirs:
        name_base_by_hub_id(adapter_dir, name)
        tokenizer.save_pretrained(adapter_dir)


def evaluate(args, records: list[dict]) -> dict[str, dict]:
    """evaluate_toxicity.py on the base and every checkpoint (cached per model); rows by model name."""
    base = args.cfg.model.name_or_path
    models = [f"base={base}"] + [f"{r['trainer']}-s{r['seed']}-p{p['part']}={p['path']}"
                                 for r in records for p in r["checkpoints"]]
    evaluate_toxicity.main([
        "--models", *models, "--run_config", args.config, "--prompt_split", "heldout",
        "--judges", args.reward_judge, args.independent_judge, *args.extra_judges,
        "--num_prompts", str(args.num_prompts),
        "--samples_per_prompt", str(args.samples_per_prompt), "--batch_size", str(args.batch_size),
        "--seed", "0", "--output_dir", str(args.output_dir / "eval"),
    ])
    rows = json.loads((args.output_dir / "eval" / "results.json").read_text())["rows"]
    return {row["model"]: row for row in rows}


SETTINGS = ("budget_minutes", "threads", "config", "num_generations", "num_prompts", "samples_per_prompt",
            "reward_judge", "independent_judge", "trainer_flags")
"""What a summary's scores depend on: summaries combine only when they agree on all of it."""


def settings(args) -> dict:
    return {key: str(args.config) if key == "config" else getattr(args, key) for key in SETTINGS}


def load_summaries(args, paths: list[Path]) -> tuple[list[dict], dict[str, dict]]:
    """The runs and the scored rows of earlier summary.json files, checked to be one experiment: the same settings
    (this run's flags), and each (trainer, seed) once. The base model's row is the first file's (every file scores
    the same base on the same prompts with the same sampling seed)."""
    records: list[dict] = []
    rows: dict[str, dict] = {}
    wanted = json.loads(json.dumps(settings(args)))  # as a summary stores it (tuples become lists)
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"--summaries: no such file '{path}'.")
        saved = json.loads(path.read_text())
        if "settings" not in saved or "rows" not in saved:
            raise ValueError(f"--summaries: {path} keeps no scores (written before summaries did); run its seed "
                             f"again.")
        differ = {k: (saved["settings"].get(k), v) for k, v in wanted.items() if saved["settings"].get(k) != v}
        if differ:
            raise ValueError(f"--summaries: {path} was measured with other settings than these flags "
                             f"(setting: (its, these)): {differ}")
        for record in saved["runs"]:
            if any((r["trainer"], r["seed"]) == (record["trainer"], record["seed"]) for r in records):
                raise ValueError(f"--summaries: {record['trainer']} seed {record['seed']} is in more than one file.")
            records.append(record)
        rows = saved["rows"] | rows
    seeds = sorted({r["seed"] for r in records})
    missing = [(t, s) for t in args.trainers for s in seeds
               if not any((r["trainer"], r["seed"]) == (t, s) for r in records)]
    if missing:
        raise ValueError(f"--summaries: no run of {missing}; every trainer needs every seed.")
    return records, rows


def curves(args, records: list[dict], rows: dict[str, dict]) -> dict[str, list[dict]]:
    """Per trainer, one point per part (and the base at minute 0): seed means of time, toxicity and perplexity."""
    base = rows["base"]
    out = {}
    for trainer in args.trainers:
        runs = [r for r in records if r["trainer"] == trainer]
        points = [point(args, base, [base] * len(runs), [0.0] * len(runs), [0] * len(runs), 0)]
        for part in range(1, PARTS + 1):
            held = [next(p for p in r["checkpoints"] if p["part"] == part) for r in runs]
            chosen = [rows[f"{trainer}-s{r['seed']}-p{part}"] for r in runs]
            points.append(point(args, base, chosen, [p["minutes"] for p in held], [p["completions"] for p in held],
                                part))
        out[trainer] = points
    return out


def point(args, base: dict, chosen: list[dict], minutes: list[float], completions: list[int], part: int) -> dict:
    out = {"part": part, "minutes": statistics.fmean(minutes), "completions": statistics.fmean(completions)}
    for key, judge in (("independent", args.independent_judge), ("reward", args.reward_judge)):
        values = [r[f"{judge}/mean_toxicity"] for r in chosen]
        out[key] = seed_interval(values, [r[f"{judge}/mean_toxicity_ci_low"] for r in chosen],
                            [r[f"{judge}/mean_toxicity_ci_high"] for r in chosen])
        out[f"{key}_range"] = (min(values), max(values))
    ppl = [r["perplexity"] for r in chosen]
    out["perplexity_range"] = (min(ppl), max(ppl))
    out["perplexity"] = statistics.fmean(ppl)
    out["perplexity_change"] = out["perplexity"] / base["perplexity"] - 1
    out["distinct_2"] = statistics.fmean(r["distinct_2"] for r in chosen)
    out["distinct_2_change"] = out["distinct_2"] - base["distinct_2"]
    return out


def fluent(args, p: dict) -> bool:
    """Still fluent: perplexity under the base within the allowed rise, and distinct-2 within the allowed drop (a
    collapsed model repeats itself at a *low* perplexity)."""
    return p["perplexity_change"] <= args.max_perplexity_rise and p["distinct_2_change"] >= -args.max_distinct_drop


def verdict(args, lines: dict[str, list[dict]], key: str = "independent") -> list[str]:
    """Against each other trainer: when does ours first reach the best held-out toxicity that the other reaches within
    the budget (under the `key` judge: `independent`, or `reward` for the reward's own scorer), and is that at most
    `target` times the other's time? Only models still fluent count, on both sides (`fluent`: a trainer that buys
    toxicity with fluency sets no bar)."""
    if "ours_ppo" not in lines:
        return []
    judge = args.independent_judge if key == "independent" else args.reward_judge
    out = []
    ours = lines["ours_ppo"][1:]
    for other in (t for t in lines if t != "ours_ppo"):
        kept = [p for p in lines[other][1:] if fluent(args, p)]
        if not kept:
            out.append(f"{LABELS[other]}: no model within +{args.max_perplexity_rise:.0%} perplexity and "
                       f"-{args.max_distinct_drop} distinct-2: no bar to reach")
            continue
        best = min(kept, key=lambda p: p[key][0])
        level, other_minutes = best[key][0], best["minutes"]
        reached = next((p for p in ours if p[key][0] <= level and fluent(args, p)), None)
        head = (f"{LABELS[other]}: best {level:.4f} under {judge} at {other_minutes:.1f} min, perplexity "
                f"{best['perplexity_change']:+.1%}; ")
        if reached is None:
            out.append(head + f"ours does not reach it within {args.budget_minutes:g} min: target NOT met")
        else:
            ratio = reached["minutes"] / other_minutes
            met = "met" if ratio <= args.target else "NOT met"
            out.append(head + f"ours reaches {reached[key][0]:.4f} at {reached['minutes']:.1f} min "
                       f"(perplexity {reached['perplexity_change']:+.1%}), {ratio:.2f}× its time: target "
                       f"≤ {args.target}× {met}")
    return out


def table(args, lines: dict[str, list[dict]], records: list[dict]) -> str:
    seeds = len(args.seeds)
    band = "95% t-interval over seeds" if seeds > 1 else "95% bootstrap interval over prompts (one seed)"
    reward_note = "the reward's scorer" + ("; independent for gd" if "gd" in args.trainers else "")
    out = [f"| trainer | part | training minutes | completions (gd: labelled records) trained on "
           f"| {args.independent_judge} (independent) [{band}] | {args.reward_judge} ({reward_note}) "
           f"| perplexity (Δ vs base) | distinct-2 (Δ) |",
           "|---|---|---|---|---|---|---|---|"]
    base = next(iter(lines.values()))[0]  # every curve starts at the same base model
    rows = [("base model", base)] + [(LABELS[t], p) for t, points in lines.items() for p in points[1:]]
    for name, p in rows:
        ind, rew = p["independent"], p["reward"]
        out.append(f"| {name} | {p['part']} | {p['minutes']:.2f} | {p['completions']:.0f} "
                   f"| {ind[0]:.4f} [{ind[1]:.4f}, {ind[2]:.4f}] | {rew[0]:.4f} [{rew[1]:.4f}, {rew[2]:.4f}] "
                   f"| {p['perplexity']:.2f} ({p['perplexity_change']:+.1%}) "
                   f"| {p['distinct_2']:.3f} ({p['distinct_2_change']:+.3f}) |")
    out += ["", "| trainer | seed | setup (load, s) | training steps | completions | wall-clock in all (s) |",
            "|---|---|---|---|---|---|"]
    for r in records:
        last = r["checkpoints"][-1]
        out.append(f"| {LABELS[r['trainer']]} | {r['seed']} | {r['setup_seconds']:.0f} | {last['steps']} "
                   f"| {last['completions']} | {r['wall_seconds']:.0f} |")
    return "\n".join(out)


def plot(args, lines: dict[str, list[dict]], path: Path) -> None:
    panels = [("independent", f"mean toxicity, {args.independent_judge} (never a reward)"),
              ("reward", f"mean toxicity, {args.reward_judge} (the RL trainers' reward)"),
              ("perplexity", "perplexity of completions under the base model")]
    # With several seeds the band spans them, lowest to highest: a t-interval over two or three seeds (t = 12.7 or
    # 4.3) is too wide to read; the table keeps it.
    seeded = len(args.seeds) > 1
    fig = Figure(figsize=(15, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for ax, (key, title) in zip(axes, panels):
        for trainer, points in lines.items():
            x = [p["minutes"] for p in points]
            mean = [p[key] if key == "perplexity" else p[key][0] for p in points]
            ax.plot(x, mean, marker="o", label=LABELS[trainer])
            if seeded:
                band = [p[f"{key}_range"] for p in points]
            elif key != "perplexity":
                band = [p[key][1:] for p in points]
            else:
                continue
            ax.fill_between(x, [low for low, _ in band], [high for _, high in band], alpha=0.15)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training minutes (wall-clock)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    seeds = f"{len(args.seeds)} seed{'s' if len(args.seeds) > 1 else ''}"
    fig.suptitle(f"Held-out toxicity against wall-clock, {args.threads} CPU threads per trainer, {seeds}; bands: "
                 + ("lowest to highest seed" if seeded else "95% bootstrap over prompts"), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainers", nargs="+", choices=TRAINERS, default=list(TRAINERS))
    parser.add_argument("--budget_minutes", type=float, default=8.0, help="training wall-clock per trainer and seed")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads of every trainer")
    parser.add_argument("--config", default=str(REPO / "configs" / "offline_profanity.yaml"), help="the run config all "
                        "trainers share")
    parser.add_argument("--num_generations", type=int, default=4, help="GRPO/RLOO completions per prompt")
    parser.add_argument("--gd_config", default=str(REPO / "configs" / "detox_gradient_difference.yaml"),
                        help="gd: the train_unlearn.py config (gradient difference)")
    parser.add_argument("--num_prompts", type=int, default=200, help="held-out prompts evaluated")
    parser.add_argument("--samples_per_prompt", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32, help="of the evaluation")
    parser.add_argument("--reward_judge", default="offline", help="the reward's own scorer, as an evaluation judge")
    parser.add_argument("--independent_judge", default="minilm_davidson", help="a judge no trainer was rewarded by")
    parser.add_argument("--extra_judges", nargs="*", default=[], help="more judges scored in eval/results.md "
                        "(not in the table, the verdict or the picture)")
    parser.add_argument("--target", type=float, default=0.7, help="ours' time over the other's, to be at most")
    parser.add_argument("--max_perplexity_rise", type=float, default=0.10)
    parser.add_argument("--max_distinct_drop", type=float, default=0.02, help="of distinct-2 below the base's")
    parser.add_argument("--trainer_flags", nargs="+", default=[], metavar="TRAINER='FLAGS'",
                        help="a trainer's own hyper-parameters for the budget, as run-config flags (for gd, "
                        "train_unlearn.py's), e.g. ours_ppo='--ppo.learning_rate 3e-4'; recorded in the table")
    parser.add_argument("--summaries", nargs="+", type=Path, default=[], help="summary.json files of earlier runs "
                        "(other seeds) to combine, with the same flags; nothing is trained or evaluated")
    parser.add_argument("--output_dir", type=Path, default=REPO / "outputs" / "detox_per_minute")
    args = parser.parse_args(argv)
    args.trainer_flags = parse_trainer_flags(parser, args.trainer_flags)
    if args.budget_minutes <= 0 or args.threads < 1:
        parser.error("--budget_minutes must be > 0 and --threads >= 1")
    args.output_dir = args.output_dir.resolve()
    args.cfg = train_config(args.config)  # a bad config fails here, before any training
    if "gd" in args.trainers:
        check_gd_split(args.cfg, args.gd_config)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    if args.summaries:
        records, rows = load_summaries(args, args.summaries)
        args.seeds = sorted({r["seed"] for r in records})
        args.output_dir.mkdir(parents=True, exist_ok=True)
    else:
        by_seed = over_seeds(lambda seed: [run_trainer(args, trainer, seed) for trainer in args.trainers], args.seeds)
        records = [record for runs in by_seed.values() for record in runs]
        rows = evaluate(args, records)
    lines = curves(args, records, rows)
    text = table(args, lines, records)
    checks = verdict(args, lines) + ["", "The same question under the reward's own scorer:"] + verdict(args, lines, "reward")
    note = (f"Budget {args.budget_minutes:g} training minutes per trainer and seed, {args.threads} torch threads each, "
            f"seeds {args.seeds}; {args.num_prompts} held-out prompts × {args.samples_per_prompt} samples."
            + "".join(f" {LABELS[t]}: {' '.join(f)}." for t, f in args.trainer_flags.items()))
    (args.output_dir / "table.md").write_text("\n".join([note, "", text, "", *checks]) + "\n")
    used = {"base"} | {f"{r['trainer']}-s{r['seed']}-p{p['part']}" for r in records for p in r["checkpoints"]}
    (args.output_dir / "summary.json").write_text(json.dumps({
        "curves": lines, "verdict": checks, "runs": records, "settings": settings(args),
        "rows": {name: row for name, row in rows.items() if name in used}}, indent=1))
    plot(args, lines, args.output_dir / "detox_per_minute.png")
    print("\n".join(["", note, "", text, "", *checks]))
    print(f"\nwritten: {args.output_dir}/table.md, summary.json, detox_per_minute.png")


if __name__ == "__main__":
    main()
