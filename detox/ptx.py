"""PPO-ptx: a language-modelling term on text the policy must keep, beside PPO's loss (Ouyang et al. 2022).

InstructGPT mixed pretraining gradients into PPO to pay less "alignment tax" on the tasks the model already did
well. Here the corpus is whatever the user must keep: for an unlearning recipe, its retain text. Each PPO mini-batch
adds `ptx.coef` × the mean per-token negative log-likelihood of `ptx.batch_size` blocks of it. Which blocks depends
only on the PPO step and the mini-batch's place in it, so a resumed run draws the blocks an uninterrupted one would.
"""

from __future__ import annotations

import torch

from detox import losses
from detox.blocks import Blocks, load_blocks, pad_blocks, seeded_batch
from detox.config import PtxConfig


class RetainLM:
    """The ptx corpus as token blocks, and the loss of one mini-batch's draw of them."""

    def __init__(self, cfg: PtxConfig, tokenizer, seed: int):
        self.cfg, self.seed = cfg, seed
        self.pad_id = tokenizer.pad_token_id  # detox.models.load_tokenizer always sets one
        self.blocks: Blocks = load_blocks(cfg.corpus, cfg, tokenizer, "ptx.corpus")

    def batch(self, position: int, rank: int, world: int, device) -> tuple[torch.Tensor, ...]:
        """(input_ids, attention_mask, labels) of this rank's blocks for the `position`-th mini-batch of the run."""
        index = seeded_batch(len(self.blocks), self.cfg.batch_size, position, rank, world, self.seed)
        return pad_blocks([self.blocks.ids[i] for i in index], self.pad_id, device,
                          [self.blocks.starts[i] for i in index])

    def loss(self, model, position: int, rank: int, world: int, device) -> torch.Tensor:
        """Mean NLL per token of the drawn blocks under `model` (a PolicyWithValueHead, wrapped or not): the
        language model alone, called through the policy's forward so that sharding engines see the call."""
        ids, mask, labels = self.batch(position, rank, world, device)
        logits = model(ids, mask, lm_task="lm", lm_kwargs={"use_cache": False}).logits
        return losses.nll(*losses.shift_for_next_token(logits, labels))
