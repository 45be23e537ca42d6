"""What a recipe directory holds, read by the evaluation and by the recipes' metrics: recipe.json (the manifest the
recipe's generator writes), held-out prompt files (JSON lines), and the file of each recipe's held-out forget prompts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FORGET_PROMPTS = {"obscene_numbers": "heldout_forbidden.jsonl", "forget_text": "heldout_forget.jsonl",
                  "tofu": "forget.jsonl"}
"""Each recipe's held-out forget prompts: what evaluate_toxicity.py samples from when given the recipe (TOFU's
protocol has none held out: its metrics read the forget questions themselves, with paraphrased and wrong answers)."""


def forget_prompt_file(recipe_dir: str | Path) -> Path:
    """The held-out forget prompts of the recipe in `recipe_dir`; an unknown recipe lists the known ones."""
    recipe = read_manifest(recipe_dir)["recipe"]
    if recipe not in FORGET_PROMPTS:
        raise ValueError(f"{recipe_dir}/recipe.json: unknown recipe '{recipe}'; known: {sorted(FORGET_PROMPTS)}.")
    return Path(recipe_dir) / FORGET_PROMPTS[recipe]


def read_manifest(recipe_dir: str | Path) -> dict[str, Any]:
    """recipe.json of a recipe directory, or an error that says how to make one."""
    path = Path(recipe_dir) / "recipe.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"recipe_dir '{recipe_dir}' has no recipe.json; make it with `python -m detox.recipes.obscene_numbers "
            f"--output_dir {recipe_dir}` (or the forget_text or tofu recipe)."
        )
    return json.loads(path.read_text(encoding="utf-8"))


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    """The JSON records of `path`, one a line (the first `limit` of them); a file without any is an error."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path} holds no records; generate the recipe again.")
    return rows[:limit] if limit is not None else rows
