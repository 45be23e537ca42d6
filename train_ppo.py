"""Detoxify a causal language model with PPO against reward models.

    accelerate launch train_ppo.py                                  # offline default (SmolLM2, CPU-friendly)
    accelerate launch train_ppo.py --config configs/gpt-j-6b.yaml   # the TRL toxicity example's setup
    accelerate launch train_ppo.py --config configs/X.yaml --ppo.steps 100 --checkpoint.resume_from_checkpoint latest

The job itself is detox.jobs.train_ppo.
"""

from detox.jobs.train_ppo import main
from detox.launch import cli

if __name__ == "__main__":
    cli(main)
