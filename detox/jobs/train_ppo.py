"""Detoxify a causal language model with PPO against reward models: the job behind `train_ppo.py`.

    accelerate launch train_ppo.py                                  # offline default (SmolLM2, CPU-friendly)
    accelerate launch train_ppo.py --config configs/gpt-j-6b.yaml   # the TRL toxicity example's setup
    accelerate launch train_ppo.py --config configs/X.yaml --ppo.steps 100 --checkpoint.resume_from_checkpoint latest
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import set_seed

from detox import tracking
from detox.checkpoint import resolve_checkpoint
from detox.config import TrainConfig, parse_config
from detox.data import check_held_out, load_prompts, refuse_evaluation_only, render_prompts
from detox.launch import finish, start_run, trim_logs, write_heldout
from detox.models import build_models, load_tokenizer
from detox.probes import ProbeRecorder
from detox.sharding import sharding_on_cpu
from detox.state import config_dict, load_policy_weights, load_training_checkpoint, save_final
from detox.trainer import PPOTrainer, train
from rewards import RewardComposer


@dataclass
class Run:
    """Everything a run is made of, built before the first step."""

    cfg: Any
    accelerator: Any
    trainer: Any
    tracker: Any
    probes: Any
    output_dir: Path
    config: dict


def build(argv: list[str] | None = None) -> Run:
    """Parse the config, then load prompts, rewards, models and, when asked, the checkpoint to resume from."""
    cfg: TrainConfig = parse_config(argv, TrainConfig, __doc__)  # a bad field fails here, before any model loads
    refuse_evaluation_only(cfg.data)
    output_dir = start_run(cfg.checkpoint)

    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.ppo.gradient_accumulation_steps,
        log_with=tracking.accelerate_log_with(cfg.logging),
        project_dir=str(output_dir),
    )
    sharding_on_cpu(accelerator)
    accelerator.print(f"engine: {accelerator.distributed_type.value}, {accelerator.num_processes} process(es)")
    set_seed(cfg.ppo.seed, device_specific=True)  # each rank samples differently, reproducibly
    checkpoint = None
    if cfg.checkpoint.resume_from_checkpoint:
        checkpoint = resolve_checkpoint(cfg.checkpoint.resume_from_checkpoint, output_dir)
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
    prompts = load_prompts(cfg.data, tokenizer)
    accelerator.print(f"prompts: {len(prompts.train)} train, {len(prompts.heldout)} held out; {prompts.stats}")
    composer = RewardComposer(cfg.rewards)
    check_held_out(prompts.heldout, composer.fitted_prompts())
    models = build_models(cfg.model, cfg.lora)
    accelerator.print("memory: " + ", ".join(f"{k} {v:.3f}" for k, v in models.memory_report.items()))
    if checkpoint is not None:
        load_policy_weights(models.policy, checkpoint)  # before a sharding engine slices the weights
    train = render_prompts(prompts.train, tokenizer, cfg.data.chat_template)  # the text the policy continues
    trainer = PPOTrainer(cfg, accelerator, models, tokenizer, train, composer)
    if checkpoint is not None:
        load_training_checkpoint(trainer, checkpoint)
        if accelerator.is_main_process:
            trim_logs(output_dir, trainer.step_index)
        accelerator.print(f"resumed from {checkpoint} at step {trainer.step_index}")
    write_heldout(output_dir, prompts.heldout, accelerator)
    config = config_dict(cfg)
    tracker = tracking.make_tracker(cfg.logging, accelerator, output_dir, config)
    probes = ProbeRecorder(tokenizer, cfg.logging.probes, accelerator.device)
    return Run(cfg, accelerator, trainer, tracker, probes, output_dir, config)


def run(r: Run) -> Path:
    """Train to `ppo.steps`, save the final model (merged and uploaded when asked) and draw the run's pictures."""
    train(r.trainer, r.tracker, r.probes, r.output_dir, r.config)
    return finish(r, save_final(r.trainer, r.output_dir, r.config))


def main(argv: list[str] | None = None) -> Path:
    return run(build(argv))
