"""A loss on the text to forget, beside PPO's loss: what the loss-based baselines have and PPO's rewards lack.

PPO's forget rewards read only what the policy samples, 20-30 tokens at a time, so text the policy rarely writes
(a play's exact lines, its speakers' headers) gets little signal. This term reads the text itself: each PPO
mini-batch adds `forget_loss.coef` × NPO's loss (or gradient ascent's) on `forget_loss.batch_size` blocks of the
forget corpus. The losses are the pure functions of detox.losses, as in the baselines; NPO's reference is PPO's own
(the starting model), whose log-likelihood of each block is computed once and kept. Which blocks a mini-batch draws
depends only on its place in the run, so a resumed run draws the blocks an uninterrupted one would.
"""

from __future__ import annotations

import torch

from detox import losses
from detox.blocks import Blocks, load_blocks, pad_blocks, seeded_batch
from detox.config import ForgetLossConfig

SEED_SALT = 1
"""Offsets the draw's seed from ptx's, so that the two corpora are not walked in lockstep."""


class ForgetLM:
    """The forget corpus as token blocks, and the unlearning loss of one mini-batch's draw of them."""

    def __init__(self, cfg: ForgetLossConfig, tokenizer, seed: int):
        self.cfg, self.seed = cfg, seed + SEED_SALT
        self.pad_id = tokenizer.pad_token_id  # detox.models.load_tokenizer always sets one
        self.blocks: Blocks = load_blocks(cfg.corpus, cfg, tokenizer, "forget_loss.corpus")
        self._reference_logprob: dict[int, float] = {}

    def draw(self, position: int, rank: int, world: int) -> list[int]:
        """Indices of this rank's blocks for the `position`-th mini-batch of the run."""
        return seeded_batch(len(self.blocks), self.cfg.batch_size, position, rank, world, self.seed)

    def batch(self, index: list[int], device) -> tuple[torch.Tensor, ...]:
        """(input_ids, attention_mask, labels) of the blocks `index`."""
        return pad_blocks([self.blocks.ids[i] for i in index], self.pad_id, device,
                          [self.blocks.starts[i] for i in index])

    def loss(self, model, reference, position: int, rank: int, world: int, device) -> tuple[torch.Tensor, dict]:
        """The term and its statistics for one mini-batch. `model` is the policy (a PolicyWithValueHead, wrapped or
        not), called through its forward so that sharding engines see the call; `reference` computes the reference
        log-probabilities (detox.models.Models.reference_lm())."""
        index = self.draw(position, rank, world)
        ids, mask, labels = self.batch(index, device)
        logits = model(ids, mask, lm_task="lm", lm_kwargs={"use_cache": False}).logits
        logits, shifted = losses.shift_for_next_token(logits, labels)
        with torch.no_grad():
            stats = {"forget/nll": losses.nll(logits, shifted).item()}
        if self.cfg.method == "gradient_ascent":
            if self.cfg.max_nll is None:
                return losses.gradient_ascent_loss(logits, shifted), stats
            return losses.bounded_ascent_loss(logits, shifted, self.cfg.max_nll), stats
        policy_lp = losses.sequence_logprob(logits, shifted)
        reference_lp = self.reference_logprob(reference, index, device)
        stats["forget/log_ratio"] = (policy_lp.detach() - reference_lp).mean().item()
        return losses.npo_loss(policy_lp, reference_lp, self.cfg.beta), stats

    @torch.no_grad()
    def reference_logprob(self, reference, index: list[int], device) -> torch.Tensor:
        """log π_ref of each block `index` (B,), computed for the blocks not seen before; the reference is frozen."""
        missing = sorted({i for i in index if i not in self._reference_logprob})
        if missing:
            ids, mask, labels = self.batch(missing, device)
            logits = reference(input_ids=ids, attention_mask=mask, use_cache=False).logits
            values = losses.sequence_logprob(*losses.shift_for_next_token(logits, labels))
            self._reference_logprob.update(zip(missing, values.float().tolist()))
        return torch.tensor([self._reference_logprob[i] for i in index], device=device)
