"""Run by `accelerate launch` in the multi-process test: train, then each rank writes its trainable weights."""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detox.jobs import train_ppo

if __name__ == "__main__":
    r = train_ppo.build(sys.argv[1:])
    train_ppo.run(r)
    policy = r.accelerator.unwrap_model(r.trainer.model)
    weights = {n: p.detach().contiguous() for n, p in policy.named_parameters() if p.requires_grad}
    save_file(weights, r.output_dir / f"rank{r.accelerator.process_index}_weights.safetensors")
    print(f"rank {r.accelerator.process_index} saw {len(r.trainer.batch_prompts(0))} prompts", flush=True)
    r.accelerator.end_training()
