"""PPO math on hand-made tensors whose expected values are worked out in the comments, plus property tests."""

from __future__ import annotations

import math

import pytest
import torch

from detox.ppo import (
    AdaptiveKLController,
    FixedKLController,
    compute_rewards,
    entropy_from_logits,
    gae,
    gradient_norm_stats,
    kl_penalty,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    value_loss,
)

NAN = float("nan")


def gae_reference(rewards, values, mask, gamma, lam):
    """GAE one token at a time in plain Python: the definition the vectorised `gae` must reproduce."""
    advantages = [[0.0] * len(row) for row in rewards]
    returns = [[0.0] * len(row) for row in rewards]
    for b, row_mask in enumerate(mask):
        next_value, next_advantage = 0.0, 0.0
        for t in reversed([t for t, m in enumerate(row_mask) if m]):
            delta = rewards[b][t] + gamma * next_value - values[b][t]
            advantages[b][t] = delta + gamma * lam * next_advantage
            returns[b][t] = advantages[b][t] + values[b][t]
            next_value, next_advantage = values[b][t], advantages[b][t]
    return torch.tensor(advantages, dtype=torch.float64), torch.tensor(returns, dtype=torch.float64)


def random_mask(batch: int, length: int, generator: torch.Generator, left_padding: bool) -> torch.Tensor:
    """Each row: some zeros on the left (if asked), then >= 1 ones, then zeros on the right."""
    mask = torch.zeros(batch, length)
    for b in range(batch):
        start = int(torch.randint(0, length // 2, (1,), generator=generator)) if left_padding else 0
        n = int(torch.randint(1, length - start + 1, (1,), generator=generator))
        mask[b, start : start + n] = 1
    return mask


# ---------------------------------------------------------------- masked statistics


def test_masked_mean_var_whiten_by_hand():
    # Masked-in values 1, 2, 3 (the 100 is padding): mean 2, squared deviations 1 + 0 + 1 = 2,
    # biased var 2/3, unbiased var 2/(3-1) = 1, so whitening gives (x - 2) / 1 = -1, 0, 1.
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert masked_mean(x, mask).item() == pytest.approx(2.0)
    assert masked_var(x, mask).item() == pytest.approx(1.0)
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(2 / 3)
    torch.testing.assert_close(masked_whiten(x, mask), torch.tensor([[-1.0, 0.0, 1.0, 0.0]]))
    # shift_mean=False adds the mean (2) back: unit variance, original mean.
    torch.testing.assert_close(masked_whiten(x, mask, shift_mean=False), torch.tensor([[1.0, 2.0, 3.0, 0.0]]))


def test_masked_mean_along_dim_and_ignores_nan_padding():
    # Row means over their own masked tokens: (1 + 3) / 2 = 2 and 10 / 1 = 10; NaN padding never leaks in.
    x = torch.tensor([[1.0, 3.0, NAN], [NAN, 10.0, NAN]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([2.0, 10.0]))
    assert masked_mean(x, mask).item() == pytest.approx(14 / 3)


def test_masked_statistics_reject_empty_and_single_masks():
    x = torch.ones(1, 3)
    with pytest.raises(ValueError, match="empty mask"):
        masked_mean(x, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="at least 2 masked elements, got 1"):
        masked_var(x, torch.tensor([[0, 1, 0]]))
    assert masked_var(x, torch.tensor([[0, 1, 0]]), unbiased=False).item() == 0.0
    with pytest.raises(ValueError, match="mask shape"):
        masked_mean(x, torch.ones(3))


# ---------------------------------------------------------------- KL estimators and rewards


def test_kl_estimators_by_hand():
    # pi = 0.5, pi_ref = 0.25: log_ratio = ln 2, r = pi_ref / pi = 1/2.
    #   k1 = ln 2, k2 = (ln 2)^2 / 2, k3 = (1/2 - 1) - ln(1/2) = ln 2 - 0.5, abs = ln 2.
    # pi = 0.25, pi_ref = 0.5: log_ratio = -ln 2, r = 2.
    #   k1 = -ln 2, k2 = (ln 2)^2 / 2, k3 = (2 - 1) - ln 2 = 1 - ln 2, abs = ln 2.
    # pi = pi_ref: every estimator is 0.
    ln2 = math.log(2)
    logprobs = torch.log(torch.tensor([[0.5, 0.25, 0.3]]))
    ref_logprobs = torch.log(torch.tensor([[0.25, 0.5, 0.3]]))
    expected = {
        "k1": [ln2, -ln2, 0.0],
        "k2": [ln2**2 / 2, ln2**2 / 2, 0.0],
        "k3": [ln2 - 0.5, 1 - ln2, 0.0],
        "abs": [ln2, ln2, 0.0],
    }
    for estimator, values in expected.items():
        torch.testing.assert_close(kl_penalty(logprobs, ref_logprobs, estimator), torch.tensor([values]))


def test_k1_and_k3_are_unbiased_estimates_of_kl():
    # E_{x~p}[k(x)] must equal KL(p || q) exactly for k1 and k3: sum over a small categorical, no sampling.
    generator = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(6, generator=generator, dtype=torch.float64), dim=0)
    logq = torch.log_softmax(torch.randn(6, generator=generator, dtype=torch.float64), dim=0)
    kl = (logp.exp() * (logp - logq)).sum()
    for estimator in ("k1", "k3"):
        expectation = (logp.exp() * kl_penalty(logp, logq, estimator)).sum()
        torch.testing.assert_close(expectation, kl)


def test_unknown_kl_estimator_lists_valid_names():
    with pytest.raises(ValueError, match=r"'k4'.*\['k1', 'k2', 'k3', 'abs'\]"):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), "k4")


