"""Detoxify a causal language model with TRL's GRPO or RLOO against the same composed rewards as train_ppo.py: the
job behind `train_grpo.py`.

    accelerate launch train_grpo.py                                            # offline default, GRPO
    accelerate launch train_grpo.py --config configs/offline_default.yaml --algo rloo --num_generations 8

The run config is train_ppo.py's plus `algo` and `num_generations` (detox.group.GroupRunConfig, which also says how
the PPO fields map onto TRL's); `ppo.batch_size` counts completions per rollout, num_generations per prompt.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import yaml

from detox import tracking
from detox.config import parse_config
from detox.data import check_held_out, load_prompts, refuse_evaluation_only, render_prompts
from detox.export import hub_token
from detox.group import GroupRunConfig, peft_config, trl_args, unused_ppo_settings
from detox.hub import resolve_model_path
from detox.launch import prepare_output_dir, share, use_gloo_without_gpus, write_heldout
from detox.model_card import write_model_card
from detox.models import load_tokenizer
from detox.state import name_base_by_hub_id
from rewards import RewardComposer


def build(argv: list[str] | None = None):
    """Parse the config, load prompts and rewards, and set up TRL's trainer (which loads the model)."""
    cfg: GroupRunConfig = parse_config(argv, GroupRunConfig, __doc__)  # a bad field or algo fails here, before loading
    refuse_evaluation_only(cfg.data)
    if cfg.checkpoint.push_to_hub:
        hub_token(cfg.checkpoint.push_to_hub)  # offline or without a token: fail now, not after training
    output_dir = prepare_output_dir(Path(cfg.checkpoint.output_dir))
    unused = unused_ppo_settings(cfg)
    if unused and os.environ.get("RANK", "0") == "0":
        print(f"note: {cfg.algo} has no use for these PPO settings: {', '.join(unused)}", flush=True)
    use_gloo_without_gpus()
    report_to = tracking.accelerate_log_with(cfg.logging)  # W&B goes offline without a key or network
    if report_to == ["wandb"]:  # transformers' W&B callback reads its project and directory from the environment
        os.environ.setdefault("WANDB_PROJECT", cfg.logging.project)
        os.environ.setdefault("WANDB_DIR", str(output_dir))
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
    prompts = load_prompts(cfg.data, tokenizer)
    composer = RewardComposer(cfg.rewards)
    check_held_out(prompts.heldout, composer.fitted_prompts())

    import datasets  # lazy: datasets takes ~0.4 s to import; only Hub and saved-dataset sources need it

    # lazy: only the GRPO/RLOO and SFT paths need TRL, and importing it costs seconds
    from trl import GRPOTrainer, RLOOTrainer

    trainer_cls = {"grpo": GRPOTrainer, "rloo": RLOOTrainer}[cfg.algo]
    trainer = trainer_cls(
        model=resolve_model_path(cfg.model.name_or_path, "model.name_or_path"),
        reward_funcs=composer.reward_funcs,  # logged by TRL as rewards/<component name>/mean|std
        args=trl_args(cfg, report_to, output_dir, composer.reward_weights),
        # rendered here rather than by TRL, so GRPO/RLOO read each prompt exactly as PPO and evaluation do
        train_dataset=datasets.Dataset.from_dict({"prompt": render_prompts(prompts.train, tokenizer,
                                                                           cfg.data.chat_template)}),
        processing_class=tokenizer,
        peft_config=peft_config(cfg),
    )
    trainer.accelerator.print(f"prompts: {len(prompts.train)} train, {len(prompts.heldout)} held out; {prompts.stats}")
    write_heldout(output_dir, prompts.heldout, trainer.accelerator)
    if trainer.accelerator.is_main_process:  # as detox.tracking writes it for PPO runs, secrets removed
        (output_dir / "config.yaml").write_text(yaml.safe_dump(tracking.redact(cfg), sort_keys=False))
    return cfg, trainer, output_dir


def write_run_config(model_dir: Path, cfg) -> None:
    """The run config beside the model, secrets removed, and the model card, as train_ppo.py leaves them:
    evaluate_toxicity.py reads the config to mark which judge is the run's own reward; an adapter names its base by
    Hub id, so that a shared adapter loads anywhere."""
    config = tracking.redact(cfg)
    (model_dir / "detox_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if (model_dir / "adapter_config.json").is_file():
        name_base_by_hub_id(model_dir, cfg.model.name_or_path)
    write_model_card(model_dir, config, final_dir=model_dir)


def run(cfg, trainer, output_dir: Path) -> Path:
    """Train, then save the model (an adapter with LoRA) to output_dir/final, merged and uploaded when asked, and
    TRL's log to metrics.jsonl."""
    resume = cfg.checkpoint.resume_from_checkpoint
    trainer.train(resume_from_checkpoint=True if resume == "latest" else resume)
    final = output_dir / "final"
    trainer.save_model(str(final))  # safetensors, with the tokenizer
    if trainer.accelerator.is_main_process:
        write_run_config(final, cfg)
        with (output_dir / "metrics.jsonl").open("w") as handle:
            for row in trainer.state.log_history:  # NaN/inf as null, as in detox.tracking's metrics.jsonl
                clean = {k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in row.items()}
                handle.write(json.dumps(clean) + "\n")
    trainer.accelerator.print(f"saved {final}")
    if trainer.accelerator.is_main_process:
        share(final, cfg.checkpoint)
    return final


def main(argv: list[str] | None = None) -> Path:
    return run(*build(argv))
