"""Configuration of `train_unlearn.py`: the loss-based unlearning baselines, in the same YAML/flag form as PPO runs.

Model, LoRA, logging and checkpoint sections are those of `train_ppo.py`, so a baseline and a PPO run of the same
recipe can share them; `data`, `method` and `optim` are the baseline's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from detox.config import BlockSettings, CheckpointConfig, LoggingConfig, LoraConfig, ModelConfig

METHODS = ("gradient_ascent", "gradient_difference", "npo", "simnpo", "whp", "rmu")
"""Loss-based methods `method.name` takes (detox.baselines.trainer.METHOD_LOSSES holds their losses)."""
RETAIN_METHODS = ("gradient_difference", "npo", "simnpo", "rmu")
"""Methods that read data.retain when it is given."""
NEEDS_RETAIN = ("gradient_difference", "rmu")
"""Methods that cannot run without data.retain."""


@dataclass
class UnlearnDataConfig(BlockSettings):
    forget: str = ""
    """Forget corpus: .txt/.txt.gz/.jsonl file, directory or datasets id (as `forget_verbatim`'s corpus), or a builtin
    continuation set: `builtin:rtp_toxic_continuations` (RealToxicityPrompts continuations of the offline default's
    training prompts that Perspective scored >= 0.5; each record is prompt + completion, only the completion learned)."""
    retain: str | None = None
    """Retain corpus, same formats (`builtin:rtp_clean_continuations`: the continuations scored < 0.1); needed by
    gradient_difference and rmu, optional for npo (NPO+RT) and simnpo, unused otherwise."""

    def __post_init__(self):
        self.check_blocks("data")


@dataclass
class MethodConfig:
    name: Literal["gradient_ascent", "gradient_difference", "npo", "simnpo", "whp", "rmu"] = "npo"
    """gradient_ascent (-NLL on forget), gradient_difference (+ NLL on retain), npo (Zhang et al. 2024), simnpo
    (reference-free, length-normalised NPO, Fan et al. 2024), whp (fine-tuning towards the alternative labels of
    Eldan & Russinovich 2023), or rmu (hidden states on forget text steered to a random vector, Li et al. 2024)."""
    retain_weight: float = 1.0
    """Weight of the retain NLL in gradient_difference, and in npo and simnpo when data.retain is given. In rmu, the
    weight (RMU's alpha) of the retain hidden-state MSE, which starts at 0 while the forget MSE starts of the order
    of steering_coef^2 / hidden size, so rmu usually wants a much larger weight: tune it."""
    beta: float = 0.1
    """NPO's and SimNPO's inverse temperature: small beta behaves like gradient ascent, large beta saturates sooner.
    SimNPO divides the log-probability by the sequence length, so it is run with a larger beta than NPO's."""
    gamma: float = 0.0
    """SimNPO's reward margin (>= 0): a larger gamma keeps the loss's gradient from vanishing until the mean token
    log-probability has fallen further."""
    layer: int = 7
    """RMU: the decoder layer whose output is steered, hidden_states[layer] of a transformers forward pass
    (hidden_states[0] is the embeddings, so layer L is the L-th decoder layer's output); 1 to the model's layer count
    minus 1 (the last entry of hidden_states is after the final norm). Layers above it get no gradient."""
    steering_coef: float = 100.0
    """RMU: c, the norm of the random target vector c·u. Set it near the layer's token-state norms (logged as
    rmu/hidden_norm), which grow with depth and differ per model: SmolLM2-135M's at layer 7 have a median of ~100."""
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
        if self.gamma < 0:
            raise ValueError(f"method.gamma ({self.gamma}) must be >= 0.")
        if self.layer < 1:
            raise ValueError(f"method.layer ({self.layer}) must be >= 1: layer 0 is the embeddings, which RMU does "
                             f"not steer.")
        if self.steering_coef <= 0:
            raise ValueError(f"method.steering_coef ({self.steering_coef}) must be positive.")
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
    """Loss-based unlearning baseline (gradient ascent, gradient difference, NPO, SimNPO, WHP, RMU) on a forget
    corpus."""

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
        if self.method.name in NEEDS_RETAIN and not self.data.retain:
            raise ValueError(f"method.name {self.method.name} needs data.retain: the corpus to keep doing well on.")