def test_compute_rewards_puts_score_on_last_unmasked_token():
    # Row 0 is right-padded (last token at index 2); row 1 is padded on both sides (last token also index 2).
    # log_ratio is 0.1 on the mask, so k1 = 0.1 and each token's penalty is -kl_coef * 0.1 = -0.05; the score is
    # added on the last token: 2 - 0.05 = 1.95 and -1 - 0.05 = -1.05. Garbage in the padding stays out.
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    ref_logprobs = torch.tensor([[-1.0, -2.0, -3.0, NAN], [NAN, -1.0, -1.0, 50.0]])
    logprobs = ref_logprobs + 0.1
    rewards, kl = compute_rewards(torch.tensor([2.0, -1.0]), logprobs, ref_logprobs, mask, kl_coef=0.5, estimator="k1")
    torch.testing.assert_close(kl, torch.tensor([[0.1, 0.1, 0.1, 0.0], [0.0, 0.1, 0.1, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, -0.05, 1.95, 0.0], [0.0, -0.05, -1.05, 0.0]]))


def test_compute_rewards_rejects_empty_rows_and_bad_scores():
    zeros = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"mask rows \[1\] have no response token"):
        compute_rewards(torch.zeros(2), zeros, zeros, torch.tensor([[1, 0, 0], [0, 0, 0]]), 0.1, "k1")
    with pytest.raises(ValueError, match=r"scores must have shape \(B,\) = \(2,\)"):
        compute_rewards(torch.zeros(2, 1), zeros, zeros, torch.ones(2, 3), 0.1, "k1")


# ---------------------------------------------------------------- GAE


def test_gae_by_hand():
    # gamma = 0.9, lam = 0.8 (gamma * lam = 0.72); rewards 1, 0, 2; values 0.5, 1.0, 1.5; V = A = 0 after the end.
    #   t=2: delta = 2 + 0.9*0   - 1.5 = 0.5   A = 0.5
    #   t=1: delta = 0 + 0.9*1.5 - 1.0 = 0.35  A = 0.35 + 0.72*0.5  = 0.71
    #   t=0: delta = 1 + 0.9*1.0 - 0.5 = 1.4   A = 1.4  + 0.72*0.71 = 1.9112
    # returns = A + V = 2.4112, 1.71, 2.0. Row 1 is the same sequence padded on both sides, with NaN padding.
    rewards = torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0], [NAN, 1.0, 0.0, 2.0, 7.0]])
    values = torch.tensor([[0.5, 1.0, 1.5, 9.0, 9.0], [NAN, 0.5, 1.0, 1.5, -3.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0, 0.0]])
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    expected_advantages = torch.tensor([[1.9112, 0.71, 0.5, 0.0, 0.0], [0.0, 1.9112, 0.71, 0.5, 0.0]])
    expected_returns = torch.tensor([[2.4112, 1.71, 2.0, 0.0, 0.0], [0.0, 2.4112, 1.71, 2.0, 0.0]])
    torch.testing.assert_close(advantages, expected_advantages)
    torch.testing.assert_close(returns, expected_returns)


