"""Detoxify a causal language model with TRL's GRPO or RLOO against the same composed rewards as train_ppo.py.

    accelerate launch train_grpo.py                                            # offline default, GRPO
    accelerate launch train_grpo.py --config configs/offline_default.yaml --algo rloo --num_generations 8

The job itself is detox.jobs.train_grpo.
"""

from detox.jobs.train_grpo import main
from detox.launch import cli

if __name__ == "__main__":
    cli(main)
