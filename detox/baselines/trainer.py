"""The loop of a loss-based unlearning baseline: forget (and retain) blocks -> loss -> AdamW step.

The losses are the pure functions of `detox.losses`; this module only feeds them batches. A step draws
`optim.batch_size` forget blocks (and as many retain blocks when the method uses them) from a seeded pass over each
corpus, derived from the step number alone, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import time

import torch

from detox import losses
from detox.baselines.config import UnlearnConfig
from detox.blocks import pad_blocks, seeded_batch


class UnlearnTrainer:
    """Optimisation state of one baseline run; `step()` performs one update on one batch."""

    def __init__(self, cfg: UnlearnConfig, accelerator, models, tokenizer, forget, retain, alternative_labels=None):
        self.cfg, self.accelerator, self.models, self.tokenizer = cfg, accelerator, models, tokenizer
        self.forget, self.retain, self.alternative_labels = forget, retain, alternative_labels
        lm = models.policy.lm
        params = [p for p in lm.parameters() if p.requires_grad]
        fused = True if accelerator.device.type == "cpu" else None
        optimizer = torch.optim.AdamW(params, lr=cfg.optim.learning_rate, weight_decay=cfg.optim.weight_decay,
                                      fused=fused)
        self.model, self.optimizer = accelerator.prepare(lm, optimizer)
        self.step_index = 0

    def _batch(self, blocks: list[list[int]], salt: int) -> list[int]:
        acc = self.accelerator
        return seeded_batch(len(blocks), self.cfg.optim.batch_size, self.step_index, acc.process_index,
                            acc.num_processes, self.cfg.optim.seed + salt)

    def _logits(self, model, ids, mask):
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits

    def step(self) -> dict[str, float]:
        """One update; returns the step's metrics."""
        start = time.perf_counter()
        cfg, device = self.cfg, self.accelerator.device
        pad = self.tokenizer.pad_token_id
        index = self._batch(self.forget, salt=0)
        ids, mask, labels = pad_blocks([self.forget.ids[i] for i in index], pad, device,
                                       [self.forget.starts[i] for i in index])
        self.model.train()
        logits, shifted = losses.shift_for_next_token(self._logits(self.model, ids, mask), labels)
        with torch.no_grad():  # statistics only: no autograd graph kept beside the loss's own
            stats = {"forget/nll": losses.nll(logits, shifted).item()}
        name = cfg.method.name
        if name == "gradient_ascent":
            loss = losses.gradient_ascent_loss(logits, shifted)
        elif name == "whp":
            alt = pad_blocks([self.alternative_labels[i] for i in index], pad, device)[2]
            loss = losses.alternative_label_loss(logits, alt[:, 1:])
        elif name == "npo":
            with torch.no_grad():
                ref_logits = self._logits(self.models.reference_lm(), ids, mask)[:, :-1]
            policy_lp = losses.sequence_logprob(logits, shifted)
            reference_lp = losses.sequence_logprob(ref_logits, shifted)
            loss = losses.npo_loss(policy_lp, reference_lp, cfg.method.beta)
            stats["npo/log_ratio"] = (policy_lp - reference_lp).mean().item()
        if name in ("gradient_difference", "npo") and self.retain:
            r_index = self._batch(self.retain, salt=1)
            r_ids, r_mask, r_labels = pad_blocks([self.retain.ids[i] for i in r_index], pad, device,
                                                 [self.retain.starts[i] for i in r_index])
            r_logits, r_shifted = losses.shift_for_next_token(self._logits(self.model, r_ids, r_mask), r_labels)
            with torch.no_grad():
                stats["retain/nll"] = losses.nll(r_logits, r_shifted).item()
            if name == "gradient_difference":
                loss = losses.gradient_difference_loss(logits, shifted, r_logits, r_shifted, cfg.method.retain_weight)
            else:
                loss = loss + cfg.method.retain_weight * losses.nll(r_logits, r_shifted)
        self.accelerator.backward(loss)
        max_norm = cfg.optim.max_grad_norm if cfg.optim.max_grad_norm is not None else float("inf")
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
        finite = bool(torch.isfinite(loss).item()) and bool(torch.isfinite(torch.as_tensor(grad_norm)).item())
        if finite:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_index += 1
        stats |= {"loss/total": loss.item(), "optim/grad_norm": float(grad_norm), "optim/skipped": float(not finite),
                  "time/step": time.perf_counter() - start}
        return self._reduce(stats)

    def _reduce(self, stats: dict[str, float]) -> dict[str, float]:
        names = sorted(stats)
        local = torch.tensor([stats[k] for k in names], device=self.accelerator.device)
        return dict(zip(names, self.accelerator.reduce(local, "mean").tolist()))

    @torch.no_grad()
    def samples(self, n: int, prefix_tokens: int = 16, new_tokens: int = 24) -> list[dict[str, str]]:
        """Greedy continuations of the first `n` forget blocks' opening tokens: the table that shows a collapse."""
        lm = self.accelerator.unwrap_model(self.model)
        lm.eval()
        rows = []
        for block, start in list(zip(self.forget.ids, self.forget.starts))[:n]:
            cut = start or prefix_tokens  # a record's own prompt, else the block's opening tokens
            prompt = torch.tensor([block[:cut]], device=self.accelerator.device)
            out = lm.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                              do_sample=False, pad_token_id=self.tokenizer.pad_token_id)
            rows.append({"prompt": self.tokenizer.decode(block[:cut]),
                         "completion": self.tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)})
        return rows
