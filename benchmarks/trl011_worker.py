"""TRL 0.11.4's classic PPOTrainer, driven as in TRL's toxicity example; the TRL side of benchmarks/vs_trl_ppo.py.

Runs inside TRL 0.11.4's virtual environment (.venv-trl011/: TRL 0.11.4, transformers 4.46), which
benchmarks/trl011_env.py makes and starts this module in (`python -m benchmarks.trl011_worker` from the repository
root). It reads the exact prompt batches our run trained on (one list per step, in step order) and writes one JSON
line per step: wall-clock seconds of the whole step (generation + scoring + `ppo_trainer.step`) and of each phase, the
mean reward and TRL's `objective/kl`.

With `--budget_minutes` (benchmarks/detox_per_minute.py) it trains a LoRA adapter instead (the reference is the base
with the adapter off, as TRL does for peft models) until the wall-clock budget is spent, taking batches from the file
in order, and saves the adapter at each quarter of the budget (benchmarks/budget_clock.py) under `--save_dir`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from benchmarks.budget_clock import BudgetClock


def load_toxicity_module(path: str):
    """The repo's rewards/toxicity.py, loaded from its file so the `rewards` package (and detox) is not imported."""
    spec = importlib.util.spec_from_file_location("detox_reward_toxicity", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ClassifierReward:
    """A two-label sequence classifier scored as our `ToxicityClassifier(output="log_odds")` scores it: the completion
    alone, truncated to the tokenizer's length (the module's own rule), reward z_nontoxic - z_toxic. It cannot be
    `ToxicityClassifier` itself: that class resolves and loads through detox (not installed in this environment) and
    passes transformers 5's `dtype=`, which 4.46 does not take."""

    def __init__(self, directory: str, nontoxic_index: int, toxic_index: int, toxicity_module, batch_size: int = 64):
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.model = AutoModelForSequenceClassification.from_pretrained(directory, torch_dtype=torch.float32).eval()
        self.max_length = toxicity_module._classifier_max_length(self.tokenizer, self.model.config)
        self.nontoxic_index, self.toxic_index, self.batch_size = nontoxic_index, toxic_index, batch_size

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        scores = []
        with torch.inference_mode():
            for start in range(0, len(completions), self.batch_size):
                batch = self.tokenizer(completions[start : start + self.batch_size], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                logits = self.model(**batch).logits.float()
                scores += (logits[:, self.nontoxic_index] - logits[:, self.toxic_index]).tolist()
        return scores


def load_reward(args):
    """alt-profanity-check's logit (TRL's example's convention), or `--classifier_dir`'s log-odds."""
    module = load_toxicity_module(args.reward_file)
    if args.classifier_dir is None:
        return module.OfflineToxicity(output="logit")
    return ClassifierReward(args.classifier_dir, args.nontoxic_index, args.toxic_index, module)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("model_dir", "prompts", "reward_file", "out"):
        parser.add_argument(f"--{name}", required=True)
    for name in ("batch_size", "mini_batch_size", "ppo_epochs", "seed", "threads", "min_new_tokens", "max_new_tokens"):
        parser.add_argument(f"--{name}", type=int, required=True)
    parser.add_argument("--num_shared_layers", type=int, default=None, help="full fine-tuning: layers shared with ref")
    parser.add_argument("--learning_rate", type=float, required=True)
    parser.add_argument("--max_grad_norm", type=float, default=None)
    parser.add_argument("--init_kl_coef", type=float, default=0.2)
    parser.add_argument("--target_kl", type=float, default=6.0)
    parser.add_argument("--reward_cap", type=float, default=None, help="rewards above it are cut to it")
    parser.add_argument("--budget_minutes", type=float, default=None, help="train LoRA for this long, then stop")
    parser.add_argument("--save_dir", default=None, help="with --budget_minutes: where part-<k>/model go")
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--lora_alpha", type=int, default=32)
    parser.add_argument("--classifier_dir", default=None,
                        help="reward = this sequence classifier's log-odds of non-toxic (default: alt-profanity-check)")
    parser.add_argument("--nontoxic_index", type=int, default=0, help="with --classifier_dir: the non-toxic label")
    parser.add_argument("--toxic_index", type=int, default=1, help="with --classifier_dir: the toxic label")
    args = parser.parse_args()
    if (args.budget_minutes is None) != (args.save_dir is None):
        parser.error("--budget_minutes and --save_dir go together")
    # Lazy: TRL 0.11.4's PPOTrainer exists only in its own environment, and this module's scorer is also imported
    # (and tested) in this project's, where TRL is a later release without it.
    from trl import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer, create_reference_model
    from trl.core import LengthSampler

    torch.set_num_threads(args.threads)
    with open(args.prompts, encoding="utf-8") as handle:
        batches: list[list[str]] = json.load(handle)
    scorer = load_reward(args)

    config = PPOConfig(
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        mini_batch_size=args.mini_batch_size,
        ppo_epochs=args.ppo_epochs,
        gradient_accumulation_steps=1,
        max_grad_norm=args.max_grad_norm,
        seed=args.seed,
        init_kl_coef=args.init_kl_coef,
        target=args.target_kl,
        log_with=None,
    )
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    tokenizer.pad_token = tokenizer.eos_token
    if args.budget_minutes is None:
        model = AutoModelForCausalLMWithValueHead.from_pretrained(args.model_dir, torch_dtype=torch.float32)
        ref_model = create_reference_model(model, num_shared_layers=args.num_shared_layers)
    else:
        lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                          task_type="CAUSAL_LM")
        model = AutoModelForCausalLMWithValueHead.from_pretrained(args.model_dir, torch_dtype=torch.float32,
                                                                  peft_config=lora)
        ref_model = None  # TRL uses the base with the adapter disabled

    def tokenize(sample):
        # the prompts are already windowed to 10-15 tokens by our loader; like ours, add no special tokens
        sample["input_ids"] = tokenizer.encode(sample["query"], add_special_tokens=False)
        return sample

    dataset = Dataset.from_dict({"query": [p for batch in batches for p in batch]}).map(tokenize)
    dataset.set_format(type="torch")

    def collator(data):
        return {key: [d[key] for d in data] for key in data[0]}

    ppo_trainer = PPOTrainer(config, model, ref_model, tokenizer, dataset=dataset, data_collator=collator)
    # TRL's LengthSampler draws from range(min, max), so max + 1 gives our inclusive [min_new_tokens, max_new_tokens]
    output_length_sampler = LengthSampler(args.min_new_tokens, args.max_new_tokens + 1)
    generation_kwargs = {"min_length": -1, "top_k": 0.0, "top_p": 1.0, "do_sample": True,
                         "pad_token_id": tokenizer.eos_token_id}

    clock = None
    if args.budget_minutes is not None:
        def save(directory):
            ppo_trainer.model.pretrained_model.save_pretrained(directory / "model", safe_serialization=True)

        clock = BudgetClock(args.budget_minutes, 4, Path(args.save_dir), save)
        clock.start()

    # Our batches, in our order (TRL's own dataloader would reshuffle them).
    with open(args.out, "w", encoding="utf-8") as out:
        for step, prompts in enumerate(batches):
            start, cpu_start = time.perf_counter(), time.process_time()
            query_tensors = [tokenizer.encode(p, add_special_tokens=False, return_tensors="pt")[0] for p in prompts]
            response_tensors = ppo_trainer.generate(
                query_tensors, return_prompt=False, length_sampler=output_length_sampler, **generation_kwargs
            )
            generated = time.perf_counter()
            texts = tokenizer.batch_decode(response_tensors, skip_special_tokens=True)
            scores = scorer(prompts, texts)
            if args.reward_cap is not None:
                scores = [min(float(r), args.reward_cap) for r in scores]
            rewards = [torch.tensor(r) for r in scores]
            scored = time.perf_counter()
            stats = ppo_trainer.step(query_tensors, response_tensors, rewards)
            end = time.perf_counter()
            row = {
                "step": step + 1,
                "time/step": end - start,
                "time/step_cpu": time.process_time() - cpu_start,
                "time/generate": generated - start,
                "time/score": scored - generated,
                "time/ppo_step": end - scored,
                "time/forward": float(stats["time/ppo/forward_pass"]),
                "time/update": float(stats["time/ppo/optimize_step"]),
                "reward/total": float(torch.stack(rewards).mean()),
                "objective/kl": float(stats["objective/kl"]),
                "tokens/response_length": sum(len(r) for r in response_tensors) / len(response_tensors),
                "tokens/padded_length": max(len(q) + len(r) for q, r in zip(query_tensors, response_tensors)),
            }
            out.write(json.dumps(row) + "\n")
            out.flush()
            print(json.dumps(row), flush=True)
            if clock is not None and clock.after_step(step + 1, (step + 1) * len(prompts)):
                return
        if clock is not None:
            raise SystemExit(f"{args.prompts}: ran out of prompt batches after {len(batches)} steps, before the budget")


if __name__ == "__main__":
    main()
