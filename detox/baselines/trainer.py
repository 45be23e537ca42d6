"""The loop of a loss-based unlearning baseline: forget (and retain) blocks -> loss -> AdamW step.

The losses are the pure functions of `detox.losses`; this module only feeds them batches. A step draws
`optim.batch_size` forget blocks (and as many retain blocks when the method uses them) from a seeded pass over each
corpus, derived from the step number alone, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from detox import losses
from detox.baselines.config import UnlearnConfig
from detox.blocks import pad_blocks, seeded_batch


@dataclass
class ForgetBatch:
    """One step's forget blocks and the model's predictions of them."""

    index: list[int]
    """Which forget blocks were drawn."""
    ids: torch.Tensor
    """(B, T) input ids, right-padded."""
    mask: torch.Tensor
    """(B, T) attention mask."""
    logits: torch.Tensor
    """(B, T-1, V) the model's logits at positions 0..T-2."""
    labels: torch.Tensor
    """(B, T-1) the tokens they predict (IGNORE on padding and prompts)."""


def gradient_ascent(trainer: UnlearnTrainer, forget: ForgetBatch, stats: dict[str, float]) -> torch.Tensor:
    return losses.gradient_ascent_loss(forget.logits, forget.labels)


def gradient_difference(trainer: UnlearnTrainer, forget: ForgetBatch, stats: dict[str, float]) -> torch.Tensor:
    retain_logits, retain_labels = trainer.retain_logits(stats)
    return losses.gradient_difference_loss(forget.logits, forget.labels, retain_logits, retain_labels,
                                           trainer.cfg.method.retain_weight)


def npo(trainer: UnlearnTrainer, forget: ForgetBatch, stats: dict[str, float]) -> torch.Tensor:
    """NPO against the reference model, plus the retain NLL (NPO+RT) when a retain corpus is given."""
    with torch.no_grad():
        ref_logits = trainer.forward_logits(trainer.models.reference_lm(), forget.ids, forget.mask)[:, :-1]
    policy_lp = losses.sequence_logprob(forget.logits, forget.labels)
    reference_lp = losses.sequence_logprob(ref_logits, forget.labels)
    loss = losses.npo_loss(policy_lp, reference_lp, trainer.cfg.method.beta)
    stats["npo/log_ratio"] = (policy_lp - reference_lp).mean().item()
    if trainer.retain:
        retain_logits, retain_labels = trainer.retain_logits(stats)
        loss = loss + trainer.cfg.method.retain_weight * losses.nll(retain_logits, retain_labels)
    return loss


def whp(trainer: UnlearnTrainer, forget: ForgetBatch, stats: dict[str, float]) -> torch.Tensor:
    alternative = pad_blocks([trainer.alternative_labels[i] for i in forget.index], trainer.tokenizer.pad_token_id,
                             trainer.accelerator.device)[2]
    return losses.alternative_label_loss(forget.logits, alternative[:, 1:])


METHOD_LOSSES = {
    "gradient_ascent": gradient_ascent,
    "gradient_difference": gradient_difference,
    "npo": npo,
    "whp": whp,
}
"""`method.name` -> the step's loss `(trainer, forget batch, stats) -> scalar`; a method may add to `stats`."""


def method_loss(name: str):
    """The loss of method `name`; an unknown name lists the methods."""
    if name not in METHOD_LOSSES:
        raise ValueError(f"method.name '{name}' is not a loss-based method; valid methods: {sorted(METHOD_LOSSES)}.")
    return METHOD_LOSSES[name]


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
        self.method_loss = method_loss(cfg.method.name)

    def _batch(self, blocks: list[list[int]], salt: int) -> list[int]:
        acc = self.accelerator
        return seeded_batch(len(blocks), self.cfg.optim.batch_size, self.step_index, acc.process_index,
                            acc.num_processes, self.cfg.optim.seed + salt)

    def forward_logits(self, model, ids, mask):
        """(B, T, V) logits of `model` on a padded batch (no KV cache: one forward pass)."""
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits

    def retain_logits(self, stats: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
        """Shifted logits and labels of this step's retain blocks under the model; logs their NLL in `stats`."""
        index = self._batch(self.retain, salt=1)
        ids, mask, labels = pad_blocks([self.retain.ids[i] for i in index], self.tokenizer.pad_token_id,
                                       self.accelerator.device, [self.retain.starts[i] for i in index])
        logits, shifted = losses.shift_for_next_token(self.forward_logits(self.model, ids, mask), labels)
        with torch.no_grad():
            stats["retain/nll"] = losses.nll(logits, shifted).item()
        return logits, shifted

    def step(self) -> dict[str, float]:
        """One update; returns the step's metrics."""
        start = time.perf_counter()
        cfg, device = self.cfg, self.accelerator.device
        pad = self.tokenizer.pad_token_id
        index = self._batch(self.forget, salt=0)
        ids, mask, labels = pad_blocks([self.forget.ids[i] for i in index], pad, device,
                                       [self.forget.starts[i] for i in index])
        self.model.train()
        logits, shifted = losses.shift_for_next_token(self.forward_logits(self.model, ids, mask), labels)
        with torch.no_grad():  # statistics only: no autograd graph kept beside the loss's own
            stats = {"forget/nll": losses.nll(logits, shifted).item()}
        forget = ForgetBatch(index, ids, mask, logits, shifted)
        loss = self.method_loss(self, forget, stats)
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