@pytest.mark.parametrize("left_padding", [False, True])
def test_gae_vectorised_matches_loop_reference(left_padding):
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        rewards = torch.randn(6, 9, generator=generator, dtype=torch.float64)
        values = torch.randn(6, 9, generator=generator, dtype=torch.float64)
        mask = random_mask(6, 9, generator, left_padding)
        advantages, returns = gae(rewards, values, mask, gamma=0.95, lam=0.9)
        ref_advantages, ref_returns = gae_reference(rewards.tolist(), values.tolist(), mask.tolist(), 0.95, 0.9)
        torch.testing.assert_close(advantages, ref_advantages)
        torch.testing.assert_close(returns, ref_returns)


def test_gae_ignores_masked_out_rewards_and_values():
    # Padding, and holes inside a row, are skipped: replacing what they hold with garbage (NaN, huge numbers)
    # must not move a single masked-in advantage or return.
    generator = torch.Generator().manual_seed(2)
    rewards = torch.randn(8, 10, generator=generator)
    values = torch.randn(8, 10, generator=generator)
    mask = random_mask(8, 10, generator, left_padding=True)
    mask[:, 4] = 0  # a hole in the middle of most rows
    mask[:, 0] = 1  # ...while every row keeps at least one token
    advantages, returns = gae(rewards, values, mask, gamma=0.99, lam=0.95)
    off = mask == 0
    garbage_rewards = rewards.masked_fill(off, NAN)
    garbage_values = values.masked_fill(off, 1e9)
    garbage_advantages, garbage_returns = gae(garbage_rewards, garbage_values, mask, gamma=0.99, lam=0.95)
    torch.testing.assert_close(garbage_advantages, advantages)
    torch.testing.assert_close(garbage_returns, returns)
    assert advantages[off].eq(0).all() and returns[off].eq(0).all()


# ---------------------------------------------------------------- losses


