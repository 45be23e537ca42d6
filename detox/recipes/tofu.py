"""The `tofu` recipe: TOFU (Maini et al. 2024), the field's unlearning benchmark, on any causal language model.

    python -m detox.recipes.tofu --output_dir outputs/tofu                  # CPU tier, forget10 and forget01
    accelerate launch train_ppo.py --config outputs/tofu/forget10/ppo.yaml      # reward-based unlearning
    accelerate launch train_unlearn.py --config outputs/tofu/forget10/unlearn.yaml --method.name npo
    python evaluate_toxicity.py --models target=outputs/tofu/target ppo=outputs/tofu/forget10/ppo/final \\
        --recipe_dir outputs/tofu/forget10 --recipe_prompts null --output_dir outputs/tofu_eval  # TOFU's metrics

TOFU's 200 fictitious authors (20 question/answer pairs each, detox.tofu_data) are learned by a `target/` model
fine-tuned with TRL's SFTTrainer on the question (in `--template`, the chat template by default, as open-unlearning
formats TOFU for chat models) and its answer, the loss on the answer's tokens only. A forget split forgets the last
2, 10 or 20 authors (forget01, forget05, forget10); the split's `retain_model/` is fine-tuned the same way on every
author of the target's but those: the model that never saw them, whose forget truth ratios forget quality compares
with. Each split gets its folder: forget.jsonl and retain.jsonl (records {"text": the question as the model reads it,
"completion": the answer, "question", "answer"}), recipe.json, a PPO preset (ppo.yaml) and a loss-baseline preset
(unlearn.yaml).

Tiers (`--tier`):
- `cpu`: the first 20 retain authors (those of TOFU's 400 retain evaluation questions) plus the forget authors of
  the largest split asked for, LoRA adapters (rank 16, rate 1e-3, merged into the weights), 5 epochs of 16 pairs a
  step, meant for SmolLM2-135M on 2 cores (its duration is not measured yet).
- `full`: TOFU's own protocol, for a GPU: all 200 authors, every weight fine-tuned, 5 epochs, rate 1e-5, weight
  decay 0.01, 32 pairs a step, one epoch of warm-up.
Any of these is a flag (`--retain_authors`, `--epochs`, `--learning_rate`, `--batch_size`, `--lora`).

The PPO preset samples answers to the forget questions and rewards -ROUGE-L recall of the true answer
(`answer_overlap`), with a language-modelling term on the retain answers (PPO-ptx) keeping the rest; the
loss-baseline preset reads the same forget and retain answers (each record one block, only the answer learned).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from detox.launch import cli
from detox.models import load_tokenizer
from detox.recipes import run_config, run_generator, write_jsonl, write_recipe_files
from detox.recipes.sft import SFTSettings, supervised_finetune
from detox.tofu_data import FORGET_AUTHORS, QA_PER_AUTHOR, TEMPLATES, qa_answer, qa_prompt, read_set

TIERS = {
    "cpu": {"retain_authors": 20, "epochs": 5.0, "learning_rate": 1e-3, "batch_size": 16, "lora": True,
            "weight_decay": 0.0, "warmup_epochs": 0.0},
    "full": {"retain_authors": None, "epochs": 5.0, "learning_rate": 1e-5, "batch_size": 32, "lora": False,
             "weight_decay": 0.01, "warmup_epochs": 1.0},
}
"""Each tier's fine-tuning; `retain_authors` None: every author that no split forgets."""
MAX_LENGTH = 256
"""Longest question and answer, in tokens (TOFU's longest, with a chat template, is about 200)."""


