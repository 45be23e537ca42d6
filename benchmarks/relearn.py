r"""The relearning attack on unlearned models: a few fine-tuning steps, and how much of what was forgotten comes back.

    python -m benchmarks.relearn --models npo=PATH ppo=PATH ... --reference target=PATH [--retain_model retain=PATH] \
        --forget forget.jsonl [--retain retain.jsonl] [--attack_fraction 0.5] [--attack_on forget|retain|both] \
        [--steps 0 5 10 20 40] [--learning_rate 1e-4] [--batch_size 4] [--lora_r 16] [--seeds 0] \
        [--split_seed 0] [--max_new_tokens 48] [--eval_batch_size 16] [--output_dir outputs/relearn]

The relearning attack of Hu et al. 2024 (arXiv:2406.13356, on TOFU among others), Deeb & Roger 2024
(arXiv:2410.08827: fine-tune on some forgotten facts, measure the others) and Łucki et al. 2024 (arXiv:2409.18025):
an unlearned model that only hides its knowledge gives it back after a few steps of fine-tuning, even on other facts
than those measured. Each PATH is a model directory, a Hub id or a LoRA adapter directory (merged into its base
first, as evaluate_toxicity.py loads it). Example files are JSON lines of {"text": prompt, "completion": answer}
(the TOFU recipe's forget.jsonl and retain.jsonl, a recipe's held-out files).

The forget records are split once (`--split_seed`) into an attack part (`--attack_fraction`) and an evaluation part.
Attack `forget` fine-tunes on the attack part; attack `retain` on as many retain records (facts never forgotten), the
control for what any fine-tuning brings back. Each model, attack and seed gets a fresh LoRA (rank `--lora_r`, the
seed draws its initialisation and the batches), trained by AdamW at a fixed rate on the answer tokens only; at each
K of `--steps` (cumulative steps of that one run) it is measured on the evaluation part: the mean answer probability
(TOFU's length-normalised exp(-mean NLL per answer token)), the mean ROUGE-L recall of the greedy answer, and the
answer probability of the attack records themselves (did the fine-tuning take). The reference (the model before
unlearning) and the retain model (never saw the forget set) are measured once, untouched.

Printed, per attack and metric: each model's value at each K (mean over seeds; 95% interval: t over seeds, or with one
seed a bootstrap over evaluation records) and the share of the unlearning gap that came back,
(value_K - value_0) / (value_reference - value_0) (n/a when the model never left the reference). Writes relearn.json
(every value, per seed too), relearn.md (the tables) and relearn.png (answer probability against K, one line per
model, the reference dashed and the retain model dotted; one panel per attack) into `--output_dir`.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from peft import LoraConfig, get_peft_model

from benchmarks.harness import mean_interval, over_seeds, seed_interval
from detox.blocks import pad_blocks, seeded_batch
from detox.hub import resolve_model_path
from detox.losses import nll, shift_for_next_token
from detox.models import load_causal_lm, load_tokenizer
from detox.scoring import greedy_completions, token_nll
from detox.tofu_metrics import normalized_probability, rouge_l_recall

FIELDS = ("text", "completion")
"""Fields of every example record: the prompt, and the answer scored and trained on."""
METRICS = {"probability": "answer probability", "rouge": "ROUGE-L recall of the greedy answer"}
"""Measured on the evaluation part at each K; `attack_probability` (on the attack records) rides along."""
GAP_EPSILON = 1e-6
"""A reference - unlearned difference below this is no gap: its share is undefined."""


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """(text, completion) of each record of a JSON-lines file; a line without both (strings, a non-empty
    completion) is an error naming the file, the line and the fields expected."""
    pairs = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not JSON ({error.msg}); each line must be one JSON object "
                             f"with fields {', '.join(FIELDS)}.") from None
        bad = [f for f in FIELDS if not isinstance(row, dict) or not isinstance(row.get(f), str)]
        if isinstance(row, dict) and not bad and not row["completion"].strip():
            bad = ["completion (empty)"]
        if bad:
            raise ValueError(f"{path}, line {number}: missing or not text: {', '.join(bad)}; each record needs "
                             f"{', '.join(FIELDS)} (the prompt and its answer).")
        pairs.append((row["text"], row["completion"]))
    return pairs


def split_attack(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of the attack part (round(n * fraction), at least 1 and at most n - 1) and of the evaluation part (the
    rest), disjoint, each in ascending order; the seed alone decides which records go where."""
    if n < 2:
        raise ValueError(f"the forget set holds {n} record(s); the attack needs at least 2 (one to fine-tune on, "
                         f"one to measure).")
    if not 0 < fraction < 1:
        raise ValueError(f"--attack_fraction ({fraction}) must lie strictly between 0 and 1.")
    size = min(max(round(n * fraction), 1), n - 1)
    order = random.Random(seed).sample(range(n), n)
    return sorted(order[:size]), sorted(order[size:])


