"""The registries of loss-based methods, recipes and judges: each lists the names its config accepts, and a name it
does not hold is an error that lists the valid ones."""

from __future__ import annotations

import json
import typing

import pytest

from detox.baselines.config import METHODS, MethodConfig
from detox.baselines.trainer import METHOD_LOSSES, method_loss
from detox.judge_specs import BUILTIN_JUDGES
from detox.judges import JUDGES
from detox.recipe_files import FORGET_PROMPTS, forget_prompt_file
from detox.recipes.metrics import RECIPE_METRICS, recipe_metrics


def test_every_method_the_config_accepts_has_a_loss():
    accepted = typing.get_args(typing.get_type_hints(MethodConfig)["name"])
    assert set(METHOD_LOSSES) == set(METHODS) == set(accepted)


def test_an_unknown_method_lists_the_methods():
    with pytest.raises(ValueError, match=r"method.name 'sgd'.*\['gradient_ascent', 'gradient_difference', 'npo'"):
        method_loss("sgd")


def test_every_builtin_judge_has_a_builder():
    assert set(JUDGES) == set(BUILTIN_JUDGES)


def test_every_recipe_has_metrics_and_forget_prompts():
    assert set(RECIPE_METRICS) == set(FORGET_PROMPTS) == {"obscene_numbers", "forget_text", "tofu"}


def test_an_unknown_recipe_lists_the_recipes(tmp_path):
    (tmp_path / "recipe.json").write_text(json.dumps({"recipe": "haiku"}))
    with pytest.raises(ValueError, match=r"unknown recipe 'haiku'; known: \['forget_text', 'obscene_numbers', 'tofu'\]"):
        forget_prompt_file(tmp_path)
    with pytest.raises(ValueError, match=r"unknown recipe 'haiku'; known: \['forget_text', 'obscene_numbers', 'tofu'\]"):
        recipe_metrics(None, tmp_path, "model", None, None, [], [])
