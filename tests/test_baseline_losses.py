"""Unlearning baseline losses on small hand-made tensors, with the expected values worked out in the comments."""

from __future__ import annotations

import math

import pytest
import torch

from detox.losses import (
    IGNORE,
    alternative_label_loss,
    bounded_ascent_loss,
    gradient_ascent_loss,
    gradient_difference_loss,
    nll,
    npo_loss,
    rmu_control_vector,
    rmu_forget_loss,
    rmu_retain_loss,
    sequence_logprob,
    shift_for_next_token,
    simnpo_loss,
    whp_generic_logits,
    whp_labels,
)

LOG2 = math.log(2.0)


def two_token_batch():
    # Vocabulary of 2. Position 0: logits (0, 0) -> p = (1/2, 1/2). Position 1: logits (ln 3, 0) -> p = (3/4, 1/4).
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])
    return logits


def test_nll_and_sequence_logprob_by_hand():
    logits = two_token_batch()
    labels = torch.tensor([[1, 0]])  # log p = log 1/2 + log 3/4
    expected = math.log(0.5) + math.log(0.75)
    assert sequence_logprob(logits, labels).item() == pytest.approx(expected)
    assert nll(logits, labels).item() == pytest.approx(-expected / 2)


def test_ignored_positions_never_count():
    logits = two_token_batch()
    logits[0, 1] = float("nan")  # an ignored position may hold anything
    labels = torch.tensor([[1, IGNORE]])
    assert nll(logits, labels).item() == pytest.approx(LOG2)
    with pytest.raises(ValueError, match="every label is IGNORE"):
        nll(logits, torch.full((1, 2), IGNORE))


def test_shift_aligns_position_t_with_token_t_plus_1():
    logits = torch.arange(12.0).reshape(1, 3, 4)
    labels = torch.tensor([[7, 8, 9]])
    shifted_logits, shifted_labels = shift_for_next_token(logits, labels)
    assert shifted_logits.shape == (1, 2, 4) and shifted_labels.tolist() == [[8, 9]]
    assert torch.equal(shifted_logits[0, 0], logits[0, 0])


def test_gradient_ascent_is_minus_nll_and_gradient_difference_adds_retain():
    logits = two_token_batch()
    forget = torch.tensor([[1, 0]])  # NLL = (ln 2 + ln 4/3) / 2
    retain = torch.tensor([[0, 1]])  # NLL = (ln 2 + ln 4) / 2 = 1.5 ln 2
    forget_nll = (LOG2 + math.log(4 / 3)) / 2
    assert gradient_ascent_loss(logits, forget).item() == pytest.approx(-forget_nll)
    got = gradient_difference_loss(logits, forget, logits, retain, retain_weight=0.5)
    assert got.item() == pytest.approx(-forget_nll + 0.5 * 1.5 * LOG2)


def test_gradient_ascent_pushes_the_forget_token_down():
    logits = torch.zeros(1, 1, 2, requires_grad=True)
    gradient_ascent_loss(logits, torch.tensor([[0]])).backward()
    # The loss is -NLL = log p_0 with p = (1/2, 1/2): d/dz_0 = 1 - p_0 = 1/2 and d/dz_1 = -p_1 = -1/2,
    # so a descent step lowers the forget token's logit and raises the other one.
    assert logits.grad[0, 0].tolist() == pytest.approx([0.5, -0.5])


def test_bounded_ascent_caps_each_sequences_mean_nll_and_stops_its_gradient_past_the_bound():
    logits = two_token_batch()
    forget = torch.tensor([[1, 0]])  # token NLLs ln 2 and ln 4/3: the sequence's mean NLL is 0.490
    # a bound above it is plain ascent; a bound below it is the bound itself
    assert bounded_ascent_loss(logits, forget, 5.0).item() == pytest.approx(gradient_ascent_loss(logits, forget).item())
    assert bounded_ascent_loss(logits, forget, 0.3).item() == pytest.approx(-0.3)

    three = torch.zeros(3, 2, 2, requires_grad=True)
    three.data[1] = torch.tensor([[-3.0, 3.0], [-3.0, 3.0]])  # token 0 has NLL ln(1 + e^6) = 6.0025 at both places
    labels = torch.tensor([[0, 0], [0, 0], [IGNORE, IGNORE]])  # the third sequence counts no token: left out
    loss = bounded_ascent_loss(three, labels, 2.0)
    assert loss.item() == pytest.approx(-(LOG2 + 2.0) / 2)  # mean over the two counted sequences of min(NLL, 2)
    loss.backward()
    # sequence 0 (NLL ln 2 < 2) is pushed as ascent pushes it: d log p_0 / dz = (1/2, -1/2) per token, halved by the
    # mean over its 2 tokens and again by the mean over the 2 sequences; sequence 1 is past the bound: no gradient
    assert three.grad[0].flatten().tolist() == pytest.approx([0.125, -0.125, 0.125, -0.125])
    assert three.grad[1].abs().sum().item() == 0.0 and three.grad[2].abs().sum().item() == 0.0
    with pytest.raises(ValueError, match="max_nll"):
        bounded_ascent_loss(logits, forget, 0.0)
    with pytest.raises(ValueError, match="no token"):
        bounded_ascent_loss(logits, torch.full((1, 2), IGNORE), 1.0)


