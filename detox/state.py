"""What a checkpoint holds, and how a run is written out and read back.

A checkpoint directory:
  model/                    adapter (adapter_model.safetensors) or full weights (model.safetensors), and tokenizer
  value_head.safetensors    the value head
  optimizer.{safetensors,json}, trainer.{safetensors,json}
                            optimizer, scheduler, KL controller, reward normalisers, step, and each rank's RNG state
No pickle is written or read: tensors go to safetensors and everything else to JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
import yaml
from accelerate.utils import gather_object
from peft import set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from detox import sharding
from detox.checkpoint import (
    capture_rng_state,
    load_tensors_and_json,
    restore_rng_state,
    save_checkpoint,
    save_tensors_and_json,
)
from detox.hub import hub_id
from detox.model_card import write_model_card
from detox.sharding import full_model_state
from detox.tracking import redact


class NonFiniteWeightsError(RuntimeError):
    """The policy holds NaN/inf weights; they are never written to a checkpoint."""


def write_model(directory: Path, trainer, state: dict, config: dict | None = None) -> None:
    """Weights (adapter or full), tokenizer and value head, loadable with plain transformers/peft, from the policy's
    full state dict (`detox.sharding.full_model_state`, gathered from every rank when the engine shards it)."""
    policy = trainer.accelerator.unwrap_model(trainer.model)
    trainable = {name for name, p in policy.named_parameters() if p.requires_grad}
    bad = [name for name in trainable if name in state and not torch.isfinite(state[name]).all()]
    if bad:
        raise NonFiniteWeightsError(f"refusing to save non-finite weights ({bad[:3]}...); the last checkpoint is kept.")
    lm_state = {name[len("lm."):]: tensor for name, tensor in state.items() if name.startswith("lm.")}
    policy.lm.save_pretrained(directory / "model", state_dict=lm_state, safe_serialization=True)
    if policy.is_peft:
        name_base_by_hub_id(directory / "model", trainer.cfg.model.name_or_path)
    trainer.tokenizer.save_pretrained(directory / "model")
    head = {name[len("v_head."):]: t.detach().cpu().contiguous() for name, t in state.items() if name.startswith("v_head.")}
    save_file(head, directory / "value_head.safetensors")
    if config is not None:
        (directory / "model" / "detox_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def name_base_by_hub_id(adapter_dir: Path, name_or_path: str) -> None:
    """Name the base in adapter_config.json by its Hub id (not a path in this machine's cache), so the adapter loads
    anywhere; detox itself still loads it offline (detox.models._base_of_adapter, detox.hub.resolve_model_path)."""
    path = adapter_dir / "adapter_config.json"
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = hub_id(name_or_path)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_training_checkpoint(trainer, output_dir: Path, keep_last: int | None, config: dict) -> Path | None:
    """Checkpoint the run after `trainer.step_index` steps (atomically); every rank must call this."""
    rng_states = gather_object([capture_rng_state()])
    model_state, optimizer_state = full_model_state(trainer), sharding.optimizer_state(trainer)
    trainer.accelerator.wait_for_everyone()
    path = None
    if trainer.accelerator.is_main_process:
        def write(directory: Path) -> None:
            write_model(directory, trainer, model_state, config)
            save_tensors_and_json(directory, "optimizer", optimizer_state)
            save_tensors_and_json(directory, "trainer", {
                "step": trainer.step_index,
                "scheduler": trainer.scheduler.state_dict(),
                "kl_controller": trainer.kl_ctl.state_dict(),
                "rewards": trainer.composer.state_dict(),
                "rng": rng_states,
            })

        path = save_checkpoint(output_dir, trainer.step_index, write, keep_last=keep_last)
    trainer.accelerator.wait_for_everyone()
    return path


def load_policy_weights(policy, checkpoint: Path) -> None:
    """Restore the adapter or full weights and the value head into the policy before `accelerator.prepare`
    (a sharding engine then slices the restored weights)."""
    load_lm_weights(policy.lm, checkpoint)
    policy.v_head.load_state_dict(load_file(checkpoint / "value_head.safetensors"))


def load_training_checkpoint(trainer, checkpoint: Path) -> None:
    """Restore optimiser, schedule, KL controller, reward normalisers, step and this rank's RNG (after
    `accelerator.prepare`; the weights come first, with `load_policy_weights`)."""
    sharding.load_optimizer_state(trainer, load_tensors_and_json(checkpoint, "optimizer"))
    state = load_tensors_and_json(checkpoint, "trainer")
    trainer.step_index = state["step"]
    trainer.scheduler.load_state_dict(state["scheduler"])
    _apply_configured_optimiser_settings(trainer)
    trainer.kl_ctl.load_state_dict(state["kl_controller"])
    trainer.composer.load_state_dict(state["rewards"])
    rng = state["rng"]
    if len(rng) != trainer.accelerator.num_processes:
        raise ValueError(
            f"checkpoint {checkpoint} was written by {len(rng)} processes; resume it with the same number "
            f"(this run has {trainer.accelerator.num_processes})."
        )
    restore_rng_state(rng[trainer.accelerator.process_index])


def load_lm_weights(lm, checkpoint: Path) -> None:
    """Load `checkpoint/model` (a LoRA adapter, or full weights in safetensors shards) into `lm` in place."""
    model_dir = checkpoint / "model"
    if hasattr(lm, "disable_adapter"):  # a peft model
        set_peft_model_state_dict(lm, load_file(model_dir / "adapter_model.safetensors"))
        return
    state = {}
    for shard in sorted(model_dir.glob("model*.safetensors")):
        state.update(load_file(shard))
    missing, unexpected = lm.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:  # lm_head may be tied to the embeddings
        raise ValueError(f"checkpoint {checkpoint} does not match the model: missing {missing}, extra {unexpected}.")


def _apply_configured_optimiser_settings(trainer) -> None:
    """Make the run's config win over the learning rate and weight decay stored in the optimiser and schedule state.

    Loaded as is, those states would silently keep the saved values, so a run resumed with a lower
    ppo.learning_rate (the fix its divergence error suggests) would go on with the old one. With unchanged settings
    this recomputes the very same numbers, so an exact resume stays exact.
    """
    cfg, scheduler = trainer.cfg.ppo, trainer.scheduler
    groups = sharding.torch_optimizer(trainer.optimizer).param_groups
    scheduler.base_lrs = [cfg.learning_rate] * len(groups)
    for group, lr_factor in zip(groups, scheduler.lr_lambdas):
        group["initial_lr"] = cfg.learning_rate
        group["lr"] = cfg.learning_rate * lr_factor(scheduler.last_epoch)  # as LambdaLR computes it
        group["weight_decay"] = cfg.weight_decay
    scheduler._last_lr = [group["lr"] for group in groups]  # what get_last_lr() reports until the next step


def save_final(trainer, output_dir: Path, config: dict) -> Path:
    """`output_dir/final`: loadable with AutoPeftModelForCausalLM / AutoModelForCausalLM, no detox import needed,
    with its model card (README.md)."""
    final = output_dir / "final"
    state = full_model_state(trainer)
    if trainer.accelerator.is_main_process:
        staging = Path(tempfile.mkdtemp(prefix=".tmp-final-", dir=output_dir))
        try:
            write_model(staging, trainer, state, config)
            if final.exists():
                shutil.rmtree(final)
            write_model_card(staging / "model", config, final_dir=final)
            os.replace(staging / "model", final)
            os.replace(staging / "value_head.safetensors", final / "value_head.safetensors")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return final


def config_dict(cfg) -> dict:
    """The run config as plain data with secrets redacted: it is copied into every checkpoint and the final model."""
    return redact(dataclasses.asdict(cfg))
