"""Peak memory of a PPO step as a function of depth: measured at a few depths, extrapolated, and explained by parts.

A decoder's memory during a PPO step is a part that does not depend on its depth (embeddings, LM head, the logits
over the vocabulary, one checkpointed layer being recomputed) plus a part that grows with every layer (its weights,
its LoRA adapters with their gradients and Adam moments, its checkpointed input, its KV cache during generation).
So each phase's peak is linear in the depth L: peak(L) = fixed + per_layer * L, and the step's is the largest of
them. `StepFit` fits one such line per phase (generate, score, forward, update) to peaks measured at a few small depths
at the full width and evaluates their maximum at the full depth. `analytic_parts` computes the same
parts from the architecture and the run's shapes, which says where the memory goes and checks the fit's slope.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM

GIB = 2**30
ADAM_STATES = 2
"""AdamW keeps two moments per trainable parameter, in the parameter's dtype."""
LORA_BYTES = 4
"""peft keeps LoRA adapters in float32 even on a bfloat16 base (autocast_adapter_dtype)."""
LOGIT_COPIES = 3
"""Float32 tensors of vocabulary width per response token in a training forward: logits, log-softmax, gradient."""


@dataclass(frozen=True)
class DepthFit:
    """peak(L) = fixed + per_layer * L, in bytes, fitted by least squares."""

    fixed: float
    per_layer: float

    @classmethod
    def fit(cls, depths: list[int], peaks: list[float]) -> "DepthFit":
        """Least-squares line through (depth, peak) points; needs at least two distinct depths."""
        if len(set(depths)) < 2 or len(depths) != len(peaks):
            raise ValueError(f"a depth fit needs peaks at two or more distinct depths, got depths {depths}.")
        n = len(depths)
        mean_d, mean_p = sum(depths) / n, sum(peaks) / n
        spread = sum((d - mean_d) ** 2 for d in depths)
        slope = sum((d - mean_d) * (p - mean_p) for d, p in zip(depths, peaks)) / spread
        return cls(fixed=mean_p - slope * mean_d, per_layer=slope)

    def predict(self, depth: int) -> float:
        return self.fixed + self.per_layer * depth


@dataclass(frozen=True)
class StepFit:
    """A step's peak is the largest of its phases' peaks, and each phase's is linear in depth with its own slope
    (generation holds the KV cache, the update the trainable state and checkpointed activations). At small depths
    the depth-independent logits can make one phase the largest and at full depth another, so one line through the
    step's peaks would bend; one line per phase does not."""

    phases: dict[str, DepthFit]

    @classmethod
    def fit(cls, depths: list[int], phase_peaks: list[dict[str, float]]) -> "StepFit":
        """`phase_peaks[i]`: bytes at the peak of each phase of a step measured at `depths[i]` layers."""
        names = sorted(set.intersection(*(set(p) for p in phase_peaks)))
        return cls({name: DepthFit.fit(depths, [p[name] for p in phase_peaks]) for name in names})

    def predict(self, depth: int) -> float:
        return max(fit.predict(depth) for fit in self.phases.values())

    def peak_phase(self, depth: int) -> str:
        return max(self.phases, key=lambda name: self.phases[name].predict(depth))


@dataclass(frozen=True)
class Architecture:
    """The sizes of a decoder that memory depends on (see `architecture_of`)."""

    fixed_params: int
    """Parameters outside the layers: embeddings, final norm, LM head (once when tied)."""
    layer_params: int
    """Parameters of one decoder layer."""
    layer_linears: tuple[tuple[int, int], ...]
    """(in, out) features of each linear module of one layer: what `all-linear` LoRA adapts."""
    hidden: int
    intermediate: int
    heads: int
    vocab: int
    tied_head: bool


@dataclass(frozen=True)
class StepShape:
    """What the run config fixes about a PPO step."""

    dtype_bytes: int
    """Bytes per weight (2 for bfloat16, 4 for float32)."""
    lora_r: int | None
    """LoRA rank, or None for full fine-tuning."""
    gradient_checkpointing: bool
    batch_size: int
    """Prompts per rollout: the generation batch."""
    mini_batch_size: int
    """Samples per training forward pass (also the chunk of the experience forward)."""
    tokens: int
    """Longest prompt plus longest response, in tokens."""
    response_tokens: int
    shared_fraction: float = 0.0
    """Full fine-tuning: share of the layers the reference shares with the policy (the rest is copied)."""


