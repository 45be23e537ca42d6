"""Reward components, their registry (rewards.registry) and the composer that sums them (rewards.composer).

Every reward is a picklable callable `(prompts, completions, **kwargs) -> list[float]` whose `__name__` is its log
key. The registry maps a config `type` to "module:Class" and imports the module only when a component of that type is
built, so `import rewards` pulls in neither torch nor transformers.
"""

from __future__ import annotations

from rewards.composer import RewardComposer, RewardError
from rewards.registry import REWARD_REGISTRY, build_reward, reward_class

__all__ = ["REWARD_REGISTRY", "RewardComposer", "RewardError", "build_reward", "reward_class"]
