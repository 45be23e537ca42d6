"""One rollout batch: sampled responses, their log-probabilities under policy and reference, values, rewards,
advantages and returns. Everything here runs without gradients."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from detox import ppo
from detox.config import PPOConfig
from detox.generation import Samples
from detox.models import Trunk, causal_lm_forward


@dataclass
class Experience:
    input_ids: torch.Tensor
    """(B, Tq + Tr) prompt and response tokens."""
    attention_mask: torch.Tensor
    """(B, Tq + Tr) 1 on real tokens."""
    response_mask: torch.Tensor
    """(B, Tr) 1 on response tokens that are scored and trained on."""
    logprobs: torch.Tensor
    """(B, Tr) log π_old(a_t|s_t) of the rollout policy."""
    ref_logprobs: torch.Tensor
    """(B, Tr) log π_ref(a_t|s_t) of the reference policy."""
    values: torch.Tensor
    """(B, Tr) V_old(s_t) of the rollout value head."""
    scores: torch.Tensor
    """(B,) total sequence reward (weighted sum of the components, after clipping)."""
    rewards: torch.Tensor
    """(B, Tr) per-token reward: -beta * KL, plus the score on the last token."""
    kl: torch.Tensor
    """(B, Tr) per-token KL estimate between policy and reference."""
    entropy: torch.Tensor
    """(B, Tr) entropy of the rollout policy."""
    advantages: torch.Tensor
    """(B, Tr) GAE advantages, whitened over response tokens."""
    returns: torch.Tensor
    """(B, Tr) value targets (advantages before whitening + values)."""
    trunk: Trunk | None = None
    """Output of the policy's frozen lower layers, reused by every update; None when no layer is frozen."""

    @property
    def query_length(self) -> int:
        return self.input_ids.shape[1] - self.response_mask.shape[1]

    def select(self, index: torch.Tensor) -> "Experience":
        """The rows `index` of every tensor (a mini-batch)."""
        rows = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return Experience(**{name: None if value is None else value[index] for name, value in rows.items()})


def response_forward(
    model,
    input_ids,
    attention_mask,
    response_length: int,
    temperature: float = 1.0,
    with_values: bool = True,
    with_entropy: bool = True,
    trunk: Trunk | None = None,
):
    """Log-probs (B, Tr), values (B, Tr) or None, entropy (B, Tr) or None of the response tokens, and the policy's
    hidden states (None for a plain causal LM).

    Logits are divided by the sampling temperature, so the log-probabilities are those of the distribution the
    responses were actually drawn from.
    Logits at position t predict token t + 1, so the response is read from positions [Tq - 1, Tq + Tr - 1);
    only those logits are computed (the LM head over the prompt would be wasted work).
    `model` is a PolicyWithValueHead (values) or a plain causal LM (reference). The entropy (a softmax over the
    vocabulary per token) is skipped when nothing reads it. With `trunk`, the layers below `trunk.layers` are not
    run again (see detox.models.causal_lm_forward).
    """
    keep = response_length + 1
    hidden_states = None
    if with_values:
        logits, values, hidden_states = model(input_ids, attention_mask, logits_to_keep=keep, trunk=trunk)
        values = values[:, -response_length - 1 : -1]
    else:
        logits = causal_lm_forward(model, input_ids, attention_mask, keep, trunk).logits
        values = None
    logits = logits[:, :-1].float() / temperature
    labels = input_ids[:, -response_length:]
    entropy = ppo.entropy_from_logits(logits) if with_entropy else None
    return ppo.logprobs_from_logits(logits, labels), values, entropy, hidden_states


@torch.no_grad()
def make_experience(
    models,
    samples: Samples,
    scores: torch.Tensor,
    kl_coef: float,
    cfg: PPOConfig,
    forward_batch_size: int,
    temperature: float = 1.0,
) -> Experience:
    """Score-independent forward passes in chunks, then per-token rewards, GAE and whitening."""
    input_ids = torch.cat([samples.query_ids, samples.response_ids], dim=1)
    attention_mask = torch.cat([samples.query_mask, samples.response_mask], dim=1)
    response_length = samples.response_ids.shape[1]
    chunks = {"logprobs": [], "values": [], "entropy": [], "ref_logprobs": []}
    layers, trunks = models.trunk_layers, []
    for start in range(0, input_ids.shape[0], forward_batch_size):
        ids = input_ids[start : start + forward_batch_size]
        mask = attention_mask[start : start + forward_batch_size]
        logprobs, values, entropy, hidden = response_forward(models.policy, ids, mask, response_length, temperature)
        # the reference shares the frozen lower layers: it starts from their output instead of recomputing it
        trunk = Trunk(layers, hidden[layers]) if layers else None
        ref_logprobs, _, _, _ = response_forward(
            models.reference_lm(), ids, mask, response_length, temperature, with_values=False, with_entropy=False,
            trunk=trunk,
        )
        for name, tensor in zip(chunks, (logprobs, values, entropy, ref_logprobs)):
            chunks[name].append(tensor.float())
        trunks.append(trunk)
    out = {name: torch.cat(parts) for name, parts in chunks.items()}
    experience = finish_experience(input_ids, attention_mask, samples.response_mask, scores, out, kl_coef, cfg)
    if layers:
        experience.trunk = Trunk(layers, torch.cat([t.hidden for t in trunks]))
    return experience


def finish_experience(input_ids, attention_mask, response_mask, scores, out, kl_coef, cfg: PPOConfig) -> Experience:
    """Rewards, advantages and returns from the forward-pass outputs (pure tensor math)."""
    mask = response_mask.float()
    values = out["values"] * mask
    rewards, kl = ppo.compute_rewards(scores, out["logprobs"], out["ref_logprobs"], mask, kl_coef, cfg.kl_estimator)
    if cfg.whiten_rewards:
        rewards = ppo.masked_whiten(rewards, mask, shift_mean=False) * mask
    advantages, returns = ppo.gae(rewards, values, mask, cfg.gamma, cfg.lam)
    advantages = ppo.masked_whiten(advantages, mask) * mask
    return Experience(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_mask=response_mask,
        logprobs=out["logprobs"],
        ref_logprobs=out["ref_logprobs"],
        values=values,
        scores=scores,
        rewards=rewards,
        kl=kl,
        entropy=out["entropy"],
        advantages=advantages,
        returns=returns,
    )