def architecture_of(config) -> Architecture:
    """Count a transformers config's parameters by building it on the meta device (no memory is allocated)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    layers = next(m for m in model.modules() if isinstance(m, nn.ModuleList))
    unique = {id(p): p.numel() for p in model.parameters()}
    layer_params = sum(p.numel() for p in layers[0].parameters())
    linears = tuple((m.in_features, m.out_features) for m in layers[0].modules() if isinstance(m, nn.Linear))
    text = config.get_text_config()
    hidden = text.hidden_size
    intermediate = getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * hidden
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    return Architecture(
        fixed_params=sum(unique.values()) - layer_params * len(layers),
        layer_params=layer_params,
        layer_linears=linears,
        hidden=hidden,
        intermediate=intermediate,
        heads=text.num_attention_heads,
        vocab=text.vocab_size,
        tied_head=head is not None and head.weight is embed.weight,
    )


def analytic_parts(arch: Architecture, step: StepShape) -> dict[str, tuple[float, float]]:
    """Bytes of each part of a step's memory as (fixed, per layer).

    weights            the model (and, in full fine-tuning, the reference's copied layers and unshared head)
    trainable_state    trainable weights' float32 copies (LoRA), gradients and AdamW moments (full fine-tuning:
                       of the layers and embeddings the reference does not share)
    activations        the update's mini-batch: each layer's input and output hidden states; under gradient
                       checkpointing one layer's internals at a time (fixed), else every layer's internals
    kv_cache           keys and values of every layer for the generation batch
    logits             float32 vocabulary-wide tensors of the update's response tokens, and of the sampling step
    """
    s, h, i = step.dtype_bytes, arch.hidden, arch.intermediate
    weights = [arch.fixed_params * s, arch.layer_params * s]
    if step.lora_r is None:
        # the layers the reference shares are frozen in the policy, with the embeddings below them (and a head tied
        # to them): only the rest has gradients and Adam moments
        unshared = 1 - step.shared_fraction
        frozen_fixed = arch.vocab * h if step.shared_fraction and arch.tied_head else 0
        trainable = [(arch.fixed_params - frozen_fixed) * (1 + ADAM_STATES) * s, arch.layer_params * 3 * s * unshared]
        weights[1] += arch.layer_params * s * unshared
        weights[0] += 0 if arch.tied_head else arch.vocab * h * s
    else:
        lora = sum(step.lora_r * (n_in + n_out) for n_in, n_out in arch.layer_linears)
        trainable = [0.0, lora * LORA_BYTES * (2 + ADAM_STATES)]
    rows = step.mini_batch_size * step.tokens
    internals = rows * (6 * h + 2 * i) * s + step.mini_batch_size * arch.heads * step.tokens**2 * 4
    if step.gradient_checkpointing:
        activations = [internals, 2 * rows * h * s]
    else:
        activations = [0.0, internals + 2 * rows * h * s]
    kv_cache = [0.0, 2 * step.batch_size * step.tokens * h * s]
    logits = [
        max(step.mini_batch_size * (step.response_tokens + 1), step.batch_size) * arch.vocab * 4 * LOGIT_COPIES,
        0.0,
    ]
    parts = {"weights": weights, "trainable_state": trainable, "activations": activations, "kv_cache": kv_cache,
             "logits": logits}
    return {name: (float(fixed), float(per_layer)) for name, (fixed, per_layer) in parts.items()}


def analytic_peak(parts: dict[str, tuple[float, float]], depth: int) -> float:
    """Bytes at the step's peak: weights and trainable state are always there; the KV cache (generation) and the
    update's activations never coexist, so the larger of the two counts, with the logits."""
    at = {name: fixed + per_layer * depth for name, (fixed, per_layer) in parts.items()}
    transient = max(at["kv_cache"], at["activations"]) + at["logits"]
    return at["weights"] + at["trainable_state"] + transient


def step_shape_of(cfg, depth: int | None = None) -> StepShape:
    """The StepShape of a run config (detox.config.TrainConfig) whose model has `depth` layers (for the share of
    them the reference shares; `model.num_shared_layers` null means a full copy)."""
    shared = cfg.model.num_shared_layers
    return StepShape(
        dtype_bytes={"float32": 4, "bfloat16": 2, "float16": 2}[cfg.model.dtype],
        lora_r=cfg.lora.r if cfg.lora.enabled else None,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        batch_size=cfg.ppo.batch_size,
        mini_batch_size=cfg.ppo.mini_batch_size,
        tokens=cfg.data.max_prompt_tokens + cfg.generation.max_new_tokens,
        response_tokens=cfg.generation.max_new_tokens,
        shared_fraction=0.0 if shared is None or not depth else min(1.0, shared / depth),
    )
