"""TRL's group-baseline trainers (GRPO, RLOO) set up from the PPO run config, so every preset in configs/ works.

`ppo.batch_size` counts completions per rollout: batch_size / num_generations prompts, num_generations each. A
rollout is split into mini-batches of `ppo.mini_batch_size` and reused for `ppo.ppo_epochs` passes (TRL's
`num_iterations`), as in the PPO loop; TRL counts optimiser steps, so steps, logging and saving are scaled by the
optimiser steps per rollout. What TRL's loop lacks: a value head, an adaptive KL coefficient (beta stays
`ppo.init_kl_coef`) and per-sample response lengths (responses run to EOS or `generation.max_new_tokens`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from peft import LoraConfig

from detox.config import PPOConfig, TrainConfig

PPO_ONLY = ("gamma", "lam", "cliprange_value", "vf_coef", "ent_coef", "kl_estimator", "target_kl", "kl_horizon",
            "whiten_rewards", "reward_clip", "early_stop_approxkl", "nonfinite_loss")
"""PPOConfig fields that TRL's GRPO/RLOO loop has no counterpart for (not `adaptive_kl`: TRL's beta is fixed)."""


@dataclass
class GroupRunConfig(TrainConfig):
    """train_ppo.py's run config plus the group-baseline algorithm (`--algo`) and its group size."""

    algo: Literal["grpo", "rloo"] = "grpo"
    """TRL trainer: `grpo` (GRPOTrainer, group-normalised advantages) or `rloo` (RLOOTrainer, leave-one-out
    baseline)."""
    num_generations: int = 4
    """Completions sampled per prompt (the group the baseline is computed over); must divide ppo.batch_size."""

    def __post_init__(self):
        super().__post_init__()
        if self.ptx.corpus:
            raise ValueError(f"ptx.corpus ('{self.ptx.corpus}'): TRL's GRPO and RLOO trainers have no language-"
                             f"modelling term beside their loss; train with train_ppo.py, or drop the ptx section.")
        if self.forget_loss.corpus:
            raise ValueError(f"forget_loss.corpus ('{self.forget_loss.corpus}'): TRL's GRPO and RLOO trainers have no "
                             f"unlearning term beside their loss; train with train_ppo.py, or drop the forget_loss "
                             f"section.")
        if self.num_generations < 2 or self.ppo.batch_size % self.num_generations:
            raise ValueError(
                f"num_generations ({self.num_generations}) must be >= 2 and divide ppo.batch_size "
                f"({self.ppo.batch_size}), the completions per rollout; e.g. --num_generations 4 --ppo.batch_size 16."
            )


def unused_ppo_settings(cfg: GroupRunConfig) -> list[str]:
    """`ppo.<field>=<value>` for each PPO-only field set away from its default: the user meant it, and it is unused."""
    default = PPOConfig()
    return [f"ppo.{n}={getattr(cfg.ppo, n)}" for n in PPO_ONLY if getattr(cfg.ppo, n) != getattr(default, n)]


def trl_args(cfg: GroupRunConfig, report_to: list[str] | None, output_dir: Path, reward_weights: list[float]) -> Any:
    """The GRPOConfig or RLOOConfig of the run."""
    # lazy: only the GRPO/RLOO and SFT paths need TRL, and importing it costs seconds
    from trl import GRPOConfig, RLOOConfig

    ppo, gen = cfg.ppo, cfg.generation
    n_mini = ppo.batch_size // ppo.mini_batch_size
    per_rollout = n_mini * ppo.ppo_epochs // ppo.gradient_accumulation_steps  # PPOConfig checks the divisibility
    cls = {"grpo": GRPOConfig, "rloo": RLOOConfig}[cfg.algo]
    return cls(
        output_dir=str(output_dir),
        run_name=cfg.logging.run_name or output_dir.resolve().name,
        report_to=report_to or "none",
        project=cfg.logging.project,
        logging_steps=cfg.logging.log_every * per_rollout,
        save_strategy="steps",
        save_steps=cfg.checkpoint.save_every * per_rollout,
        save_total_limit=cfg.checkpoint.keep_last,
        seed=ppo.seed,
        max_steps=ppo.steps * per_rollout,
        learning_rate=ppo.learning_rate,
        lr_scheduler_type=ppo.lr_scheduler,
        warmup_steps=ppo.warmup_steps,
        weight_decay=ppo.weight_decay,
        max_grad_norm=ppo.max_grad_norm or 0.0,  # 0 turns clipping off in transformers' Trainer
        per_device_train_batch_size=ppo.mini_batch_size,
        steps_per_generation=n_mini,  # one generation batch = one rollout of ppo.batch_size completions
        gradient_accumulation_steps=ppo.gradient_accumulation_steps,
        num_iterations=ppo.ppo_epochs,
        num_generations=cfg.num_generations,
        beta=ppo.init_kl_coef,
        epsilon=ppo.cliprange,
        reward_weights=reward_weights,
        max_completion_length=gen.max_new_tokens,
        temperature=gen.temperature,
        top_k=gen.top_k,
        top_p=gen.top_p,
        use_vllm=False,
        gradient_checkpointing=cfg.model.gradient_checkpointing,  # TRL turns it on by default
        bf16=cfg.model.dtype == "bfloat16",  # TRL defaults to bf16 autocast, even on CPU
        model_init_kwargs={"dtype": cfg.model.dtype, "revision": cfg.model.revision},
        trust_remote_code=cfg.model.trust_remote_code,
    )


def peft_config(cfg: GroupRunConfig):
    """The LoRA adapter TRL attaches, from `lora:`; None trains all weights."""
    if not cfg.lora.enabled:
        return None

    lora = cfg.lora
    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
