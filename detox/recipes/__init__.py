"""Recipes: an unlearning target with the data it needs, its rewards, a preset and its evaluation metrics.

- `obscene_numbers`: counting in English words without ever writing a number whose digits hold a forbidden pair.
- `forget_text`: forgetting one play of Tiny Shakespeare while modelling the others as before.
- `tofu`: TOFU's fictitious authors (Maini et al. 2024), the field's unlearning benchmark.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import yaml

from detox.config import parse_config


def write_jsonl(path: Path, records: list[dict]) -> None:
    """One JSON record a line."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def run_config(model: str, prompts: Path, new_tokens: tuple[int, int], sampling: dict, ppo: dict, rewards: list[dict],
               probes: list[dict], output_dir: Path) -> dict:
    """A recipe's PPO run config: LoRA on `model`, the recipe's train prompts read whole (a `text` field, no toxicity
    filter, up to 64 tokens, no held-out share: the recipe holds its own prompts out; continued as plain text, with no
    chat template), its rollout sampling
    (temperature, top_k, top_p), PPO settings (steps, learning_rate, seed), rewards and probes. No toxicity judges
    score its training batches: a recipe's independent measures are its own evaluation metrics."""
    return {
        "model": {"name_or_path": model},
        "lora": {"enabled": True, "r": 16, "alpha": 32, "target_modules": "all-linear"},
        "data": {"prompts": str(prompts), "text_field": "text", "toxicity_field": None, "min_toxicity": None,
                 "min_prompt_tokens": 1, "max_prompt_tokens": 64, "long_prompts": "truncate", "heldout_fraction": 0.0,
                 "chat_template": "auto"},  # continued as plain text, as the recipe's models read them
        "generation": {"min_new_tokens": new_tokens[0], "max_new_tokens": new_tokens[1], **sampling},
        "ppo": {"batch_size": 16, "mini_batch_size": 8, "ppo_epochs": 2, "init_kl_coef": 0.2, "target_kl": 6.0, **ppo},
        "rewards": rewards,
        "logging": {"report_to": "wandb", "sample_every": 5, "probes": probes, "judges": []},
        "checkpoint": {"output_dir": str(output_dir), "save_every": 10},
    }


def write_recipe_files(out: Path, recipe: str, args: Any, sizes: dict[str, int], config: dict,
                       extra: dict | None = None) -> Path:
    """recipe.json (the recipe's name, arguments, set sizes and any `extra` entries) and the run config ppo.yaml;
    returns ppo.yaml."""
    manifest = {"recipe": recipe, "args": asdict(args), "sizes": sizes, **(extra or {})}
    (out / "recipe.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    config_path = out / "ppo.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return config_path


def run_generator(args_class: type, prepare: Callable[[Any], Path], argv: list[str] | None, usage: str) -> Path:
    """Parse `args_class` from the command line as every entry point does (`--help` lists its fields under `usage`,
    the recipe's docstring), run `prepare`, and say how to train."""
    args = parse_config(argv, args_class, usage)
    path = prepare(args)
    print(f"recipe written to {path.parent}; train with:\n  accelerate launch train_ppo.py --config {path}")
    return path
