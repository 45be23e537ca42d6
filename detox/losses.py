"""Language-modelling losses of every method, as pure functions on tensors: NLL (PPO-ptx's retain term), gradient
ascent, gradient difference, NPO (the loss-based baselines and PPO's forget loss), SimNPO, the alternative labels of
"Who's Harry Potter?" (WHP), and RMU's hidden-state losses. PPO's own losses are in detox.ppo.

Nothing here knows about models or data loading. Shapes: B = sequences, T = tokens, V = vocabulary. `logits` are
(B, T, V) for the full sequence and `labels` (B, T) hold the token ids to predict, already shifted or not as the
function says; a label of IGNORE (-100, as in transformers) leaves its position out. H = hidden size.

References: Jang et al. 2023 (gradient ascent for unlearning, arXiv:2210.01504); Liu et al. 2022 / Maini et al. 2024
(gradient difference, TOFU arXiv:2401.06121); Zhang et al. 2024 (NPO, arXiv:2404.05868); Eldan & Russinovich 2023
("Who's Harry Potter?", arXiv:2310.02238); Fan et al. 2024 (SimNPO, arXiv:2410.07163); Li et al. 2024 (RMU, WMDP
arXiv:2403.03218).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100
"""Label that leaves a position out of every loss (the transformers convention)."""


def shift_for_next_token(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align a causal LM's logits with the tokens they predict.

    logits (B, T, V), labels (B, T) -> logits (B, T-1, V) at positions 0..T-2, labels (B, T-1) at 1..T-1.
    """
    return logits[:, :-1, :], labels[:, 1:]


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(label_t) at every position, and the mask of positions that count.

    logits (B, T, V), labels (B, T) aligned (no shift here) -> (logprobs (B, T) with 0 where ignored, mask (B, T)).
    """
    mask = labels != IGNORE
    safe = torch.where(mask, labels, torch.zeros_like(labels))
    logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, logprobs, torch.zeros_like(logprobs)), mask


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log π(y|x) summed over each sequence's counted tokens: (B, T, V), (B, T) aligned -> (B,)."""
    logprobs, _ = token_logprobs(logits, labels)
    return logprobs.sum(dim=-1)


def nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per counted token (the usual LM loss): aligned (B, T, V), (B, T) -> scalar."""
    logprobs, mask = token_logprobs(logits, labels)
    count = mask.sum()
    if int(count) == 0:
        raise ValueError("nll over no token: every label is IGNORE; the batch has nothing to learn from.")
    return -logprobs.sum() / count


def gradient_ascent_loss(forget_logits: torch.Tensor, forget_labels: torch.Tensor) -> torch.Tensor:
    """Gradient ascent on the forget set: minimise -NLL(forget), i.e. train with a negative learning rate.

    Unbounded below: nothing stops it from driving every forget token's probability to 0, which is why it collapses.
    """
    return -nll(forget_logits, forget_labels)


def bounded_ascent_loss(forget_logits: torch.Tensor, forget_labels: torch.Tensor, max_nll: float) -> torch.Tensor:
    """Gradient ascent that stops pushing a sequence once its mean token NLL passes `max_nll`: −mean over sequences
    of min(NLL_b, max_nll), NLL_b being sequence b's mean NLL per counted token.

    Plain ascent keeps pushing text that is already unlikely, and its late steps are where it collapses the model.
    Here a sequence past the bound adds a constant and no gradient, so the term stops once each forget text is as
    unlikely as the bound asks. Below the bound a sequence is pushed as ascent pushes it, every token at once: a bound
    per token instead would leave the rare tokens alone and spend the whole push on the frequent ones (function words,
    punctuation), which garbles the model's text. Bounded below by −max_nll. Sequences with no counted token are left
    out.
    """
    if max_nll <= 0:
        raise ValueError(f"bounded ascent's max_nll ({max_nll}) must be positive: it is a mean token NLL in nats.")
    logprobs, mask = token_logprobs(forget_logits, forget_labels)
    counts = mask.sum(dim=-1)
    kept = counts > 0
    if not bool(kept.any()):
        raise ValueError("bounded ascent over no token: every label is IGNORE; the batch has nothing to forget.")
    sequence_nll = -logprobs.sum(dim=-1)[kept] / counts[kept]
    return -torch.clamp(sequence_nll, max=max_nll).mean()


def gradient_difference_loss(
    forget_logits: torch.Tensor,
    forget_labels: torch.Tensor,
    retain_logits: torch.Tensor,
    retain_labels: torch.Tensor,
    retain_weight: float = 1.0,
) -> torch.Tensor:
    """Ascent on the forget set plus descent on the retain set: -NLL(forget) + retain_weight * NLL(retain)."""
    return gradient_ascent_loss(forget_logits, forget_labels) + retain_weight * nll(retain_logits, retain_labels)


def npo_loss(policy_logprob: torch.Tensor, reference_logprob: torch.Tensor, beta: float) -> torch.Tensor:
    """Negative preference optimisation (Zhang et al. 2024, eq. 3), averaged over the batch.

    L = -(2/β) E[log σ(-β (log π_θ(y|x) - log π_ref(y|x)))] = (2/β) E[softplus(β · log-ratio)].
    policy_logprob, reference_logprob: (B,) sequence log-probabilities of forget samples. At log-ratio 0 the loss is
    (2/β) log 2 and its gradient is that of gradient ascent scaled by 1/N; as π_θ(y|x) falls the gradient vanishes
    (the weight σ(β · log-ratio) goes to 0), which is what slows the collapse.
    """
    if beta <= 0:
        raise ValueError(f"NPO beta ({beta}) must be positive.")
    log_ratio = policy_logprob - reference_logprob.detach()
    return (2.0 / beta) * F.softplus(beta * log_ratio).mean()


def simnpo_loss(policy_logprob: torch.Tensor, lengths: torch.Tensor, beta: float, gamma: float = 0.0) -> torch.Tensor:
    """SimNPO (Fan et al. 2024): NPO without a reference model, on the length-normalised log-probability.

    L = -(2/β) E[log σ(-(β/|y|) log π_θ(y|x) - γ)] = (2/β) E[softplus((β/|y|) log π_θ(y|x) + γ)].
    policy_logprob (B,) summed log-probabilities of forget sequences, lengths (B,) their counted tokens |y|; γ is the
    reward margin. Dividing by |y| scores each sequence by its mean token log-probability, so its length does not
    scale its loss.
    """
    if beta <= 0:
        raise ValueError(f"SimNPO beta ({beta}) must be positive.")
    if bool((lengths <= 0).any()):
        raise ValueError(f"SimNPO over a sequence with no counted token (lengths {lengths.tolist()}): every forget "
                         f"sequence needs at least one label that is not IGNORE.")
    mean_logprob = policy_logprob / lengths.to(policy_logprob.dtype)
    return (2.0 / beta) * F.softplus(beta * mean_logprob + gamma).mean()


def whp_generic_logits(baseline_logits: torch.Tensor, reinforced_logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """WHP's generic prediction (Eldan & Russinovich 2023, eq. 1): v_generic = v_base - α · ReLU(v_reinforced - v_base).

    Wherever fine-tuning on the text raised a token's logit, that token is pushed below the baseline's logit by α
    times the rise; tokens the reinforced model did not favour keep the baseline's logit. Shapes (..., V) -> (..., V).
    """
    if alpha < 0:
        raise ValueError(f"WHP alpha ({alpha}) must be >= 0.")
    return baseline_logits - alpha * torch.relu(reinforced_logits - baseline_logits)


def whp_labels(generic_logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The alternative label at each position: the generic prediction's argmax, IGNORE where `keep` is False.

    generic_logits (B, T, V), keep (B, T) bool -> labels (B, T) for `alternative_label_loss`.
    """
    labels = generic_logits.argmax(dim=-1)
    return torch.where(keep, labels, torch.full_like(labels, IGNORE))


def alternative_label_loss(logits: torch.Tensor, alternative_labels: torch.Tensor) -> torch.Tensor:
    """Fine-tune on the original text towards the generic labels: NLL of the alternative labels, aligned positions."""
    return nll(logits, alternative_labels)


def rmu_control_vector(hidden_size: int, steering_coef: float, seed: int) -> torch.Tensor:
    """RMU's target c · u (Li et al. 2024): u has entries drawn uniformly from [0, 1), normalised to unit
    length; the same `seed` gives the same vector, so a resumed run steers towards the same one. -> (H,) float32."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(hidden_size, generator=generator)
    return steering_coef * u / u.norm()


def _masked_mse(hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, what: str) -> torch.Tensor:
    """Mean over the tokens where `mask` holds of the mean squared difference over H: (B, T, H), (..., H), (B, T)."""
    count = mask.sum()
    if int(count) == 0:
        raise ValueError(f"{what} over no token: the mask is empty.")
    squared = (hidden.float() - target.float()).pow(2).mean(dim=-1)
    return torch.where(mask, squared, torch.zeros_like(squared)).sum() / count


def rmu_forget_loss(hidden: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """RMU's forget term: the mean over counted tokens of ||h - c·u||² / H, which pushes the layer's states on the
    forget text towards the fixed random vector `target` (`rmu_control_vector`). hidden (B, T, H), mask (B, T) bool,
    target (H,) -> scalar."""
    return _masked_mse(hidden, target, mask, "rmu_forget_loss")


def rmu_retain_loss(hidden: torch.Tensor, frozen_hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMU's retain term: the mean over counted tokens of ||h - h_frozen||² / H, which keeps the layer's states on
    the retain text where the frozen model puts them. hidden, frozen_hidden (B, T, H) (no gradient reaches the
    frozen one), mask (B, T) bool -> scalar."""
    return _masked_mse(hidden, frozen_hidden.detach(), mask, "rmu_retain_loss")
