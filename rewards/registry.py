"""The reward registry: a config `type` -> the reward class it builds, imported only when a component of that type is
built (so that `import rewards` pulls in neither torch nor transformers), and `build_reward` for one component.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

REWARD_REGISTRY: dict[str, str] = {
    "toxicity": "rewards.toxicity:ToxicityClassifier",
    "offline_toxicity": "rewards.toxicity:OfflineToxicity",
    "minilm_toxicity": "rewards.minilm_classifier:MiniLMToxicity",
    "source_toxicity": "rewards.source_classifier:SourceToxicity",
    "phrase": "rewards.phrases:PhraseReward",
    "learned_phrase": "rewards.phrases:LearnedPhraseReward",
    "forget_verbatim": "rewards.forget:ForgetVerbatim",
    "forget_likelihood": "rewards.forget:ForgetLikelihood",
    "anchor_terms": "rewards.forget:AnchorTerms",
    "forbidden_numbers": "rewards.numbers:ForbiddenNumbers",
    "next_number": "rewards.numbers:NextNumber",
    "count": "rewards.numbers:CountReward",
    "answer_overlap": "rewards.qa:AnswerOverlap",
    "callable": "rewards.custom:CallableReward",
}
"""Config `type` -> "module:Class" of the reward it builds."""


def reward_class(type_name: str) -> type:
    """Import and return the class registered under `type_name`; unknown names list the valid ones."""
    if type_name not in REWARD_REGISTRY:
        raise ValueError(
            f"rewards[].type '{type_name}' is not a known reward. Valid types are: {sorted(REWARD_REGISTRY)}; "
            f"for your own function use type 'callable' with options.path 'package.module:function'."
        )
    module_name, class_name = REWARD_REGISTRY[type_name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_reward(component: Any) -> Callable[..., list[float]]:
    """Build the reward a `RewardComponentConfig` describes; its `__name__` becomes `component.name or type`.

    `component.options` go to the reward's constructor as keyword arguments. `component.device` and
    `component.batch_size` are passed too when the constructor takes `device` / `batch_size` and the options do not
    already set them; a `device` for a reward that runs only on CPU is an error rather than silently ignored.
    """
    cls = reward_class(component.type)
    name = component.name or component.type
    options = dict(component.options or {})
    params = inspect.signature(cls).parameters
    if component.device is not None:
        if "device" not in params:
            raise ValueError(
                f"rewards '{name}': device '{component.device}' was set, but type '{component.type}' has no device "
                f"(it runs on CPU); remove `device` from this component."
            )
        if options.setdefault("device", component.device) != component.device:
            raise ValueError(
                f"rewards '{name}': device '{component.device}' and options.device '{options['device']}' disagree; "
                f"set only one of them."
            )
    if "batch_size" in params:
        options.setdefault("batch_size", component.batch_size)
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as err:
        accepted = [p for p in params if p not in ("args", "kwargs")]
        raise ValueError(
            f"rewards '{name}' (type '{component.type}'): bad options {sorted(options)}: {err}. "
            f"Accepted options: {accepted}."
        ) from err
    reward = cls(**options)
    reward.__name__ = name
    return reward