def test_npo_by_hand():
    # log-ratios 0 and ln 3 with beta = 2: softplus(0) = ln 2, softplus(2 ln 3) = ln(1 + 9) = ln 10.
    # L = (2 / beta) * mean = 1 * (ln 2 + ln 10) / 2.
    policy = torch.tensor([-1.0, -1.0 + math.log(3.0)])
    reference = torch.tensor([-1.0, -1.0])
    assert npo_loss(policy, reference, beta=2.0).item() == pytest.approx((LOG2 + math.log(10.0)) / 2)


def test_npo_gradient_is_gradient_ascent_weighted_by_sigmoid():
    # dL/d logpi for one sample: (2/beta) * beta * sigmoid(beta * r) = 2 sigmoid(beta r). At r = 0 that is 1,
    # exactly gradient ascent's d(logpi)/d(logpi); at r = -5 (beta = 1) it has shrunk to 2 sigmoid(-5) ~ 0.0134.
    for r, expected in [(0.0, 1.0), (-5.0, 2 / (1 + math.exp(5.0)))]:
        policy = torch.tensor([r], requires_grad=True)
        npo_loss(policy, torch.tensor([0.0]), beta=1.0).backward()
        assert policy.grad.item() == pytest.approx(expected)


def test_npo_reference_gets_no_gradient_and_beta_must_be_positive():
    reference = torch.tensor([0.0], requires_grad=True)
    npo_loss(torch.tensor([0.5], requires_grad=True), reference, beta=0.1).backward()
    assert reference.grad is None
    with pytest.raises(ValueError, match="beta"):
        npo_loss(torch.zeros(1), torch.zeros(1), beta=0.0)


def test_whp_generic_logits_by_hand():
    # Token 0: reinforced rose by 2 over the base -> 1 - 0.5 * 2 = 0. Token 1: fell -> unchanged 3.
    # Token 2: equal -> unchanged 2.
    base = torch.tensor([1.0, 3.0, 2.0])
    reinforced = torch.tensor([3.0, 1.0, 2.0])
    assert whp_generic_logits(base, reinforced, alpha=0.5).tolist() == [0.0, 3.0, 2.0]
    with pytest.raises(ValueError, match="alpha"):
        whp_generic_logits(base, reinforced, alpha=-1.0)


def test_whp_labels_flip_the_prediction_the_text_reinforced():
    # The base prefers token 0 (logit 2 vs 1.5); fine-tuning on the text raised token 0 to 4. With alpha = 1 the
    # generic logit of token 0 is 2 - (4 - 2) = 0, so the alternative label becomes token 1.
    base = torch.tensor([[[2.0, 1.5], [0.0, 1.0]]])
    reinforced = torch.tensor([[[4.0, 1.5], [0.0, 1.0]]])
    keep = torch.tensor([[True, False]])
    labels = whp_labels(whp_generic_logits(base, reinforced, alpha=1.0), keep)
    assert labels.tolist() == [[1, IGNORE]]
    # The fine-tuning loss is the NLL of those labels: position 0 with logits (0, 0) -> ln 2.
    assert alternative_label_loss(torch.zeros(1, 2, 2), labels).item() == pytest.approx(LOG2)


