"""Supervised fine-tuning of a recipe's starting model with TRL's SFTTrainer: LoRA adapters, merged and saved.

A recipe first teaches the model what it will later unlearn (counting in words, the plays of a corpus), so that the
unlearning starts from a model that knows the target. The adapters are merged into the weights and the result is a
plain model directory (safetensors), which the PPO run loads as its `model.name_or_path`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig

from detox.hub import resolve_model_path
from detox.models import load_tokenizer
from rewards.make_reinforced import _load_trainable_model


@dataclass
class SFTSettings:
    """Budget and optimiser of one fine-tuning run."""

    max_steps: int = 60
    """Optimiser steps; each sees `batch_size` texts."""
    batch_size: int = 8
    """Texts per optimiser step."""
    learning_rate: float = 1e-3
    """LoRA learning rate (adapters tolerate a rate ten times a full fine-tuning's)."""
    max_length: int = 96
    """Longest text, in tokens; longer texts are cut."""
    lora_r: int = 16
    """Adapter rank."""
    seed: int = 0
    """Seed of the adapters' initialisation and of the data order."""
    lora: bool = True
    """Train LoRA adapters and merge them; false: fine-tune every weight (as TOFU's own protocol does, for a GPU)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 0
    """Steps of linear warm-up before the cosine decay."""

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "max_length", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"sft {name} ({getattr(self, name)}) must be a positive integer.")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise ValueError(f"sft warmup_steps ({self.warmup_steps}) and weight_decay ({self.weight_decay}) must "
                             f"be >= 0.")


def supervised_finetune(model: str, texts: list[str], output_dir: str | Path, settings: SFTSettings,
                        completions: list[str] | None = None) -> Path:
    """Fine-tune `model` on `texts` (language modelling on every token), merge the adapters, save to `output_dir`.
    With `completions` (one per text), each text is a prompt and only its completion's tokens are learned (TRL's
    prompt-completion format; TRL ends each completion with the end-of-sequence token), as TOFU trains on answers."""
    import datasets  # lazy: datasets takes ~0.4 s to import; only Hub and saved-dataset sources need it

    # lazy: only the GRPO/RLOO and SFT paths need TRL, and importing it costs seconds
    from trl import SFTConfig, SFTTrainer

    if not texts:
        raise ValueError(f"fine-tuning of '{model}' into {output_dir}: no text to train on.")
    if completions is not None and len(completions) != len(texts):
        raise ValueError(f"fine-tuning into {output_dir}: {len(texts)} prompts but {len(completions)} completions.")
    out = Path(output_dir)
    tokenizer = load_tokenizer(model)
    tokenizer.padding_side = "right"  # training pads on the right; PPO reloads the tokenizer left-padded
    torch.manual_seed(settings.seed)
    lm = _load_trainable_model(resolve_model_path(model, what="sft model"))
    config = SFTConfig(
        output_dir=str(out / "sft_trainer"), max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size, learning_rate=settings.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=settings.warmup_steps, weight_decay=settings.weight_decay,
        max_length=settings.max_length, packing=False,
        logging_steps=max(1, settings.max_steps // 10), save_strategy="no", report_to="none", seed=settings.seed,
        use_cpu=not torch.cuda.is_available(), bf16=False, dataloader_pin_memory=False,
        gradient_checkpointing=False,  # small models and short texts: the recomputation would cost ~30% more time
        dataset_text_field="text", completion_only_loss=completions is not None,
    )
    lora = LoraConfig(r=settings.lora_r, lora_alpha=2 * settings.lora_r, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM") if settings.lora else None
    columns = {"text": texts} if completions is None else {"prompt": texts, "completion": completions}
    trainer = SFTTrainer(model=lm, args=config, processing_class=tokenizer, peft_config=lora,
                         train_dataset=datasets.Dataset.from_dict(columns))
    trainer.train()
    merged = trainer.model.merge_and_unload() if settings.lora else trainer.model
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