def test_policy_loss_clipping_by_hand():
    # cliprange 0.2 -> ratios are clamped to [0.8, 1.2]. Both rows have ratios 1.5 (above), 0.5 (below), 1.1 (inside);
    # row 0 has advantage +1, row 1 has -1. Per token max(pg_loss1, pg_loss2) with pg_loss = -A * ratio:
    #   A=+1: r=1.5 -> max(-1.5, -1.2) = -1.2 (clipped)  r=0.5 -> max(-0.5, -0.8) = -0.5  r=1.1 -> -1.1
    #   A=-1: r=1.5 -> max( 1.5,  1.2) =  1.5            r=0.5 -> max( 0.5,  0.8) =  0.8 (clipped)  r=1.1 -> 1.1
    # loss = (-1.2 - 0.5 - 1.1 + 1.5 + 0.8 + 1.1) / 6 = 0.1, clipfrac = 2/6. Column 3 is padding full of garbage.
    ratios = torch.tensor([1.5, 0.5, 1.1])
    old_logprobs = torch.full((2, 4), -1.0)
    logprobs = old_logprobs.clone()
    logprobs[:, :3] += ratios.log()
    logprobs[:, 3] = 200.0  # exp(201) overflows float32: the mask must keep it out of both loss and gradient
    logprobs.requires_grad_(True)
    advantages = torch.tensor([[1.0, 1.0, 1.0, 1e6], [-1.0, -1.0, -1.0, NAN]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]])

    loss, stats = policy_loss(logprobs, old_logprobs, advantages, mask, cliprange=0.2)
    assert loss.item() == pytest.approx(0.1, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(2 / 6)
    log_r = ratios.log()
    assert stats["approxkl"].item() == pytest.approx(0.5 * (log_r**2).mean().item(), rel=1e-5)
    assert stats["policykl"].item() == pytest.approx(-log_r.mean().item(), rel=1e-5)
    assert stats["ratio_mean"].item() == pytest.approx(3.1 / 3, rel=1e-5)
    assert not any(value.requires_grad for value in stats.values())

    # Clipped tokens get no gradient; the others get d(-A * r)/d logprob / 6 = -A * r / 6; padding gets 0.
    loss.backward()
    expected_grad = torch.tensor([[0.0, -0.5 / 6, -1.1 / 6, 0.0], [1.5 / 6, 0.0, 1.1 / 6, 0.0]])
    torch.testing.assert_close(logprobs.grad, expected_grad)


def test_value_loss_clipping_by_hand():
    # cliprange_value 0.2, old values 0, so predictions are clipped to [-0.2, 0.2].
    #   token 0: v=0.5, R=1  -> unclipped (0.5-1)^2 = 0.25, clipped (0.2-1)^2 = 0.64 -> 0.64 (clip active)
    #   token 1: v=0.1, R=1  -> inside the range: (0.1-1)^2 = 0.81
    #   token 2: v=0.5, R=-1 -> unclipped (0.5+1)^2 = 2.25, clipped (0.2+1)^2 = 1.44 -> 2.25
    # loss = 0.5 * (0.64 + 0.81 + 2.25) / 3 = 0.61667, clipfrac = 1/3. Token 3 is padding.
    values = torch.tensor([[0.5, 0.1, 0.5, 40.0]])
    old_values = torch.zeros(1, 4)
    returns = torch.tensor([[1.0, 1.0, -1.0, NAN]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, stats = value_loss(values, old_values, returns, mask, cliprange_value=0.2)
    assert loss.item() == pytest.approx(0.5 * 3.7 / 3)
    assert stats["clipfrac"].item() == pytest.approx(1 / 3)


# ---------------------------------------------------------------- logits


def test_entropy_of_uniform_is_log_v():
    assert entropy_from_logits(torch.zeros(2, 3, 50)).allclose(torch.full((2, 3), math.log(50)))
    # Banned tokens (-inf) carry no mass: uniform over the 7 allowed tokens has entropy log 7, not NaN.
    logits = torch.full((1, 1, 10), -math.inf)
    logits[..., :7] = 3.0
    assert entropy_from_logits(logits).item() == pytest.approx(math.log(7))


def test_entropy_matches_categorical_across_chunks():
    # chunk_size=4 forces several chunks over the 3 * 5 = 15 positions; large logits test stability.
    logits = 30 * torch.randn(3, 5, 11, generator=torch.Generator().manual_seed(3))
    expected = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(entropy_from_logits(logits, chunk_size=4), expected)


def test_logprobs_from_logits_matches_log_softmax_gather():
    generator = torch.Generator().manual_seed(4)
    logits = 10 * torch.randn(2, 5, 13, generator=generator)
    labels = torch.randint(0, 13, (2, 5), generator=generator)
    expected = torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logprobs_from_logits(logits, labels), expected)
    # bf16 takes the per-row log_softmax path; it must agree with the fp32 answer to bf16 precision.
    torch.testing.assert_close(
        logprobs_from_logits(logits.bfloat16(), labels).float(), expected, atol=0.1, rtol=0.02
    )
    # The gradient flows back to the logits (the policy loss needs it).
    logits.requires_grad_(True)
    logprobs_from_logits(logits, labels).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="labels shape"):
        logprobs_from_logits(logits, labels[:, :-1])


# ---------------------------------------------------------------- KL controllers


def test_adaptive_kl_update_by_hand():
    # target 6, horizon 10000, n_steps 256 -> mult = 1 + e * 256 / 10000 = 1 + 0.0256 * e.
    #   KL 6.6: e = 6.6/6 - 1 = +0.1          -> beta = 0.1 * 1.00256
    #   KL 5.4: e = -0.1                      -> beta = 0.1 * 0.99744
    #   KL 60:  e = 9, clipped to +0.2        -> beta = 0.1 * 1.00512
    #   KL 0:   e = -1, clipped to -0.2       -> beta = 0.1 * 0.99488
    for current_kl, expected in [(6.6, 0.100256), (5.4, 0.099744), (60.0, 0.100512), (0.0, 0.099488)]:
        controller = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
        assert controller.update(current_kl, n_steps=256) == pytest.approx(expected)
        assert controller.value == pytest.approx(expected)


def test_kl_controllers_state_round_trip():
    controller = AdaptiveKLController(0.2, target=1.0, horizon=100)
    controller.update(5.0, n_steps=10)
    resumed = AdaptiveKLController(0.2, target=1.0, horizon=100)
    resumed.load_state_dict(controller.state_dict())
    assert resumed.value == controller.value == pytest.approx(0.2 * 1.02)
    fixed = FixedKLController(0.05)
    assert fixed.update(100.0, n_steps=10) == 0.05 and fixed.value == 0.05
    assert fixed.state_dict() == {"value": 0.05}
    with pytest.raises(ValueError, match="exactly the key 'value'"):
        fixed.load_state_dict({"value": 0.1, "target": 3.0})
    with pytest.raises(ValueError, match=r"target \(0\) must be > 0"):
        AdaptiveKLController(0.1, target=0, horizon=10)


def test_gradient_norm_stats_mean_and_clipped_share_by_hand():
    assert gradient_norm_stats([0.5, 2.0, 3.5, float("nan")], 1.0) == {"ppo/grad_norm": 2.0, "ppo/grad_clipped": 2 / 3}
    assert gradient_norm_stats([0.5, 1.5], None) == {"ppo/grad_norm": 1.0, "ppo/grad_clipped": 0.0}
    assert gradient_norm_stats([float("inf")], 1.0) == {}
