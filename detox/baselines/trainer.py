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
from detox.baselines.config import MethodConfig, UnlearnConfig
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
    learned: torch.Tensor
    """(B, T) bool: the tokens being unlearned, at their own positions (not padding, not a record's prompt)."""
    hidden_states: tuple[torch.Tensor, ...] | None = None
    """(layers + 1) x (B, T, H) the model's hidden states (index 0: embeddings), for HIDDEN_STATE_METHODS only."""


def gradient_ascent(trainer: UnlearnTrainer, forget: ForgetBatch, stats: dict[str, float]) -> torch.Tensor:
    return losses.gradient_ascent_loss(forget.logits, forget.labels)


def gradient_difference(trainer: UnlearnTrainer, forget: ForgetBatch, stats: dict[str, float]) -> torch.Tensor:
    retain_logits, retain_labels = trainer.retain_logits(stats)
    return losses.gradient_difference_loss(forget.logits, forget.labels, retain_logits, retain_labels,
                                           trainer.cfg.method.retain_weight)


def plus_retain_nll(trainer: UnlearnTrainer, loss: torch.Tensor, stats: dict[str, float]) -> torch.Tensor:
    """`loss` + retain_weight * NLL(retain) when a retain corpus is given (NPO+RT), else `loss`."""
    if not trainer.retain:
        return loss
    retain_logits, retain_labels = trainer.retain_logits(stats)
    return loss + trainer.cfg.method.retain_weight * losses.nll(retain_logits, retain_labels)


def npo(trainer: UnlearnTrainer, forget: ForgetBatch, stats: dict[str, float]) -> torch.Tensor:
    """NPO against the reference model, plus the retain NLL (NPO+RT) when a retain corpus is given."""
    with torch.no_grad():
        ref_logits = trainer.forward_logits(trainer.models.reference_lm(), forget.ids, forget.mask)[:, :-1]
    policy_lp = losses.sequence_logprob(forget.logits, forget.labels)
    reference_lp = losses.sequence_logprob(ref_logits, forget.labels)
    loss = losses.npo_loss(policy_lp, reference_lp, trainer.cfg.method.beta)
    stats["npo/log_ratio"] = (policy_lp - reference_lp).mean().item()
    return plus_retain_nll(trainer, loss, stats)


def simnpo(trainer: UnlearnTrainer, forget: ForgetBatch, stats: dict[str, float]) -> torch.Tensor:
    """SimNPO (no reference model), plus the retain NLL when a retain corpus is given."""
    logprobs, counted = losses.token_logprobs(forget.logits, forget.labels)
    policy_lp, lengths = logprobs.sum(dim=-1), counted.sum(dim=-1)
    method = trainer.cfg.method
    loss = losses.simnpo_loss(policy_lp, lengths, method.beta, method.gamma)
    stats["simnpo/mean_logprob"] = (policy_lp / lengths).mean().item()
    return plus_retain_nll(trainer, loss, stats)


def rmu(trainer: UnlearnTrainer, forget: ForgetBatch, stats: dict[str, float]) -> torch.Tensor:
    """RMU: the forget tokens' states at `method.layer` steered to c·u, the retain tokens' kept at the reference's."""
    method = trainer.cfg.method
    hidden = forget.hidden_states[method.layer]
    target = losses.rmu_control_vector(hidden.shape[-1], method.steering_coef, trainer.cfg.optim.seed)
    forget_loss = losses.rmu_forget_loss(hidden, forget.learned, target.to(hidden.device))
    ids, mask, labels = trainer.retain_batch()
    out = trainer.forward(trainer.model, ids, mask, hidden_states=True)
    with torch.no_grad():
        frozen = trainer.forward(trainer.models.reference_lm(), ids, mask, hidden_states=True)
        stats["retain/nll"] = losses.nll(*losses.shift_for_next_token(out.logits, labels)).item()
        stats["rmu/hidden_norm"] = hidden[forget.learned].float().norm(dim=-1).mean().item()
    retain_loss = losses.rmu_retain_loss(out.hidden_states[method.layer], frozen.hidden_states[method.layer],
                                         labels != losses.IGNORE)
    stats["rmu/forget_loss"], stats["rmu/retain_loss"] = forget_loss.item(), retain_loss.item()
    return forget_loss + method.retain_weight * retain_loss


def whp(trainer: UnlearnTrainer, forget: ForgetBatch, stats: dict[str, float]) -> torch.Tensor:
    alternative = pad_blocks([trainer.alternative_labels[i] for i in forget.index], trainer.tokenizer.pad_token_id,
                             trainer.accelerator.device)[2]
    return losses.alternative_label_loss(forget.logits, alternative[:, 1:])


METHOD_LOSSES = {
    "gradient_ascent": gradient_ascent,
    "gradient_difference": gradient_difference,
    "npo": npo,
    "simnpo": simnpo,
    "whp": whp,
    "rmu": rmu,
}
"""`method.name` -> the step's loss `(trainer, forget batch, stats) -> scalar`; a method may add to `stats`."""
HIDDEN_STATE_METHODS = frozenset({"rmu"})
"""Methods whose ForgetBatch carries the model's hidden states."""


def method_loss(name: str):
    """The loss of method `name`; an unknown name lists the methods."""
    if name not in METHOD_LOSSES:
        raise ValueError(f"method.name '{name}' is not a loss-based method; valid methods: {sorted(METHOD_LOSSES)}.")
    return METHOD_LOSSES[name]


def check_layer(method: MethodConfig, lm) -> None:
    """RMU steers hidden_states[method.layer], which must be a decoder layer's output: 1 to num_layers - 1 (the
    last entry is after the final norm)."""
    layers = lm.config.get_text_config().num_hidden_layers
    if not 1 <= method.layer <= layers - 1:
        raise ValueError(f"method.layer ({method.layer}) is out of range for this model's {layers} decoder layers: "
                         f"use 1 to {layers - 1}.")


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
        self.hidden_states = cfg.method.name in HIDDEN_STATE_METHODS
        if self.hidden_states:
            check_layer(cfg.method, lm)

    def _batch(self, blocks: list[list[int]], salt: int) -> list[int]:
        acc = self.accelerator
        return seeded_batch(len(blocks), self.cfg.optim.batch_size, self.step_index, acc.process_index,
                            acc.num_processes, self.cfg.optim.seed + salt)

    def forward(self, model, ids, mask, hidden_states: bool = False):
        """The output of `model` on a padded batch (no KV cache: one forward pass), with `.hidden_states` if asked."""
        return model(input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=hidden_states)

    def forward_logits(self, model, ids, mask):
        """(B, T, V) logits of `model` on a padded batch."""
        return self.forward(model, ids, mask).logits

    def retain_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This step's retain blocks: (B, T) input ids, attention mask and unshifted labels."""
        index = self._batch(self.retain, salt=1)
        return pad_blocks([self.retain.ids[i] for i in index], self.tokenizer.pad_token_id, self.accelerator.device,
                          [self.retain.starts[i] for i in index])

    def retain_logits(self, stats: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
        """Shifted logits and labels of this step's retain blocks under the model; logs their NLL in `stats`."""
        ids, mask, labels = self.retain_batch()
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
        out = self.forward(self.model, ids, mask, hidden_states=self.hidden_states)
        logits, shifted = losses.shift_for_next_token(out.logits, labels)
        with torch.no_grad():  # statistics only: no autograd graph kept beside the loss's own
            stats = {"forget/nll": losses.nll(logits, shifted).item()}
        forget = ForgetBatch(index, ids, mask, logits, shifted, labels != losses.IGNORE,
                             out.hidden_states if self.hidden_states else None)
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
