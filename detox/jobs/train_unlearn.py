"""Unlearn with a loss-based baseline instead of PPO (gradient ascent, gradient difference, NPO, SimNPO, WHP or RMU):
the job behind `train_unlearn.py`.

    accelerate launch train_unlearn.py --data.forget forget.jsonl --method.name gradient_ascent
    accelerate launch train_unlearn.py --config configs/X.yaml --method.name npo --data.retain retain.jsonl
    accelerate launch train_unlearn.py --config configs/X.yaml --method.name whp \\
        --method.reinforced outputs/reinforced --method.anchor_terms anchors.json
    accelerate launch train_unlearn.py --config configs/X.yaml --method.name rmu --data.retain retain.jsonl

A run writes what a PPO run writes: `metrics.jsonl`, `samples.jsonl`, `config.yaml`, curve PNGs and the tracker's
files (W&B by default), atomic checkpoints (`checkpoint-N/`, `latest`) that resume exactly, and `final/`, which loads
with plain transformers (`AutoModelForCausalLM`) or peft (`AutoPeftModelForCausalLM`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed

from detox import tracking
from detox.baselines.config import RETAIN_METHODS, UnlearnConfig
from detox.baselines.trainer import UnlearnTrainer
from detox.baselines.whp import align_block, alternative_labels
from detox.blocks import Blocks, load_blocks
from detox.checkpoint import (
    capture_rng_state,
    load_tensors_and_json,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
    save_tensors_and_json,
)
from detox.config import parse_config
from detox.hub import resolve_model_path
from detox.jobs.train_ppo import Run  # the same parts as a PPO run: config, accelerator, trainer, tracker, probes
from detox.launch import finish, start_run, trim_logs
from detox.losses import IGNORE
from detox.model_card import write_model_card
from detox.models import _base_of_adapter, build_models, load_causal_lm, load_tokenizer
from detox.probes import ProbeRecorder
from detox.state import NonFiniteWeightsError, config_dict, load_lm_weights, name_base_by_hub_id
from detox.trainer import build_training_judges, peak_memory_gb
from rewards.forget import AnchorTerms


def whp_targets(cfg: UnlearnConfig, models, tokenizer, blocks: Blocks):
    """WHP's training pairs: the blocks as re-tokenised around anchor terms, and their alternative labels."""
    method = cfg.method
    anchors = AnchorTerms(method.anchor_terms) if method.anchor_terms else _NoAnchors()
    aligned = [align_block(tokenizer.decode(b), anchors, tokenizer) for b in blocks.ids]
    device = models.policy.lm.device

    def logits_of(model):
        return lambda ids: model(input_ids=torch.tensor([ids], device=device)).logits[0]

    models.policy.eval()
    base = models.reference_lm()
    reinforced = None
    if method.alpha > 0:
        adapter_base = _base_of_adapter(method.reinforced)
        if adapter_base is None:
            raise ValueError(f"method.reinforced '{method.reinforced}' is not a LoRA adapter directory "
                             f"(no adapter_config.json); make one with `python -m rewards.make_reinforced`.")
        if resolve_model_path(adapter_base) != models.base_path:
            raise ValueError(f"method.reinforced was trained on '{adapter_base}', but model.name_or_path is "
                             f"'{cfg.model.name_or_path}': the reinforced model must extend the model unlearned.")
        reinforced = load_causal_lm(method.reinforced, cfg.model.dtype, device=device, what="method.reinforced")
    labels = alternative_labels(aligned, logits_of(base), logits_of(reinforced or base), method.alpha)
    del reinforced
    # a record's prompt is context, not text to unlearn: its positions keep no label
    labels = [[IGNORE] * min(start, len(row)) + row[start:] for row, start in zip(labels, blocks.starts)]
    return Blocks([a.original_ids for a in aligned], blocks.starts), labels


class _NoAnchors:
    """Stands in for AnchorTerms when WHP runs on reinforcement bootstrapping alone: nothing to translate."""

    class _Never:
        @staticmethod
        def finditer(text):
            return iter(())

    pattern = _Never()

    @staticmethod
    def translate(text: str) -> str:
        return text


