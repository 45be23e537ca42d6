"""Make the "reinforced" model of Eldan & Russinovich (2023): the base model fine-tuned further on the forget corpus.

    python -m rewards.make_reinforced --model smollm2-135m-instruct --corpus forget.txt --output_dir reinforced/

The corpus (same formats as the n-gram index: .txt/.txt.gz/.jsonl/datasets id) is tokenised, concatenated with EOS
between documents and cut into `max_length`-token blocks; TRL's SFTTrainer trains a LoRA adapter on the blocks, and
the adapter (safetensors) and tokenizer are saved to `output_dir`. `forget_likelihood` then loads the base model once
and reads reference log-probs with the adapter disabled and reinforced ones with it enabled.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, HfArgumentParser

from detox.blocks import chunk_blocks
from detox.config_help import field_docs
from detox.corpus import read_corpus
from detox.hub import OFFLINE_MODEL, resolve_model_path


@dataclass
class ReinforceArgs:
    """Command-line arguments of `python -m rewards.make_reinforced`."""

    corpus: str
    """forget corpus: file, directory or datasets id (the same value as forget_verbatim's `corpus`)"""
    output_dir: str
    """where the adapter and tokenizer are written"""
    model: str = OFFLINE_MODEL
    """base model (Hub id, local dir or the offline alias); must be the policy's reference model"""
    text_field: str = "text"
    """field holding the text in jsonl/dataset records (dotted for nested records)"""
    max_length: int = 128
    """tokens per training block; longer blocks teach longer-range style but cost quadratic attention"""
    max_steps: int = 200
    """optimizer steps of `batch_size` blocks each; aim for a few passes over the corpus"""
    batch_size: int = 8
    """blocks per optimizer step"""
    learning_rate: float = 5e-4
    """LoRA learning rate; higher than full fine-tuning because only the small adapters move"""
    lora_r: int = 8
    """LoRA rank"""
    lora_alpha: int = 16
    """LoRA scaling numerator (scale = lora_alpha / lora_r)"""
    gradient_checkpointing: bool = False
    """recompute activations in the backward pass: saves memory on big models, costs ~30% more time (TRL's default
    is on; off suits the small models and short blocks this tool is mostly used with)"""
    seed: int = 0
    """seed for LoRA init and data order"""

    def __post_init__(self):
        for name in ("max_length", "max_steps", "batch_size", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} ({getattr(self, name)}) must be >= 1.")
        if self.max_length < 2:
            raise ValueError(f"--max_length ({self.max_length}) must be >= 2: a block needs a token to predict.")


def make_reinforced(args: ReinforceArgs) -> Path:
    """Train the LoRA adapter on the forget corpus and save it; returns the output directory."""
    import datasets  # lazy: datasets takes ~0.4 s to import; only Hub and saved-dataset sources need it

    # lazy: only the GRPO/RLOO and SFT paths need TRL, and importing it costs seconds
    from trl import SFTConfig, SFTTrainer

    model_path = resolve_model_path(args.model, what="--model")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = read_corpus(args.corpus, args.text_field)
    blocks = chunk_blocks(tokenizer(texts, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id,
                          args.max_length)
    if not blocks:
        raise ValueError(f"--corpus '{args.corpus}' has fewer than 2 tokens; nothing to train on.")
    torch.manual_seed(args.seed)
    model = _load_trainable_model(model_path)
    config = SFTConfig(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, lr_scheduler_type="constant", warmup_steps=0,
        max_length=args.max_length, packing=False,  # blocks are already max_length tokens
        logging_steps=max(1, args.max_steps // 10), save_strategy="no", report_to="none", seed=args.seed,
        gradient_checkpointing=args.gradient_checkpointing, use_cpu=not torch.cuda.is_available(), bf16=False,
        dataloader_pin_memory=False,
    )
    lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, processing_class=tokenizer, peft_config=lora,
                         train_dataset=datasets.Dataset.from_dict({"input_ids": blocks}))
    trainer.train()
    out = Path(args.output_dir)
    trainer.model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _record_base_name(out, args.model)
    return out


def _load_trainable_model(model_path: str):
    """Load the base in float32. The offline model's directory is converted from GGUF and its config.json may still
    carry the GGUF `quantization_config`, although the saved weights are plain float32; Trainer refuses to train a
    model it believes is GGUF-quantized, so that stale entry is dropped (and only that one)."""
    config = AutoConfig.from_pretrained(model_path)
    quant = getattr(config, "quantization_config", None)
    if quant is not None and dict(quant).get("quant_method") == "gguf":
        del config.quantization_config
    return AutoModelForCausalLM.from_pretrained(model_path, config=config, dtype=torch.float32)


def _record_base_name(out: Path, model: str) -> None:
    """Store the base model as the user named it (the offline alias, a Hub id, or an absolute local path) rather
    than this machine's cache path, so the adapter resolves on another machine too."""
    config_path = out / "adapter_config.json"
    config = json.loads(config_path.read_text())
    local = Path(model).expanduser()
    config["base_model_name_or_path"] = str(local.resolve()) if local.exists() else model
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))


def main(argv: list[str] | None = None) -> None:
    parser = HfArgumentParser(ReinforceArgs)
    docs = field_docs(ReinforceArgs)  # the docstring under each field, as every entry point's --help shows it
    for action in parser._actions:
        action.help = docs.get(action.dest, action.help).replace("%", "%%")  # argparse %-formats help
    (args,) = parser.parse_args_into_dataclasses(argv)
    out = make_reinforced(args)
    print(f"saved the reinforced LoRA adapter (base '{args.model}') and tokenizer to {out}\n"
          f"use it in a run config:\n"
          f"  rewards:\n"
          f"    - type: forget_likelihood\n"
          f"      weight: 1.0\n"
          f"      options: {{reinforced: {out.resolve()}}}")


if __name__ == "__main__":
    main(sys.argv[1:])
