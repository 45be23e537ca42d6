"""Unlearn with a loss-based baseline instead of PPO: gradient ascent, gradient difference, NPO, SimNPO, WHP or RMU.

    accelerate launch train_unlearn.py --data.forget forget.jsonl --method.name gradient_ascent
    accelerate launch train_unlearn.py --config configs/X.yaml --method.name npo --data.retain retain.jsonl
    accelerate launch train_unlearn.py --config configs/X.yaml --method.name whp \\
        --method.reinforced outputs/reinforced --method.anchor_terms anchors.json
    accelerate launch train_unlearn.py --config configs/X.yaml --method.name rmu --data.retain retain.jsonl

It writes what train_ppo.py writes (metrics, samples, W&B, checkpoints that resume, and `final/`), so a baseline and
a PPO run of the same recipe are evaluated the same way.

The job itself is detox.jobs.train_unlearn.
"""

from detox.jobs.train_unlearn import main
from detox.launch import cli

if __name__ == "__main__":
    cli(main)