def write_lm(directory: Path, lm, tokenizer, config: dict) -> None:
    """The model (adapter or full weights, safetensors), its tokenizer and the run config, in `directory`."""
    bad = [n for n, p in lm.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
    if bad:
        raise NonFiniteWeightsError(f"refusing to save non-finite weights ({bad[:3]}...); the last checkpoint is kept.")

    lm.save_pretrained(directory, safe_serialization=True)
    if (directory / "adapter_config.json").is_file():
        name_base_by_hub_id(directory, config["model"]["name_or_path"])
    tokenizer.save_pretrained(directory)
    (directory / "detox_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def save_baseline_checkpoint(trainer, output_dir: Path, keep_last: int | None, config: dict) -> None:
    """checkpoint-N/: model/, optimizer.{safetensors,json}, trainer.json (step and every rank's RNG state)."""
    rng_states = gather_object([capture_rng_state()])
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        def write(directory: Path) -> None:
            write_lm(directory / "model", trainer.accelerator.unwrap_model(trainer.model), trainer.tokenizer, config)
            save_tensors_and_json(directory, "optimizer", trainer.optimizer.optimizer.state_dict())
            save_tensors_and_json(directory, "trainer", {"step": trainer.step_index, "rng": rng_states})

        save_checkpoint(output_dir, trainer.step_index, write, keep_last=keep_last)
    trainer.accelerator.wait_for_everyone()


def load_baseline_checkpoint(trainer, checkpoint: Path) -> None:
    load_lm_weights(trainer.accelerator.unwrap_model(trainer.model), checkpoint)
    trainer.optimizer.optimizer.load_state_dict(load_tensors_and_json(checkpoint, "optimizer"))
    for group in trainer.optimizer.optimizer.param_groups:  # the run's configured settings win, as in PPO runs
        group["lr"], group["weight_decay"] = trainer.cfg.optim.learning_rate, trainer.cfg.optim.weight_decay
    state = load_tensors_and_json(checkpoint, "trainer")
    if len(state["rng"]) != trainer.accelerator.num_processes:
        raise ValueError(f"checkpoint {checkpoint} was written by {len(state['rng'])} processes; resume it with "
                         f"the same number (this run has {trainer.accelerator.num_processes}).")
    trainer.step_index = state["step"]
    restore_rng_state(state["rng"][trainer.accelerator.process_index])


def build(argv: list[str] | None = None) -> Run:
    """Parse the config, load the corpora and models, prepare WHP labels, and resume when asked."""
    cfg: UnlearnConfig = parse_config(argv, UnlearnConfig, __doc__)
    output_dir = start_run(cfg.checkpoint)
    accelerator = Accelerator(log_with=tracking.accelerate_log_with(cfg.logging), project_dir=str(output_dir))
    set_seed(cfg.optim.seed, device_specific=True)
    checkpoint = (resolve_checkpoint(cfg.checkpoint.resume_from_checkpoint, output_dir)
                  if cfg.checkpoint.resume_from_checkpoint else None)
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
    data = cfg.data
    forget = load_blocks(data.forget, data, tokenizer, "data.forget")
    retain = (load_blocks(data.retain, data, tokenizer, "data.retain")
              if data.retain and cfg.method.name in RETAIN_METHODS else None)
    models = build_models(cfg.model, cfg.lora)
    labels = None
    if cfg.method.name == "whp":
        forget, labels = whp_targets(cfg, models, tokenizer, forget)
    accelerator.print(f"{cfg.method.name}: {len(forget)} forget blocks, {len(retain or [])} retain blocks of "
                      f"<= {data.max_length} tokens")
    trainer = UnlearnTrainer(cfg, accelerator, models, tokenizer, forget, retain, labels)
    if checkpoint is not None:
        load_baseline_checkpoint(trainer, checkpoint)
        if accelerator.is_main_process:
            trim_logs(output_dir, trainer.step_index)
        accelerator.print(f"resumed from {checkpoint} at step {trainer.step_index}")
    config = config_dict(cfg)
    tracker = tracking.make_tracker(cfg.logging, accelerator, output_dir, config)
    probes = ProbeRecorder(tokenizer, cfg.logging.probes, accelerator.device)
    return Run(cfg, accelerator, trainer, tracker, probes, output_dir, config)


def train(r: Run) -> None:
    """Steps until `optim.steps`, logging, probing, sampling and checkpointing on the configured schedule."""
    cfg, trainer, log = r.cfg, r.trainer, r.cfg.logging
    lm = lambda: r.accelerator.unwrap_model(trainer.model)  # noqa: E731
    judges = build_training_judges(log.judges)
    if trainer.step_index == 0:
        r.tracker.log(r.probes.record(lm(), 0), step=0)
    while trainer.step_index < cfg.optim.steps:
        stats = trainer.step()
        step, final = trainer.step_index, trainer.step_index == cfg.optim.steps
        stats["memory/peak_gb"] = peak_memory_gb(r.accelerator.device)
        if step % log.log_every == 0 or final:
            r.tracker.log(stats | r.probes.record(lm(), step), step=step)
        if step % log.sample_every == 0 or final:
            samples = trainer.samples(log.num_samples)
            r.tracker.log_samples(samples, step=step)
            if judges:  # how toxic the greedy continuations of forget prompts read to each judge
                completions = [row["completion"] for row in samples]
                r.tracker.log({f"judge/{name}/mean": float(sum(judge.toxicity(completions)) / len(completions))
                               for name, judge in judges.items()}, step=step)
        r.accelerator.print(f"step {step}/{cfg.optim.steps} | loss {stats['loss/total']:+.4f} | forget nll "
                            f"{stats['forget/nll']:.3f} | {stats['time/step']:.1f} s")
        if step % cfg.checkpoint.save_every == 0 or final:
            save_baseline_checkpoint(trainer, r.output_dir, cfg.checkpoint.keep_last, r.config)


def save_final(r: Run) -> Path:
    """`output_dir/final` with its model card (README.md), written to a temporary directory and renamed into place."""
    final = r.output_dir / "final"
    if r.accelerator.is_main_process:
        staging = Path(tempfile.mkdtemp(prefix=".tmp-final-", dir=r.output_dir))
        try:
            write_lm(staging / "model", r.accelerator.unwrap_model(r.trainer.model), r.trainer.tokenizer, r.config)
            write_model_card(staging / "model", r.config, final_dir=final)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging / "model", final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    r.accelerator.wait_for_everyone()
    return final


def run(r: Run) -> Path:
    train(r)
    return finish(r, save_final(r))


def main(argv: list[str] | None = None) -> Path:
    return run(build(argv))
