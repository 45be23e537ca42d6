"""detox: train language models away from what they must not say, with PPO against reward models."""

__version__ = "0.1.0"
