"""The PPO loop: rollout -> score -> experience -> optimise, as named and timed phases. The math lives in ppo.py."""

from __future__ import annotations

import math
import resource
import time
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from detox import ppo
from detox.config import TrainConfig
from detox.data import step_prompts
from detox.experience import Experience, make_experience, response_forward
from detox.forget_loss import ForgetLM
from detox.generation import decode_responses, draw_lengths, sample, tokenize_prompts
from detox.judge_specs import parse_judges
from detox.judges import build_judge
from detox.models import LMView
from detox.ptx import RetainLM
from detox.sharding import configure_deepspeed, is_sharded, torch_optimizer
from detox.state import save_training_checkpoint
from rewards import RewardError


class NonFiniteLossError(RuntimeError):
    """A loss or gradient turned NaN/inf and the run was configured to stop on it."""


class PPOTrainer:
    """Owns the optimisation state of one run; `step()` performs one PPO iteration on one batch of prompts."""

    def __init__(self, cfg: TrainConfig, accelerator, models, tokenizer, prompts: list[str], composer):
        self.cfg, self.accelerator, self.models, self.tokenizer = cfg, accelerator, models, tokenizer
        self.prompts, self.composer = prompts, composer
        if is_sharded(accelerator) and models.reference is not None:
            # The frozen reference would be a second, unsharded model beside the sharded policy (and the cached
            # trunk hands the decoder a shortened layer list, which the engines' per-layer hooks must not see).
            raise ValueError(
                f"{accelerator.distributed_type.value} shards the policy, but lora.enabled is false: the frozen "
                f"reference copy would not be sharded. Set lora.enabled: true (the reference is then the policy "
                f"with its adapters off), or train with accelerate_configs/multi_gpu.yaml / multi_cpu.yaml."
            )
        params = [p for p in models.policy.parameters() if p.requires_grad]
        # On CPU, AdamW's default implementation updates one tensor at a time; the fused kernel is ~6x faster there.
        fused = True if accelerator.device.type == "cpu" else None
        optimizer = torch.optim.AdamW(params, lr=cfg.ppo.learning_rate, weight_decay=cfg.ppo.weight_decay, fused=fused)
        configure_deepspeed(accelerator, cfg.ppo.mini_batch_size, cfg.ppo.gradient_accumulation_steps)
        self.model, self.optimizer = accelerator.prepare(models.policy, optimizer)
        # The schedule advances once per PPO step on every process, so it stays outside accelerate's wrapper.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(torch_optimizer(self.optimizer), self._lr_factor)
        self.kl_ctl = (
            ppo.AdaptiveKLController(cfg.ppo.init_kl_coef, cfg.ppo.target_kl, cfg.ppo.kl_horizon)
            if cfg.ppo.adaptive_kl
            else ppo.FixedKLController(cfg.ppo.init_kl_coef)
        )
        self.step_index = 0
        self.timings: dict[str, float] = {}
        self.judges = build_training_judges(cfg.logging.judges)
        self.retain_lm = RetainLM(cfg.ptx, tokenizer, cfg.ppo.seed) if cfg.ptx.corpus else None
        self.forget_lm = ForgetLM(cfg.forget_loss, tokenizer, cfg.ppo.seed) if cfg.forget_loss.corpus else None

    def _lr_factor(self, step: int) -> float:
        cfg = self.cfg.ppo
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        if cfg.lr_scheduler == "linear":
            return max(0.0, 1.0 - progress)
        if cfg.lr_scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    @contextmanager
    def _timed(self, phase: str):
        start = time.perf_counter()
        yield
        self.timings[f"time/{phase}"] = time.perf_counter() - start

    def batch_prompts(self, step: int) -> list[str]:
        """This process's prompts at `step` (detox.data.step_prompts): a resumed run sees exactly the prompts an
        uninterrupted one would."""
        return step_prompts(self.prompts, step, self.cfg.ppo.batch_size, self.cfg.ppo.seed,
                            self.accelerator.num_processes, self.accelerator.process_index)

    def step(self) -> tuple[dict[str, float], list[dict]]:
        """One PPO iteration; returns the step's metrics and its sample rows (prompt, completion, rewards)."""
        step_start = time.perf_counter()
        self.timings = {}  # this step's phases only: a judge skipped this step leaves no stale time/judge
        prompts = self.batch_prompts(self.step_index)
        policy = self.models.policy
        with self._timed("generate"):
            policy.eval()
            query_ids, query_mask = tokenize_prompts(self.tokenizer, prompts, self.accelerator.device)
            lengths = draw_lengths(len(prompts), self.cfg.generation)
            samples = sample(LMView(policy), self.tokenizer, query_ids, query_mask, lengths, self.cfg.generation)
            completions = decode_responses(self.tokenizer, samples)
        with self._timed("score"):
            completion_ids = [r[m.bool()].tolist() for r, m in zip(samples.response_ids, samples.response_mask)]
            total, components = self.composer(prompts, completions, completion_ids=completion_ids)
            scores = total.to(self.accelerator.device, torch.float32)
            if self.cfg.ppo.reward_clip is not None:
                scores = scores.clamp(-self.cfg.ppo.reward_clip, self.cfg.ppo.reward_clip)
        judged = self._judge(completions) if (self.step_index + 1) % self.cfg.logging.judge_every == 0 else {}
        with self._timed("forward"):
            experience = make_experience(
                self.models,
                samples,
                scores,
                self.kl_ctl.value,
                self.cfg.ppo,
                self.cfg.ppo.mini_batch_size,
                self.cfg.generation.temperature,
            )
        with self._timed("update"):
            policy.train()
            update_stats = self.optimise(experience)
            if update_stats["ppo/skipped_updates"]:
                self._check_policy_finite(experience)
            self.scheduler.step()
        stats = self._rollout_stats(experience, components, judged) | update_stats
        self.kl_ctl.update(stats["objective/kl"], self.cfg.ppo.batch_size * self.accelerator.num_processes)
        self.step_index += 1
        self.timings["time/step"] = time.perf_counter() - step_start
        rows = [
            {"prompt": p, "completion": c, **{f"reward/{k}": float(v[i]) for k, v in components.items()},
             **{f"judge/{k}": float(v[i]) for k, v in judged.items()}}
            for i, (p, c) in enumerate(zip(prompts, completions))
        ]
        return stats | self.timings, rows

    def optimise(self, experience: Experience) -> dict[str, float]:
        """`ppo_epochs` passes of clipped-surrogate updates over shuffled mini-batches."""
        cfg = self.cfg.ppo
        collected: dict[str, list[float]] = {}
        skipped = epochs_done = 0
        grad_norms: list[float] = []
        per_epoch = cfg.batch_size // cfg.mini_batch_size
        for epoch in range(cfg.ppo_epochs):
            order = torch.randperm(cfg.batch_size)
            approxkls = []
            for start in range(0, cfg.batch_size, cfg.mini_batch_size):
                batch = experience.select(order[start : start + cfg.mini_batch_size])
                # the mini-batch's place in the whole run: it alone decides which ptx and forget blocks it draws
                position = (self.step_index * cfg.ppo_epochs + epoch) * per_epoch + start // cfg.mini_batch_size
                with self.accelerator.accumulate(self.model):
                    loss, stats = self._loss(batch, position)
                    self.accelerator.backward(loss)
                    if self.accelerator.sync_gradients:
                        applied, grad_norm = self._apply_gradients(loss)
                        skipped += not applied
                        grad_norms.append(grad_norm)
                for key, value in stats.items():
                    collected.setdefault(key, []).append(value)
                approxkls.append(stats["ppo/approxkl"])
            epochs_done += 1
            if cfg.early_stop_approxkl is not None and self._mean(approxkls) > cfg.early_stop_approxkl:
                break
        out = {key: self._mean(values) for key, values in collected.items()}
        out |= ppo.gradient_norm_stats(grad_norms, cfg.max_grad_norm)
        return out | {"ppo/epochs": epochs_done, "ppo/skipped_updates": skipped, "ppo/lr": self.scheduler.get_last_lr()[0]}

    def _policy_forward(self, batch: Experience, with_entropy: bool):
        """Current log-probs, values and (optionally) entropy of a mini-batch's response tokens."""
        logprobs, values, entropy, _ = response_forward(
            self.model,
            batch.input_ids,
            batch.attention_mask,
            batch.response_mask.shape[1],
            self.cfg.generation.temperature,
            with_entropy=with_entropy,
            trunk=batch.trunk,
        )
        return logprobs, values, entropy

    def _loss(self, batch: Experience, position: int) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg.ppo
        mask = batch.response_mask.float()
        # with ent_coef 0 the entropy adds nothing to the loss or its gradient, so it is not computed
        logprobs, values, entropy = self._policy_forward(batch, with_entropy=cfg.ent_coef != 0)
        pg_loss, pg_stats = ppo.policy_loss(logprobs, batch.logprobs, batch.advantages, mask, cfg.cliprange)
        vf_loss, vf_stats = ppo.value_loss(values.float(), batch.values, batch.returns, mask, cfg.cliprange_value)
        loss = pg_loss + cfg.vf_coef * vf_loss
        if entropy is not None:
            loss = loss - cfg.ent_coef * ppo.masked_mean(entropy, mask)
        stats = {}
        if self.retain_lm is not None:
            acc = self.accelerator
            ptx_loss = self.retain_lm.loss(self.model, position, acc.process_index, acc.num_processes, acc.device)
            loss = loss + self.cfg.ptx.coef * ptx_loss
            stats["ppo/loss/ptx"] = ptx_loss.item()
        if self.forget_lm is not None:
            acc = self.accelerator
            forget_loss, forget_stats = self.forget_lm.loss(self.model, self.models.reference_lm(), position,
                                                            acc.process_index, acc.num_processes, acc.device)
            loss = loss + self.cfg.forget_loss.coef * forget_loss
            stats |= {"ppo/loss/forget": forget_loss.item()} | forget_stats
        stats |= {
            "ppo/loss/policy": pg_loss.item(),
            "ppo/loss/value": vf_loss.item(),
            "ppo/loss/total": loss.item(),
            "ppo/clipfrac": float(pg_stats["clipfrac"]),
            "ppo/approxkl": float(pg_stats["approxkl"]),
            "ppo/policykl": float(pg_stats["policykl"]),
            "ppo/val_clipfrac": float(vf_stats["clipfrac"]),
        }
        return loss, stats

    def _apply_gradients(self, loss: torch.Tensor) -> tuple[bool, float]:
        """Clip and apply the accumulated gradients. Returns whether they were applied (not when they are not
        finite) and their norm before clipping."""
        max_norm = self.cfg.ppo.max_grad_norm if self.cfg.ppo.max_grad_norm is not None else float("inf")
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
        finite = bool(torch.isfinite(torch.as_tensor(grad_norm)).item()) and bool(torch.isfinite(loss).item())
        finite = bool(self.accelerator.reduce(torch.tensor(float(finite), device=loss.device), "min").item())
        if finite:
            self.optimizer.step()
        elif self.cfg.ppo.nonfinite_loss == "stop":
            raise NonFiniteLossError(
                f"step {self.step_index + 1}: loss {loss.item()} / gradient norm {float(grad_norm)} is not finite; "
                f"this update was not applied and the step was not saved. Lower ppo.learning_rate, or set "
                f"ppo.nonfinite_loss: skip."
            )
        self.optimizer.zero_grad(set_to_none=True)
        return finite, float(grad_norm)

    @torch.no_grad()
    def _check_policy_finite(self, experience: Experience) -> None:
        """Stop when skipping cannot help: the weights themselves diverged.

        Skipping an update rescues a run from one bad batch. After an update sends the weights far out (a learning
        rate orders of magnitude too high leaves them finite but ~1e30), every later loss is NaN and the next rollout
        crashes inside sampling with an unrelated message; this re-reads the first mini-batch with the current weights
        and raises instead, before the step is logged or saved.
        """
        batch = experience.select(torch.arange(self.cfg.ppo.mini_batch_size))
        logprobs, values, _ = self._policy_forward(batch, with_entropy=False)
        mask = batch.response_mask.bool()
        finite = bool(torch.isfinite(logprobs[mask]).all()) and bool(torch.isfinite(values[mask]).all())
        finite = bool(self.accelerator.reduce(torch.tensor(float(finite), device=logprobs.device), "min").item())
        if not finite:
            policy = self.accelerator.unwrap_model(self.model)
            largest = max(p.detach().abs().max().item() for p in policy.parameters() if p.requires_grad)
            raise NonFiniteLossError(
                f"step {self.step_index + 1}: after skipping non-finite updates, the policy's outputs on its own "
                f"rollout are still not finite (largest trainable |weight| {largest:.3g}): the weights diverged and "
                f"skipping cannot recover them. The step was not saved; lower ppo.learning_rate "
                f"({self.cfg.ppo.learning_rate}) and resume from the last checkpoint."
            )

    def _judge(self, completions: list[str]) -> dict[str, torch.Tensor]:
        """Judge name -> (B,) P(toxic) of this batch's completions under each independent judge."""
        with self._timed("judge"):
            return {name: torch.as_tensor(judge.toxicity(completions), dtype=torch.float32)
                    for name, judge in self.judges.items()}

    def _rollout_stats(
        self, exp: Experience, components: dict[str, torch.Tensor], judged: dict[str, torch.Tensor]
    ) -> dict[str, float]:
        mask = exp.response_mask.float()
        local = {
            "objective/kl": (exp.kl * mask).sum(1).mean(),
            "objective/kl_coef": torch.tensor(self.kl_ctl.value),
            "objective/entropy": ppo.masked_mean(exp.entropy, mask),
            "reward/total": exp.scores.mean(),
            "reward/total_std": exp.scores.std() if exp.scores.numel() > 1 else torch.tensor(0.0),
            "ppo/returns/mean": ppo.masked_mean(exp.returns, mask),
            "ppo/values/mean": ppo.masked_mean(exp.values, mask),
            "ppo/advantages/mean": ppo.masked_mean(exp.advantages, mask),
            "tokens/response_length": mask.sum(1).mean(),
        }
        for name, values in components.items():
            local[f"reward/{name}/mean"] = values.float().mean()
            local[f"reward/{name}/std"] = values.float().std() if values.numel() > 1 else torch.tensor(0.0)
        for name, values in judged.items():
            local[f"judge/{name}/mean"] = values.mean()
        names = sorted(local)
        stacked = torch.stack([local[k].float().to(self.accelerator.device) for k in names])
        reduced = self.accelerator.reduce(stacked, "mean")
        return dict(zip(names, reduced.tolist()))

    def _mean(self, values: list[float]) -> float:
        local = torch.tensor(sum(values) / max(1, len(values)), device=self.accelerator.device)
        return float(self.accelerator.reduce(local, "mean"))