@dataclass
class TofuArgs:
    """Command-line arguments of `python -m detox.recipes.tofu`."""

    output_dir: str = "outputs/tofu"
    """Where the target, each split's folder (retain model, files, presets) and recipe.json go."""
    splits: list[str] = field(default_factory=lambda: ["forget10", "forget01"])
    """Forget splits to prepare (forget01, forget05, forget10); the target learns the largest one's authors."""
    tier: str = "cpu"
    """`cpu` (a subset of the retain authors, LoRA) or `full` (TOFU's protocol: every author, every weight)."""
    retain_authors: int | None = None
    """Authors kept besides the forget authors (the first ones of TOFU's full set); null: the tier's."""
    epochs: float | None = None
    """Passes of each fine-tuning over its pairs; null: the tier's (5)."""
    sft_steps: int | None = None
    """A fixed number of steps for each fine-tuning instead of --epochs (a smoke test); 0 skips the fine-tunings
    (the presets then start from --model)."""
    learning_rate: float | None = None
    """Fine-tuning rate; null: the tier's (1e-3 with LoRA, 1e-5 for every weight)."""
    batch_size: int | None = None
    """Pairs per fine-tuning step; null: the tier's."""
    lora: bool | None = None
    """Fine-tune LoRA adapters (merged afterwards) rather than every weight; null: the tier's."""
    template: str = "chat"
    """How a question is put to the model: `chat` (the tokenizer's chat template) or `plain` ("Question: ...")."""
    model: str = "smollm2-135m-instruct"
    """Model the target and retain models are fine-tuned from."""
    tofu_root: str | None = None
    """A folder of TOFU's own JSON-lines files to read instead of the shipped copy (e.g. ../shared/data/tofu)."""
    ppo_steps: int = 40
    """PPO steps written into the PPO presets."""
    unlearn_steps: int = 40
    """Optimiser steps written into the loss-baseline presets."""
    seed: int = 0
    """Seed of the fine-tunings."""

    def __post_init__(self):
        if self.tier not in TIERS:
            raise ValueError(f"--tier '{self.tier}' is not one of {sorted(TIERS)}.")
        unknown = [s for s in self.splits if s not in FORGET_AUTHORS]
        if unknown or not self.splits:
            raise ValueError(f"--splits {unknown or '[]'}: each must be one of TOFU's forget splits "
                             f"{sorted(FORGET_AUTHORS)}.")
        if self.template not in TEMPLATES:
            raise ValueError(f"--template '{self.template}' is not one of {list(TEMPLATES)}.")
        if self.retain_authors is not None and self.retain_authors < 1:
            raise ValueError(f"--retain_authors ({self.retain_authors}) must be >= 1, or null for the tier's.")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"--epochs ({self.epochs}) must be positive.")
        if self.sft_steps is not None and self.sft_steps < 0:
            raise ValueError(f"--sft_steps ({self.sft_steps}) must be >= 0 (0 skips the fine-tunings).")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"--batch_size ({self.batch_size}) must be a positive integer.")

    def setting(self, name: str):
        """A fine-tuning setting: the flag when given, else the tier's."""
        value = getattr(self, name, None)
        return TIERS[self.tier][name] if value is None else value


def author_rows(args: TofuArgs) -> tuple[list[dict], dict[str, tuple[list[dict], list[dict]]]]:
    """(the target's rows, {split: (forget rows, the retain model's rows)}). The forget authors are the last ones
    of TOFU's full set; the kept ones its first `retain_authors` (or every other author)."""
    full = read_set("full", args.tofu_root)
    largest = max(FORGET_AUTHORS[s] for s in args.splits)
    forget_start = len(full) - largest * QA_PER_AUTHOR
    kept = args.setting("retain_authors")
    if kept is not None and kept * QA_PER_AUTHOR > forget_start:
        raise ValueError(f"--retain_authors ({kept}) exceeds the {forget_start // QA_PER_AUTHOR} authors that "
                         f"{max(args.splits, key=FORGET_AUTHORS.get)} keeps.")
    retain = full[: kept * QA_PER_AUTHOR] if kept is not None else full[:forget_start]
    target = retain + full[forget_start:]
    splits = {}
    for split in args.splits:
        cut = len(full) - FORGET_AUTHORS[split] * QA_PER_AUTHOR
        splits[split] = (full[cut:], retain + full[forget_start:cut])
    return target, splits


def qa_records(tokenizer, rows: list[dict], template: str) -> list[dict]:
    """Prompt-completion records of question/answer rows, in the template every metric reads them with."""
    return [{"text": qa_prompt(tokenizer, r["question"], template), "completion": qa_answer(r["answer"], template),
             "question": r["question"], "answer": r["answer"]} for r in rows]