def test_simnpo_by_hand_on_two_lengths():
    # Sequence 1: log pi = -2 over 2 tokens -> mean -1; sequence 2: log pi = -6 over 3 tokens -> mean -2.
    # beta = 2, gamma = 0.5: softplus(2 * -1 + 0.5) = ln(1 + e^-1.5), softplus(2 * -2 + 0.5) = ln(1 + e^-3.5),
    # L = (2 / 2) * mean of the two.
    policy = torch.tensor([-2.0, -6.0])
    lengths = torch.tensor([2, 3])
    expected = (math.log1p(math.exp(-1.5)) + math.log1p(math.exp(-3.5))) / 2
    assert simnpo_loss(policy, lengths, beta=2.0, gamma=0.5).item() == pytest.approx(expected)
    # The same summed log-probability over more tokens is a higher mean token log-probability, and a higher
    # log-probability of the forget text is a higher loss.
    assert simnpo_loss(torch.tensor([-6.0]), torch.tensor([6]), beta=2.0).item() > \
        simnpo_loss(torch.tensor([-6.0]), torch.tensor([3]), beta=2.0).item()


def test_simnpo_grows_with_the_log_probability_and_checks_its_input():
    lengths = torch.tensor([4])
    low, high = (simnpo_loss(torch.tensor([lp]), lengths, beta=2.5) for lp in (-8.0, -4.0))
    assert high.item() > low.item()
    # gamma = 0 at log pi = 0: (2 / beta) ln 2, as NPO at log-ratio 0.
    assert simnpo_loss(torch.tensor([0.0]), lengths, beta=2.5).item() == pytest.approx(2 / 2.5 * LOG2)
    with pytest.raises(ValueError, match="beta"):
        simnpo_loss(torch.zeros(1), lengths, beta=0.0)
    with pytest.raises(ValueError, match="no counted token"):
        simnpo_loss(torch.zeros(2), torch.tensor([3, 0]), beta=1.0)


def test_simnpo_gradient_is_npo_weight_over_length():
    # dL/d logpi = (2/beta) * sigmoid(beta * logpi / |y| + gamma) * beta / |y| = 2 sigmoid(.) / |y|.
    # logpi = -4, |y| = 4, beta = 1, gamma = 1: sigmoid(-1 + 1) = 1/2, so the gradient is 2 * 1/2 / 4 = 0.25.
    policy = torch.tensor([-4.0], requires_grad=True)
    simnpo_loss(policy, torch.tensor([4]), beta=1.0, gamma=1.0).backward()
    assert policy.grad.item() == pytest.approx(0.25)


def test_rmu_control_vector_is_seeded_and_has_norm_c():
    u = rmu_control_vector(8, steering_coef=6.5, seed=3)
    assert u.norm().item() == pytest.approx(6.5)
    assert (u >= 0).all()  # entries drawn from [0, 1) before scaling
    assert torch.equal(u, rmu_control_vector(8, 6.5, seed=3))
    assert not torch.equal(u, rmu_control_vector(8, 6.5, seed=4))


def test_rmu_forget_loss_by_hand():
    target = torch.tensor([3.0, 4.0])
    hidden = target.expand(1, 3, 2).clone()
    mask = torch.tensor([[True, True, False]])
    assert rmu_forget_loss(hidden, mask, target).item() == 0.0
    # Token 0 off by (1, 1): mean square 1; token 1 off by (2, 0): mean square 2; token 2 is masked out, so what it
    # holds does not count. Mean over the two counted tokens: 1.5.
    hidden[0, 0] += torch.tensor([1.0, 1.0])
    hidden[0, 1] += torch.tensor([2.0, 0.0])
    hidden[0, 2] = 100.0
    assert rmu_forget_loss(hidden, mask, target).item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="over no token"):
        rmu_forget_loss(hidden, torch.zeros(1, 3, dtype=torch.bool), target)


def test_rmu_retain_loss_by_hand_and_no_gradient_to_the_frozen_states():
    frozen = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], requires_grad=True)
    mask = torch.tensor([[True, True]])
    assert rmu_retain_loss(frozen.detach().clone(), frozen, mask).item() == 0.0
    # Token 0 off by (0, 2): mean square 2; token 1 off by (-1, 1): mean square 1. Mean: 1.5.
    hidden = (frozen.detach() + torch.tensor([[[0.0, 2.0], [-1.0, 1.0]]])).requires_grad_()
    loss = rmu_retain_loss(hidden, frozen, mask)
    assert loss.item() == pytest.approx(1.5)
    loss.backward()
    assert frozen.grad is None
    # d/dh of (1/2 tokens) * (1/2 dims) * sum (h - f)^2 = (h - f) / 2.
    assert hidden.grad[0, 0].tolist() == pytest.approx([0.0, 1.0])
