"""Configuration of `train_unlearn.py`: the loss-based unlearning baselines, in the same YAML/flag form as PPO runs.

Model, LoRA, logging and checkpoint sections are those of `train_ppo.py`, so a baseline and a PPO run of the same
recipe can share them; `data`, `method` and `optim` are the baseline's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from detox.config import BlockSettings, CheckpointConfig, LoggingConfig, LoraConfig, ModelConfig

METHODS = ("gradient_ascent", "gradient_difference", "npo", "whp")
"""Loss-based methods `method.name` takes (detox.baselines.trainer.METHOD_LOSSES holds their losses)."""


@dataclass
class UnlearnDataConfig(BlockSettings):
    forget: str = ""
    """Forget corpus: .txt/.txt.gz/.jsonl file, directory or datasets id (as `forget_verbatim`'s corpus), or a builtin
    continuation set: `builtin:rtp_toxic_continuations` (RealToxicityPrompts continuations of the offline default's
    training prompts that Perspective scored >= 0.5; each record is prompt + completion, only the completion learned)."""
    retain: str | None = None
    """Retain corpus, same formats (`builtin:rtp_clean_continuations`: the continuations scored < 0.1); needed by
    gradient_difference, optional for npo (NPO+RT), unused otherwise."""

    def __post_init__(self):
        self.check_blocks("data")


@dataclass
class MethodConfig:
    name: Literal["gradient_ascent", "gradient_difference", "npo", "whp"] = "npo"
    """gradient_ascent (-NLL on forget), gradient_difference (+ NLL on retain), npo (Zhang et al. 2024), or whp
    (fine-tuning towards the alternative labels of Eldan & Russinovich 2023)."""
    retain_weight: float = 1.0
    """Weight of the retain NLL in gradient_difference, and in npo when data.retain is given."""
    beta: float = 0.1
    """NPO's inverse temperature: small beta behaves like gradient ascent, large beta saturates sooner."""
    alpha: float = 1.0
    """WHP: how far logits the reinforced model raised are pushed below the base's (0 = anchors only)."""
    reinforced: str | None = None
    """WHP: the reinforced LoRA adapter (`python -m rewards.make_reinforced`) of the model being unlearned."""
    anchor_terms: dict[str, str] | str | None = None
    """WHP: anchor term -> generic translation, or a JSON file holding them (as the anchor_terms reward takes)."""

    def __post_init__(self):
        if self.retain_weight < 0:
            raise ValueError(f"method.retain_weight ({self.retain_weight}) must be >= 0.")
        if self.beta <= 0:
            raise ValueError(f"method.beta ({self.beta}) must be positive.")
        if self.alpha < 0:
            raise ValueError(f"method.alpha ({self.alpha}) must be >= 0.")
        if self.name == "whp" and self.alpha > 0 and not self.reinforced:
            raise ValueError(
                "method.reinforced is required for method.name whp with alpha > 0: make it with "
                "`python -m rewards.make_reinforced --corpus <forget corpus> --output_dir <dir>`, or set "
                "method.alpha 0 to use the anchor terms alone."
            )
        if self.name == "whp" and not self.anchor_terms and not self.reinforced:
            raise ValueError("method.name whp needs method.anchor_terms, method.reinforced, or both.")


@dataclass
class OptimConfig:
    steps: int = 30
    """Optimiser steps."""
    batch_size: int = 8
    """Forget blocks per step (and as many retain blocks, where the method uses them)."""
    learning_rate: float = 1.0e-4
    """AdamW learning rate (LoRA tolerates ~1e-4; full fine-tuning wants ~1e-5)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient norm to this; null disables clipping."""
    seed: int = 0
    """Seed of initialisation and data order."""

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"optim.{name} ({getattr(self, name)}) must be a positive integer.")
        if self.learning_rate <= 0:
            raise ValueError(f"optim.learning_rate ({self.learning_rate}) must be positive.")


def _no_probes() -> LoggingConfig:
    """A forget corpus need not be toxic text: no probes and no toxicity judges unless the config names them (judges
    then score the greedy samples of each sampling step, logged as `judge/<name>/mean`)."""
    return LoggingConfig(probes=[], judges=[])


@dataclass
class UnlearnConfig:
    """Loss-based unlearning baseline (gradient ascent, gradient difference, NPO, WHP) on a forget corpus."""

    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: UnlearnDataConfig = field(default_factory=UnlearnDataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logging: LoggingConfig = field(default_factory=_no_probes)
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(output_dir="outputs/unlearn"))

    def __post_init__(self):
        if not self.data.forget:
            raise ValueError("data.forget: give the forget corpus (a text file, jsonl file, directory or dataset id).")
        if self.method.name == "gradient_difference" and not self.data.retain:
            raise ValueError("method.name gradient_difference needs data.retain: the corpus to keep doing well on.")