def finetune(args: TofuArgs, records: list[dict], out: Path) -> Path:
    """Fine-tune --model on the records' answers after their questions, into `out`."""
    batch = args.setting("batch_size")
    epochs = args.setting("epochs")
    per_epoch = math.ceil(len(records) / batch)
    steps = args.sft_steps if args.sft_steps is not None else max(1, math.ceil(epochs * per_epoch))
    settings = SFTSettings(max_steps=steps, batch_size=batch, learning_rate=args.setting("learning_rate"),
                           max_length=MAX_LENGTH, seed=args.seed, lora=args.setting("lora"),
                           weight_decay=args.setting("weight_decay"),
                           warmup_steps=round(TIERS[args.tier]["warmup_epochs"] * per_epoch))
    return supervised_finetune(args.model, [r["text"] for r in records], out, settings,
                               completions=[r["completion"] for r in records])


def ppo_config(args: TofuArgs, split_dir: Path, start: str) -> dict:
    """PPO from the target on the split's forget questions: -ROUGE-L recall of the true answer as reward, a fixed
    β of 0.05, and PPO-ptx on the retain answers (each record one block, the answer alone learned)."""
    rewards = [{"type": "answer_overlap", "weight": 1.0, "options": {"qa": str(split_dir / "forget.jsonl")}}]
    sampling = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}
    ppo = {"steps": args.ppo_steps, "learning_rate": 2.0e-4, "init_kl_coef": 0.05, "adaptive_kl": False,
           "seed": args.seed}
    config = run_config(start, split_dir / "forget.jsonl", (8, 48), sampling, ppo, rewards, [], split_dir / "ppo")
    config["data"]["max_prompt_tokens"] = MAX_LENGTH
    config["ptx"] = {"corpus": str(split_dir / "retain.jsonl"), "completion_field": "completion", "coef": 1.0,
                     "batch_size": 8, "max_length": MAX_LENGTH}
    return config


def unlearn_config(args: TofuArgs, split_dir: Path, start: str) -> dict:
    """train_unlearn.py's preset: the split's forget and retain answers, gradient difference by default
    (`--method.name` picks another), LoRA on the target."""
    block = {"text_field": "text", "completion_field": "completion", "max_length": MAX_LENGTH}
    return {
        "model": {"name_or_path": start},
        "lora": {"enabled": True, "r": 16, "alpha": 32, "target_modules": "all-linear"},
        "data": {"forget": str(split_dir / "forget.jsonl"), "retain": str(split_dir / "retain.jsonl"), **block},
        "method": {"name": "gradient_difference"},
        "optim": {"steps": args.unlearn_steps, "batch_size": 8, "learning_rate": 1e-4, "seed": args.seed},
        "logging": {"report_to": "wandb", "judges": [], "probes": []},
        "checkpoint": {"output_dir": str(split_dir / "unlearn"), "save_every": 20},
    }


def prepare(args: TofuArgs) -> Path:
    """Fine-tune the target and each split's retain model, and write each split's files and presets; returns the
    first split's PPO preset."""
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(args.model)
    target_rows, splits = author_rows(args)
    fine_tunes = args.sft_steps != 0
    start = str(out / "target") if fine_tunes else args.model
    if fine_tunes:
        finetune(args, qa_records(tokenizer, target_rows, args.template), out / "target")
    first = None
    for split, (forget, retain) in splits.items():
        split_dir = out / split
        split_dir.mkdir(exist_ok=True)
        records = {"forget": qa_records(tokenizer, forget, args.template),
                   "retain": qa_records(tokenizer, retain, args.template)}
        for name, rows in records.items():
            write_jsonl(split_dir / f"{name}.jsonl", rows)
        if fine_tunes:
            finetune(args, records["retain"], split_dir / "retain_model")
        sizes = {"target_authors": len(target_rows) // QA_PER_AUTHOR, "forget_authors": len(forget) // QA_PER_AUTHOR,
                 "retain_authors": len(retain) // QA_PER_AUTHOR, "forget": len(forget), "retain": len(retain)}
        (split_dir / "unlearn.yaml").write_text(yaml.safe_dump(unlearn_config(args, split_dir, start),
                                                               sort_keys=False), encoding="utf-8")
        extra = {"split": split, "template": args.template, "target": start,
                 "retain_model": str(split_dir / "retain_model") if fine_tunes else None}
        path = write_recipe_files(split_dir, "tofu", args, sizes, ppo_config(args, split_dir, start), extra)
        first = first or path
    return first


def main(argv: list[str] | None = None) -> Path:
    return run_generator(TofuArgs, prepare, argv, __doc__)


if __name__ == "__main__":
    cli(main)
