"""Reusing the frozen shared layers' output (detox.models.Trunk) gives exactly the numbers of a full forward pass."""

from __future__ import annotations

import torch

from detox.config import LoraConfig, ModelConfig
from detox.experience import response_forward
from detox.models import Trunk, build_models

from conftest import save_tiny_lm


def test_trunk_forward_equals_the_full_forward(tiny_lm_path):
    # 2-layer model, 1 layer shared: the embeddings and layer 0 are frozen, layer 1 trains
    models = build_models(ModelConfig(name_or_path=tiny_lm_path, num_shared_layers=1), LoraConfig(enabled=False))
    assert models.trunk_layers == 1
    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding, as rollouts have
    with torch.no_grad():
        logprobs, values, entropy, hidden = response_forward(models.policy, ids, mask, 5)
        trunk = Trunk(1, hidden[1])
        assert torch.equal(response_forward(models.policy, ids, mask, 5, trunk=trunk)[0], logprobs)
        assert torch.equal(response_forward(models.policy, ids, mask, 5, trunk=trunk)[1], values)
        ref_full = response_forward(models.reference, ids, mask, 5, with_values=False)[0]
        ref_trunk = response_forward(models.reference, ids, mask, 5, with_values=False, trunk=trunk)[0]
        assert torch.equal(ref_trunk, ref_full)
    assert len(models.policy.lm.get_decoder().layers) == 2  # the layer list is restored after the call

    def grads(trunk):
        models.policy.zero_grad(set_to_none=True)
        logprobs, values, _, _ = response_forward(models.policy, ids, mask, 5, trunk=trunk)
        (logprobs.sum() + values.sum()).backward()
        return {n: p.grad.clone() for n, p in models.policy.named_parameters() if p.grad is not None}

    full, skipped = grads(None), grads(trunk)
    assert full.keys() == skipped.keys() and len(full) > 0
    for name in full:
        torch.testing.assert_close(skipped[name], full[name], rtol=0, atol=0, msg=name)


def test_no_trunk_when_layers_train(tiny_lm_path):
    # with LoRA every layer has trainable adapters, so nothing below them is constant
    models = build_models(ModelConfig(name_or_path=tiny_lm_path, num_shared_layers=1), LoraConfig(enabled=True))
    assert models.trunk_layers == 0


def test_no_trunk_for_decoders_that_rescale_or_rename_their_inputs(tmp_path, smollm2_path):
    # Gemma multiplies inputs_embeds by sqrt(hidden size): feeding it a hidden state would scale it twice
    from transformers import AutoTokenizer, GemmaConfig, GemmaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    save_tiny_lm(tmp_path, tokenizer, GemmaForCausalLM, GemmaConfig, head_dim=8)
    models = build_models(ModelConfig(name_or_path=str(tmp_path), num_shared_layers=1), LoraConfig(enabled=False))
    assert models.reference is not None
    assert models.trunk_layers == 0