def build_training_judges(specs: list[str]) -> dict:
    """Judge name -> judge (detox.judges), on the CPU: a batch of completions takes them well under a second."""
    return {j.name: build_judge(j, device="cpu") for j in parse_judges(specs)} if specs else {}


def peak_memory_gb(device: torch.device) -> float:
    """Peak GPU memory of this process on CUDA, else its peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def console_line(step: int, total: int, stats: dict[str, float]) -> str:
    return (
        f"step {step}/{total} | reward {stats['reward/total']:+.3f} | kl {stats['objective/kl']:.3f} "
        f"| beta {stats['objective/kl_coef']:.3f} | entropy {stats['objective/entropy']:.2f} "
        f"| clipfrac {stats['ppo/clipfrac']:.2f} | {stats['time/step']:.1f} s"
    )


def train(trainer: PPOTrainer, tracker, probes, output_dir, config: dict) -> None:
    """Run steps until `ppo.steps`, logging, probing and checkpointing on the configured schedule."""
    cfg, accelerator = trainer.cfg, trainer.accelerator
    log, ckpt = cfg.logging, cfg.checkpoint
    bar = tqdm(total=cfg.ppo.steps, initial=trainer.step_index, desc="ppo", disable=not accelerator.is_main_process)
    last_saved = trainer.step_index
    if trainer.step_index == 0:
        tracker.log(probes.record(LMView(trainer.models.policy), 0) | trainer.models.memory_report, step=0)
    while trainer.step_index < cfg.ppo.steps:
        try:
            stats, rows = trainer.step()
        except RewardError:
            # Rewards run before any update, so the weights are still those of the last finished step: keep them.
            if trainer.step_index > last_saved:
                save_training_checkpoint(trainer, output_dir, ckpt.keep_last, config)
            raise
        step, final = trainer.step_index, trainer.step_index == cfg.ppo.steps
        stats["memory/peak_gb"] = peak_memory_gb(accelerator.device)
        if step % log.log_every == 0 or final:
            stats |= probes.record(LMView(trainer.models.policy), step)
            tracker.log(stats, step=step)
        if step % log.sample_every == 0 or final:
            tracker.log_samples(rows[: log.num_samples], step=step)
        bar.update(1)
        if accelerator.is_main_process:
            bar.write(console_line(step, cfg.ppo.steps, stats))
        if step % ckpt.save_every == 0 or final:
            save_training_checkpoint(trainer, output_dir, ckpt.keep_last, config)
            last_saved = step
    bar.close()
