"""Shared fixtures: real data beside the repo, the packaged SmolLM2, and a tiny random model with its tokenizer."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = Path(os.environ.get("DETOX_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.fail(f"shared data not found at {path}: clone the project next to shared/ or set DETOX_SHARED_DATA")
    return path


@pytest.fixture
def verse(tmp_path, shared_data) -> Path:
    """The first 40,000 characters of Tiny Shakespeare as a text file: real verse to keep or to forget."""
    with gzip.open(shared_data / "tinyshakespeare" / "input.txt.gz", "rt") as handle:
        text = handle.read(40_000)
    path = tmp_path / "shakespeare.txt"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    from detox.hub import OFFLINE_MODEL, resolve_model_path

    return resolve_model_path(OFFLINE_MODEL)


def save_tiny_lm(path, tokenizer, model_class, config_class, **extra) -> str:
    """Save a 2-layer decoder of `model_class` (random weights, fixed seed) with `tokenizer` to `path`."""
    import torch

    torch.manual_seed(0)
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )
    model_class(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_lm_path(tmp_path_factory, smollm2_path) -> str:
    """A 2-layer Llama with SmolLM2's tokenizer: real tokenisation, random weights, fast on CPU."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    path = tmp_path_factory.mktemp("tiny_lm")
    return save_tiny_lm(path, tokenizer, LlamaForCausalLM, LlamaConfig, max_position_embeddings=256,
                        tie_word_embeddings=True)
