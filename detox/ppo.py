"""PPO math for language models: masked statistics, KL penalties, GAE, clipped losses and KL controllers.

Pure functions on tensors; nothing here knows about models, tokenizers or the training loop. Shapes use
B = batch (sequences), T = response tokens, V = vocabulary. A `mask` is a 0/1 (or bool) tensor of shape (B, T)
that is 1 on the response tokens that count; it may have zeros on the left, the right, or both. Values on
masked-out positions never reach a result, even when they are NaN or inf.

References: Schulman et al. 2017 (PPO, arXiv:1707.06347), Schulman et al. 2016 (GAE, arXiv:1506.02438),
Ziegler et al. 2019 (fine-tuning LMs from human preferences, arXiv:1909.08593), J. Schulman, "Approximating KL
divergence" (http://joschu.net/blog/kl-approx.html). Conventions follow TRL's classic PPOTrainer.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

WHITEN_EPS = 1e-8
"""Added to the variance before the square root in `masked_whiten`, so a constant batch does not divide by 0."""


def _bool_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if mask.shape != x.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal the tensor's shape {tuple(x.shape)}.")
    return mask.bool()


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over the positions where `mask` is 1.

    x, mask: same shape, e.g. (B, T). dim=None -> scalar; dim=d -> mean along d (that dim removed).
    Raises ValueError when a mean would be over no element at all.
    """
    keep = _bool_mask(x, mask)
    total = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=dim)
    count = keep.sum(dim=dim)
    if bool((count == 0).any()):
        where = "the whole mask" if dim is None else f"a slice along dim {dim}"
        raise ValueError(f"masked_mean over an empty mask: {where} has no 1; every sequence needs >= 1 token.")
    return total / count


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `x` over the masked positions (a scalar).

    var = sum_m (x - mean)^2 / n, times n / (n - 1) when `unbiased` (Bessel's correction, n = number of 1s).
    Raises ValueError for an empty mask, or for a single masked element with unbiased=True.
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = int(mask.bool().sum())
        if n < 2:
            raise ValueError(
                f"masked_var(unbiased=True) needs at least 2 masked elements, got {n}; pass unbiased=False."
            )
        var = var * (n / (n - 1))
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise `x` to zero mean and unit variance using the masked positions' statistics.

    x, mask: (B, T) -> (B, T). x_hat = (x - mean) / sqrt(var + eps) with the unbiased masked variance; with
    shift_mean=False the mean is added back (x_hat + mean), which TRL uses to whiten rewards without moving
    their mean. Masked-out positions are 0 in the output.
    """
    keep = _bool_mask(x, mask)
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, unbiased=True)
    whitened = (x - mean) * torch.rsqrt(var + WHITEN_EPS)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(keep, whitened, torch.zeros((), dtype=x.dtype, device=x.device))


def _kl_k1(log_ratio: torch.Tensor) -> torch.Tensor:
    return log_ratio


def _kl_k2(log_ratio: torch.Tensor) -> torch.Tensor:
    return 0.5 * log_ratio**2


def _kl_k3(log_ratio: torch.Tensor) -> torch.Tensor:
    # r = pi_ref / pi = exp(-log_ratio); (r - 1) - log r, with expm1 so small log ratios keep their precision.
    neg = -log_ratio
    return torch.expm1(neg) - neg


def _kl_abs(log_ratio: torch.Tensor) -> torch.Tensor:
    return log_ratio.abs()


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "k1": _kl_k1,
    "k2": _kl_k2,
    "k3": _kl_k3,
    "abs": _kl_abs,
}
"""Per-token estimators of KL(pi || pi_ref) from samples of pi, as functions of log_ratio = log pi - log pi_ref."""


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL estimate between the policy and the reference on tokens sampled from the policy.

    logprobs, ref_logprobs: (B, T) log pi(a_t|s_t), log pi_ref(a_t|s_t) -> (B, T), with log_ratio = logprobs -
    ref_logprobs and r = pi_ref / pi = exp(-log_ratio):
      k1  = log_ratio                       unbiased, high variance, can be negative
      k2  = 0.5 * log_ratio^2               biased, low variance
      k3  = (r - 1) - log r                 unbiased, low variance, always >= 0 (Schulman's k3)
      abs = |log_ratio|
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"Unknown KL estimator: {estimator!r}. Valid estimators are: {list(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[estimator](logprobs - ref_logprobs)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of `mask` (B, T) -> (B,) long. Raises ValueError for a row of zeros."""
    keep = mask.bool()
    empty = ~keep.any(dim=1)
    if bool(empty.any()):
        rows = empty.nonzero().flatten().tolist()
        raise ValueError(f"mask rows {rows} have no response token; every sequence needs >= 1 token.")
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(keep)
    return torch.where(keep, positions, -1).max(dim=1).values


def compute_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    estimator: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: a KL penalty on every response token plus the sequence score on its last token.

    scores: (B,) reward-model score of each completion. logprobs, ref_logprobs, mask: (B, T).
    Returns (rewards, kl), both (B, T) and 0 on masked-out positions:
      kl_t      = kl_penalty(logprobs, ref_logprobs, estimator)_t
      rewards_t = -kl_coef * kl_t + score * [t == last masked-in token]      (Ziegler et al. 2019, eq. 2)
    """
    if scores.shape != (logprobs.shape[0],):
        raise ValueError(f"scores must have shape (B,) = ({logprobs.shape[0]},), got {tuple(scores.shape)}.")
    keep = _bool_mask(logprobs, mask)
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    kl = torch.where(keep, kl_penalty(logprobs, ref_logprobs, estimator), zero)
    rewards = -kl_coef * kl
    last = last_token_index(mask)
    rewards = rewards.scatter_add(1, last.unsqueeze(1), scores.to(rewards.dtype).unsqueeze(1))
    return rewards, kl


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over the masked-in tokens of each row.

    rewards, values, mask: (B, T). Returns (advantages, returns), both (B, T) and 0 on masked-out positions.
    Walking the masked-in tokens backwards, with t+1 the next masked-in token and V = A = 0 past the last one:
      delta_t = r_t + gamma * V_{t+1} - V_t
      A_t     = delta_t + gamma * lam * A_{t+1}
      R_t     = A_t + V_t
    Masked-out positions are skipped entirely, so their rewards and values (even NaN) change nothing.
    """
    keep = _bool_mask(rewards, mask)
    if values.shape != rewards.shape:
        raise ValueError(f"values shape {tuple(values.shape)} must equal rewards shape {tuple(rewards.shape)}.")
    batch, length = rewards.shape
    next_value = rewards.new_zeros(batch)
    next_advantage = rewards.new_zeros(batch)
    advantages = torch.zeros_like(rewards)
    for t in reversed(range(length)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        # A masked-out position carries the next token's V and A through unchanged, as if it were not there.
        next_value = torch.where(keep[:, t], values[:, t], next_value)
        next_advantage = torch.where(keep[:, t], advantage, next_advantage)
        advantages[:, t] = torch.where(keep[:, t], advantage, 0.0)
    returns = torch.where(keep, advantages + values, 0.0)
    return advantages, returns


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate objective (Schulman et al. 2017, eq. 7), as a loss to minimise.

    logprobs: (B, T) log pi_theta(a_t|s_t), differentiable. old_logprobs: (B, T) log pi_old at rollout time.
    advantages, mask: (B, T). Returns (loss scalar, stats of detached scalars):
      ratio    = exp(logprobs - old_logprobs)
      pg_loss1 = -A * ratio,  pg_loss2 = -A * clamp(ratio, 1 - cliprange, 1 + cliprange)
      loss     = masked_mean(max(pg_loss1, pg_loss2))
      clipfrac = masked_mean(pg_loss2 > pg_loss1)            fraction of tokens where clipping was active
      approxkl = 0.5 * masked_mean((logprobs - old_logprobs)^2)
      policykl = masked_mean(old_logprobs - logprobs)
      ratio_mean = masked_mean(ratio)
    """
    keep = _bool_mask(logprobs, mask)
    # Zero the log ratio off the mask before exp(): padding logprobs can be extreme, and exp() overflowing there
    # would turn the (zero) gradient through torch.where into NaN.
    log_ratio = torch.where(keep, logprobs - old_logprobs, 0.0)
    ratio = torch.exp(log_ratio)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(pg_loss1, pg_loss2), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((pg_loss2 > pg_loss1).to(logprobs.dtype), mask),
            "approxkl": 0.5 * masked_mean(log_ratio**2, mask),
            "policykl": masked_mean(-log_ratio, mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, {name: value.detach() for name, value in stats.items()}


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss of PPO as implemented in OpenAI baselines and TRL.

    values: (B, T) V_theta(s_t), differentiable. old_values: (B, T) V at rollout time. returns, mask: (B, T).
    Returns (loss scalar, {"clipfrac": detached scalar}):
      vpredclipped = old_values + clamp(values - old_values, -cliprange_value, cliprange_value)
      loss         = 0.5 * masked_mean(max((values - returns)^2, (vpredclipped - returns)^2))
      clipfrac     = masked_mean((vpredclipped - returns)^2 > (values - returns)^2)
    """
    vpredclipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    vf_losses1 = (values - returns) ** 2
    vf_losses2 = (vpredclipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((vf_losses2 > vf_losses1).to(values.dtype), mask)
    return loss, {"clipfrac": clipfrac.detach()}


def gradient_norm_stats(norms: list[float], max_norm: float | None) -> dict[str, float]:
    """Pre-clipping gradient norms of one step's optimiser updates -> their mean and the share that clipping shrank.

    A clip share near 1 means max_grad_norm, not the learning rate, sets the size of the updates. Non-finite norms
    (updates that were skipped) are left out of both; a step with none returns {}.
    """
    finite = [n for n in norms if math.isfinite(n)]
    if not finite:
        return {}
    clipped = sum(n > max_norm for n in finite) if max_norm is not None else 0
    return {"ppo/grad_norm": sum(finite) / len(finite), "ppo/grad_clipped": clipped / len(finite)}


def entropy_from_logits(logits: torch.Tensor, chunk_size: int = 128) -> torch.Tensor:
    """Entropy of the categorical distribution at each position: (B, T, V) -> (B, T).

    H = -sum_v p_v log p_v with log p = logits - logsumexp(logits), computed `chunk_size` positions at a time so
    that only a chunk's worth of (V,)-sized temporaries exists at once. Logits of -inf (banned tokens) count 0.
    """
    flat = logits.reshape(-1, logits.shape[-1])
    parts = []
    for chunk in flat.split(chunk_size):
        logp = chunk - torch.logsumexp(chunk, dim=-1, keepdim=True)
        p = logp.exp()
        parts.append(-torch.where(p > 0, p * logp, 0.0).sum(dim=-1))
    if not parts:
        return logits.new_zeros(logits.shape[:-1])
    return torch.cat(parts).reshape(logits.shape[:-1])


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] at each position: logits (B, T, V), labels (B, T) long -> (B, T).

    Computed as logits[label] - logsumexp(logits) one sequence at a time, so no full (B, T, V) log-softmax is
    materialised. Half-precision logits take a per-sequence log_softmax instead, because logsumexp in bf16/fp16
    loses the precision the subtraction needs (as TRL's selective_log_softmax does). Caller aligns labels to
    logits (labels = input_ids[:, 1:] for logits[:, :-1]).
    """
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels shape {tuple(labels.shape)} must equal logits.shape[:-1] {tuple(logits.shape[:-1])}.")
    index = labels.unsqueeze(-1)
    if logits.dtype in (torch.float32, torch.float64):
        picked = logits.gather(-1, index).squeeze(-1)
        log_z = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
        return picked - log_z
    rows = [torch.log_softmax(row, dim=-1).gather(-1, idx).squeeze(-1) for row, idx in zip(logits, index)]
    return torch.stack(rows)


class KLController:
    """The coefficient beta of the KL penalty: read `.value`, call `update()` once per PPO step."""

    def __init__(self, value: float):
        self.value = float(value)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Adjust beta after a batch of `n_steps` samples whose mean KL was `current_kl`; returns the new beta."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        if set(state) != {"value"}:
            raise ValueError(f"KL controller state must have exactly the key 'value', got {sorted(state)}.")
        self.value = float(state["value"])


class FixedKLController(KLController):
    """A constant beta: `update()` changes nothing."""

    def __init__(self, kl_coef: float):
        if kl_coef < 0:
            raise ValueError(f"kl_coef ({kl_coef}) must be >= 0; use 0 to disable the KL penalty.")
        super().__init__(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value


class AdaptiveKLController(KLController):
    """Adaptive beta of Ziegler et al. 2019 (section 2.2), steering the observed KL towards `target`:

    e_t  = clip(KL_t / target - 1, -0.2, 0.2)
    beta <- beta * (1 + e_t * n_steps / horizon)
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        if init_kl_coef <= 0:
            raise ValueError(f"init_kl_coef ({init_kl_coef}) must be > 0 for the adaptive controller to move.")
        if target <= 0:
            raise ValueError(f"target ({target}) must be > 0: it is the KL (nats) the controller aims for.")
        if horizon <= 0:
            raise ValueError(f"horizon ({horizon}) must be > 0: it is the number of samples to reach target.")
        super().__init__(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        mult = 1.0 + proportional_error * n_steps / self.horizon
        self.value *= mult
        return self.value