def gap_share(value: float, start: float, reference: float) -> float | None:
    """(value - start) / (reference - start): the share of the unlearning gap (reference -> unlearned model at K=0)
    that the attack closed; 0 nothing came back, 1 all of it. None when the gap is under GAP_EPSILON."""
    gap = reference - start
    return None if abs(gap) < GAP_EPSILON else (value - start) / gap + 0.0  # + 0.0: no -0.0 on a negative gap


def answer_probabilities(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int, desc: str) -> np.ndarray:
    """(N,) each answer's length-normalised probability after its prompt: exp(-mean NLL per answer token)."""
    per_token = token_nll(model, tokenizer, [t for t, _ in pairs], [c for _, c in pairs], batch_size, desc)
    empty = [i for i, t in enumerate(per_token) if not np.isfinite(t).any()]
    if empty:
        raise ValueError(f"{desc}: record {empty[0] + 1} ({pairs[empty[0]][1]!r}) has no answer token to score (an "
                         f"empty prompt leaves a one-token answer nothing to condition on).")
    return normalized_probability(np.array([np.nanmean(t) for t in per_token]))


def measure(model, tokenizer, eval_pairs, attack_pairs, batch_size: int, max_new_tokens: int) -> dict[str, np.ndarray]:
    """Per record: answer probability and greedy ROUGE-L recall on `eval_pairs`, and answer probability on
    `attack_pairs` (none given: not measured)."""
    greedy = greedy_completions(model, tokenizer, [t for t, _ in eval_pairs], max_new_tokens, batch_size)
    out = {"probability": answer_probabilities(model, tokenizer, eval_pairs, batch_size, "answers"),
           "rouge": np.array([rouge_l_recall(g, c) for g, (_, c) in zip(greedy, eval_pairs)])}
    if attack_pairs:
        out["attack_probability"] = answer_probabilities(model, tokenizer, attack_pairs, batch_size, "attack answers")
    return out


