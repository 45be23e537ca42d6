"""PPO with the phrase reward alone lowers the phrase rate of a small model's samples (train_ppo.main, in-process).

The forbidden phrases are the words of SmolLM2's vocabulary that start with "s" (every token that decodes to
" s<lowercase letters>", about 2,300 of 49,152). The fixture's random model samples almost uniformly (entropy ~10.8
nats = log of the vocabulary size): no word is common, and its hits fall on thousands of unrelated embedding rows
that PPO can only lower one by one, after sampling each. Measured on it, even with the denser list of words starting
with s, c or p (~1.4 hits per sample), 30 steps gave 0.83x the hits at lr 1e-2 and 0.79x at 3e-2, short of 0.6x.
A real LM says some words often because they share features with the contexts it sees; `chatty_model` gives the
random model that: every token embedding carries one shared feature and the forbidden words carry it more strongly,
so they become its most likely words (~1.7 hits per sample) and PPO can lower them all at once by unlearning that
feature, as it would unlearn a phrase habit of a real model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detox.jobs import train_ppo
from detox.config import DataConfig, GenerationConfig
from detox.data import load_prompts
from detox.generation import generate_completions
from detox.models import load_causal_lm, load_tokenizer
from rewards.phrases import PhraseReward

GEN = GenerationConfig(min_new_tokens=8, max_new_tokens=12)
SHARED_FEATURE = 0.1  # added to hidden coordinate 0 of every embedding (rows have norm ~0.08): all contexts carry it
FORBIDDEN_FEATURE = 0.5  # added on top for the forbidden words: ~4x more "s" words (0.4 -> 1.7 hits per sample)


def forbidden_token_ids(tokenizer) -> dict[int, str]:
    """Token id -> word, for every token that decodes to a space and a lowercase ASCII word starting with "s"."""
    out = {}
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        word = text[1:]
        if text.startswith(" ") and word.isascii() and word.isalpha() and word.islower() and word[0] == "s":
            out[token_id] = word
    return out


@pytest.fixture
def chatty_model(tiny_lm_path, tmp_path) -> tuple[str, list[str]]:
    """The fixture's tiny model, edited to say the forbidden words often; returns (model dir, forbidden words)."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(tiny_lm_path)
    forbidden = forbidden_token_ids(tokenizer)
    assert len(forbidden) > 1000, f"only {len(forbidden)} forbidden tokens: the tokenizer is not SmolLM2's"
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_path)
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight  # tied: also the output layer
        embedding[:, 0] += SHARED_FEATURE
        embedding[list(forbidden), 0] += FORBIDDEN_FEATURE
    path = tmp_path / "chatty"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path), sorted(set(forbidden.values()))


def phrase_rate(model_path: str, prompts: list[str], reward: PhraseReward) -> float:
    """Mean forbidden-word hits per completion: 2 samples per prompt, seeded, so every model gets the same draws."""
    model, tokenizer = load_causal_lm(model_path), load_tokenizer(model_path)
    completions = generate_completions(model, tokenizer, prompts, GEN, num_return_sequences=2, seed=0)
    hits = [reward.hits(p, c) for p, group in zip(prompts, completions) for c in group]
    return sum(hits) / len(hits)


def test_phrase_penalty_lowers_phrase_rate(chatty_model, tmp_path: Path):
    model_path, words = chatty_model
    phrase_file = tmp_path / "phrases.txt"
    phrase_file.write_text("\n".join(words))
    reward = PhraseReward(phrases=str(phrase_file), mode="count")
    # The training prompts themselves (the run below uses the same data config), so the rate is measured where PPO
    # acted; a fixed seed gives the model before and after training the same prompts, lengths and random draws.
    prompts = load_prompts(DataConfig(max_prompts=40), load_tokenizer(model_path)).train[:24]
    before = phrase_rate(model_path, prompts, reward)
    assert before > 1.0, f"the edited model should say the forbidden words often, got {before:.2f} hits per sample"

    out = tmp_path / "run"
    train_ppo.main([
        "--model.name_or_path", model_path,
        "--lora.enabled", "false",  # the tiny model is trained whole; LoRA on hidden size 16 learns too slowly
        "--data.max_prompts", "40", "--logging.report_to", "none",
        "--generation.min_new_tokens", str(GEN.min_new_tokens), "--generation.max_new_tokens", str(GEN.max_new_tokens),
        "--ppo.steps", "12",  # the penalty is mostly learned by step ~5; 12 leaves a margin, 30 is not needed
        "--ppo.batch_size", "16", "--ppo.mini_batch_size", "8", "--ppo.ppo_epochs", "2",
        "--ppo.learning_rate", "3e-3",  # gradients through a random 2-layer model are tiny: a high lr moves it
        "--ppo.init_kl_coef", "0.05",  # a weak leash: the test is about the reward moving the policy
        "--rewards", f"[{{type: phrase, options: {{phrases: '{phrase_file}', mode: count}}}}]",
        "--checkpoint.output_dir", str(out), "--checkpoint.save_every", "100",
    ])
    after = phrase_rate(str(out / "final"), prompts, reward)
    assert after < 0.6 * before, f"phrase hits per sample did not drop enough: {before:.2f} -> {after:.2f}"