def summary(per_record: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean of each measurement with its 95% bootstrap interval over records (`<key>_low`, `<key>_high`)."""
    out = {}
    for key, values in per_record.items():
        out[key], out[f"{key}_low"], out[f"{key}_high"] = mean_interval(np.asarray(values))
    return out


def attack_run(lm, tokenizer, train_pairs, eval_pairs, attack_pairs, args, seed: int) -> dict[str, list]:
    """A fresh LoRA on `lm` fine-tuned on `train_pairs` (loss on the completion tokens only), measured (`measure`)
    after the steps of each K in args.steps; returns each summary value as a list over K, and `train_loss` (the mean
    loss of the steps since the previous K; None at K=0). `lm` keeps the adapter: load a fresh one per run."""
    torch.manual_seed(seed)  # the adapters' initialisation
    model = get_peft_model(lm, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
                                          target_modules="all-linear", task_type="CAUSAL_LM"))
    model.eval()  # no dropout: the steps are the only change between two measurements
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate)
    prompts = tokenizer([t for t, _ in train_pairs], add_special_tokens=False)["input_ids"]
    answers = tokenizer([c for _, c in train_pairs], add_special_tokens=False)["input_ids"]
    # prompt and answer tokenised apart and joined, as detox.scoring scores them; no EOS after the answer: the attack
    # teaches what is measured (ROUGE-L recall does not mind a greedy answer that runs on)
    blocks, starts = [p + a for p, a in zip(prompts, answers)], [len(p) for p in prompts]
    batch = min(args.batch_size, len(blocks))  # a batch never holds one record twice
    device, done, losses, out = next(model.parameters()).device, 0, [], {}
    for k in args.steps:
        for step in range(done, k):
            rows = seeded_batch(len(blocks), batch, step, 0, 1, seed)
            ids, mask, labels = pad_blocks([blocks[i] for i in rows], tokenizer.pad_token_id, device,
                                           [starts[i] for i in rows])
            loss = nll(*shift_for_next_token(model(input_ids=ids, attention_mask=mask).logits, labels))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        values = summary(measure(model, tokenizer, eval_pairs, attack_pairs, args.eval_batch_size,
                                 args.max_new_tokens))
        values["train_loss"] = float(np.mean(losses[done:])) if k > done else None
        done = k
        for key, value in values.items():
            out.setdefault(key, []).append(value)
        print(f"  K={k}: " + ", ".join(f"{key} {values[key]:.4f}" for key in (*METRICS, "attack_probability"))
              + (f", train loss {values['train_loss']:.4f}" if k else ""), flush=True)
    return out


def over_seed_values(per_seed: dict[int, dict[str, list]], keys) -> dict[str, list]:
    """Per key, lists over K of the mean over seeds and its 95% interval (`_low`, `_high`): a t-interval with several
    seeds, the one run's bootstrap interval with one (harness.seed_interval)."""
    out: dict[str, list] = {}
    runs = list(per_seed.values())
    for key in keys:
        cells = [seed_interval([r[key][i] for r in runs], [r[f"{key}_low"][i] for r in runs],
                               [r[f"{key}_high"][i] for r in runs]) for i in range(len(runs[0][key]))]
        out[key], out[f"{key}_low"], out[f"{key}_high"] = (list(column) for column in zip(*cells))
    return out


def shares(mean: dict[str, list], reference: dict[str, float]) -> dict[str, list]:
    """Per metric, the gap share at each K from the means over seeds (None where undefined)."""
    return {key: [gap_share(v, mean[key][0], reference[key]) for v in mean[key]] for key in METRICS}


def load(path: str, device: str, what: str):
    print(f"loading {what} {path}", flush=True)
    return load_causal_lm(path, "float32", device=device, what=what), load_tokenizer(path, what=what)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, metavar="NAME=PATH", help="unlearned models to attack")
    parser.add_argument("--reference", required=True, metavar="NAME=PATH", help="the model before unlearning")
    parser.add_argument("--retain_model", default=None, metavar="NAME=PATH", help="a model that never saw the forget "
                        "set (TOFU's retain model), drawn beside the reference")
    parser.add_argument("--forget", required=True, help="JSON lines of {text, completion}: the forgotten answers")
    parser.add_argument("--retain", default=None, help="JSON lines of {text, completion} never forgotten: the "
                        "retain attack's fine-tuning data")
    parser.add_argument("--attack_fraction", type=float, default=0.5, help="share of the forget records to "
                        "fine-tune on; the rest are measured")
    parser.add_argument("--attack_on", choices=("forget", "retain", "both"), default=None,
                        help="which fine-tuning data; default: both with --retain, else forget")
    parser.add_argument("--steps", nargs="+", type=int, default=[0, 5, 10, 20, 40],
                        help="K: cumulative fine-tuning steps at which to measure, from 0, increasing")
    parser.add_argument("--learning_rate", type=float, default=1e-4, help="AdamW's fixed rate for the LoRA")
    parser.add_argument("--batch_size", type=int, default=4, help="records per fine-tuning step")
    parser.add_argument("--eval_batch_size", type=int, default=16, help="records per scoring and generation batch")
    parser.add_argument("--lora_r", type=int, default=16, help="rank of the attack's adapters (alpha = 2r)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="one attack run per seed and model")
    parser.add_argument("--split_seed", type=int, default=0, help="seed of the attack/evaluation split and of the "
                        "retain records drawn")
    parser.add_argument("--max_new_tokens", type=int, default=48, help="greedy answer length for ROUGE-L")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--output_dir", default="outputs/relearn")
    args = parser.parse_args(argv)
    for flag, specs in (("--models", args.models), ("--reference", [args.reference]),
                        ("--retain_model", [args.retain_model] if args.retain_model else [])):
        for spec in specs:
            if "=" not in spec or not all(spec.split("=", 1)):
                parser.error(f"{flag} {spec!r}: write NAME=PATH.")
    names = [s.split("=", 1)[0] for s in [*args.models, args.reference, args.retain_model] if s]
    if len(set(names)) != len(names):
        parser.error(f"model names {names} must be distinct (--models, --reference and --retain_model together).")
    if args.steps[0] != 0 or any(b <= a for a, b in zip(args.steps, args.steps[1:])):
        parser.error(f"--steps {args.steps}: must start at 0 (the unlearned model, which the gap share starts from) "
                     f"and increase strictly.")
    if not 0 < args.attack_fraction < 1:
        parser.error(f"--attack_fraction ({args.attack_fraction}) must lie strictly between 0 and 1.")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds {args.seeds}: each seed once.")
    for name in ("batch_size", "eval_batch_size", "lora_r", "max_new_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} ({getattr(args, name)}) must be a positive integer.")
    args.attack_on = args.attack_on or ("both" if args.retain else "forget")
    if args.attack_on != "forget" and not args.retain:
        parser.error(f"--attack_on {args.attack_on} fine-tunes on retain records: give them with --retain FILE.")
    return args


def attack_sets(args: argparse.Namespace) -> tuple[dict[str, list], list, list]:
    """The fine-tuning data of each attack kind, the evaluation part and the attack part of the forget records."""
    forget = read_pairs(args.forget)
    attack_rows, eval_rows = split_attack(len(forget), args.attack_fraction, args.split_seed)
    attack, evaluation = [forget[i] for i in attack_rows], [forget[i] for i in eval_rows]
    sets = {}
    if args.attack_on in ("forget", "both"):
        sets["forget"] = attack
    if args.attack_on in ("retain", "both"):
        retain = read_pairs(args.retain)
        if len(retain) < len(attack):
            raise ValueError(f"{args.retain}: {len(retain)} record(s); the retain attack fine-tunes on as many as the "
                             f"forget attack part ({len(attack)}).")
        sets["retain"] = [retain[i] for i in sorted(random.Random(args.split_seed).sample(range(len(retain)),
                                                                                         len(attack)))]
    return sets, evaluation, attack


def run(args: argparse.Namespace, sets: dict[str, list], evaluation: list, attack: list) -> dict:
    """Measure the reference and retain model, then attack every model with every set of `sets` (attack_sets)."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    models = dict(spec.split("=", 1) for spec in args.models)
    fixed = dict(spec.split("=", 1) for spec in (args.reference, args.retain_model) if spec)
    for name, path in {**models, **fixed}.items():
        if not Path(path).is_dir():
            resolve_model_path(path, name)  # a Hub id offline fails now, not after hours of attacks
    result = {"forget": args.forget, "retain": args.retain, "attack_records": len(attack),
              "eval_records": len(evaluation), "steps": args.steps, "seeds": args.seeds,
              "settings": {k: getattr(args, k) for k in ("attack_fraction", "split_seed", "learning_rate",
                                                         "batch_size", "eval_batch_size", "lora_r",
                                                         "max_new_tokens")},
              "models": models, "fixed": {}, "attacks": {}}
    for role, (name, path) in zip(("reference", "retain_model"), fixed.items()):
        lm, tokenizer = load(path, device, name)
        result["fixed"][name] = {"role": role, "path": path,
                                 **summary(measure(lm, tokenizer, evaluation, attack, args.eval_batch_size,
                                                   args.max_new_tokens))}
        del lm
    reference = result["fixed"][args.reference.split("=", 1)[0]]
    for kind, train in sets.items():
        result["attacks"][kind] = {}
        for name, path in models.items():
            def one_seed(seed: int, path: str = path, name: str = name) -> dict[str, list]:
                print(f"attack {kind}, model {name}, seed {seed}", flush=True)
                return attack_run(*load(path, device, name), train, evaluation, attack, args, seed)

            per_seed = over_seeds(one_seed, args.seeds)
            mean = over_seed_values(per_seed, (*METRICS, "attack_probability"))
            result["attacks"][kind][name] = {"path": path, "mean": mean, "gap_share": shares(mean, reference),
                                             "per_seed": {str(s): v for s, v in per_seed.items()}}
    return result


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def markdown(result: dict) -> str:
    """Per attack kind and metric, a table: a row per model, a column per K."""
    seeds = result["seeds"]
    spread = "95% t-interval over seeds" if len(seeds) > 1 else "95% bootstrap interval over evaluation records"
    lines = [f"{result['attack_records']} forget records fine-tuned on (or as many retain records), "
             f"{result['eval_records']} measured; seeds {seeds}. Attacked models: mean [{spread}] (share of the "
             f"unlearning gap that came back); reference and retain model: mean [95% bootstrap interval over "
             f"evaluation records]."]
    head = "| model | " + " | ".join(f"K={k}" for k in result["steps"]) + " |"
    rule = "|---" * (len(result["steps"]) + 1) + "|"
    for kind, rows in result["attacks"].items():
        for key, label in METRICS.items():
            lines += ["", f"### Attack on {kind} records: {label} on the evaluation part", "", head, rule]
            for name, row in rows.items():
                m = row["mean"]
                cells = [f"{v:.3f} [{lo:.3f}, {hi:.3f}] ({_share(g)})" for v, lo, hi, g in
                         zip(m[key], m[f"{key}_low"], m[f"{key}_high"], row["gap_share"][key])]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            for name, row in result["fixed"].items():
                cell = f"{row[key]:.3f} [{row[f'{key}_low']:.3f}, {row[f'{key}_high']:.3f}]"
                role = row["role"].replace("_", " ")
                lines.append(f"| {name} ({role}) | {cell} |" + " |" * (len(result["steps"]) - 1))
        took = [f"{name} {p[0]:.3f} -> {p[-1]:.3f}" for name, p in
                ((name, row["mean"]["attack_probability"]) for name, row in rows.items())]
        lines += ["", f"Answer probability of the {result['attack_records']} attack records themselves, K=0 -> "
                  f"K={result['steps'][-1]} (did the fine-tuning take): " + "; ".join(took)]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Answer probability on the evaluation part against K, a panel per attack kind; the band is each model's 95%
    interval, the reference dashed, the retain model dotted."""
    kinds = list(result["attacks"])
    fig = Figure(figsize=(5.5 * len(kinds), 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    for i, kind in enumerate(kinds):
        ax = fig.add_subplot(1, len(kinds), i + 1)
        for j, (name, row) in enumerate(result["attacks"][kind].items()):
            m = row["mean"]
            ax.plot(result["steps"], m["probability"], "-o", color=f"C{j}", label=name)
            ax.fill_between(result["steps"], m["probability_low"], m["probability_high"], color=f"C{j}", alpha=0.15)
        for name, row in result["fixed"].items():
            reference = row["role"] == "reference"
            ax.axhline(row["probability"], linestyle="--" if reference else ":", color="black" if reference else "grey",
                       label=f"{name} ({row['role'].replace('_', ' ')})")
        ax.set_xticks(result["steps"])
        ax.set_xlabel("fine-tuning steps K")
        ax.set_ylabel("answer probability, held-out forget records")
        ax.set_title(f"relearning: attack on {kind} records")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        inputs = attack_sets(args)
    except (ValueError, FileNotFoundError) as err:  # bad input files: one line naming the file, not a traceback
        raise SystemExit(f"relearn: {err}") from None
    result = run(args, *inputs)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "relearn.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    text = markdown(result)
    (out / "relearn.md").write_text(text, encoding="utf-8")
    plot(result, out / "relearn.png")
    print(text)
    return result


if __name__ == "__main__":
    main()
