"""Batched sampling, shared by the PPO rollout and by evaluation.

Each sample gets its own response length drawn from [min_new_tokens, max_new_tokens] (the TRL example's length
sampler) while the batch is generated in one `generate` call: the batch runs to its longest drawn length and each
sample is then cut to its own length, or just after its first stop token, whichever comes first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from detox.config import GenerationConfig


@dataclass
class Samples:
    query_ids: torch.Tensor
    """(B, Tq) prompt tokens, left-padded."""
    query_mask: torch.Tensor
    """(B, Tq) 1 on prompt tokens."""
    response_ids: torch.Tensor
    """(B, Tr) sampled tokens, right-padded; a stop token, when sampled, is the last kept token."""
    response_mask: torch.Tensor
    """(B, Tr) 1 on kept response tokens."""


def draw_lengths(n: int, gen: GenerationConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n,) response lengths drawn uniformly from [min_new_tokens, max_new_tokens]."""
    return torch.randint(gen.min_new_tokens, gen.max_new_tokens + 1, (n,), generator=generator)


def stop_token_ids(model, tokenizer) -> list[int]:
    """EOS ids of the tokenizer and of the model's generation config (instruct models often have several)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def sample(
    model, tokenizer, query_ids: torch.Tensor, query_mask: torch.Tensor, lengths: torch.Tensor, gen: GenerationConfig
) -> Samples:
    """Sample one response per left-padded query; `lengths` (B,) caps each response."""
    stops = stop_token_ids(model, tokenizer)
    output = model.generate(
        input_ids=query_ids,
        attention_mask=query_mask,
        max_new_tokens=int(lengths.max()),
        do_sample=True,
        top_k=gen.top_k,
        top_p=gen.top_p,
        temperature=gen.temperature,
        eos_token_id=stops,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )
    response_ids = output[:, query_ids.shape[1] :]
    response_mask = response_keep_mask(response_ids, lengths.to(response_ids.device), stops)
    response_ids = response_ids.masked_fill(response_mask == 0, tokenizer.pad_token_id)
    return Samples(query_ids, query_mask, response_ids, response_mask)


def response_keep_mask(response_ids: torch.Tensor, lengths: torch.Tensor, stops: list[int]) -> torch.Tensor:
    """(B, Tr) mask: 1 up to each row's length, and up to and including its first stop token."""
    positions = torch.arange(response_ids.shape[1], device=response_ids.device)
    is_stop = torch.isin(response_ids, torch.tensor(stops, device=response_ids.device))
    # a position is kept while no stop token occurred strictly before it
    stops_before = torch.cumsum(is_stop.long(), dim=1) - is_stop.long()
    keep = (positions[None, :] < lengths[:, None]) & (stops_before == 0)
    return keep.long()


def decode_responses(tokenizer, samples: Samples) -> list[str]:
    """Response texts without stop or padding tokens."""
    rows = [ids[mask.bool()] for ids, mask in zip(samples.response_ids, samples.response_mask)]
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


def tokenize_prompts(tokenizer, prompts: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (B, Tq) ids and mask, with no special tokens added (the prompt is a text prefix)."""
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    return batch["input_ids"].to(device), batch["attention_mask"].to(device)


def generate_completions(
    model,
    tokenizer,
    prompts: list[str],
    gen: GenerationConfig,
    *,
    num_return_sequences: int = 1,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = False,
    desc: str = "generate",
) -> list[list[str]]:
    """`num_return_sequences` completions per prompt, sampled in batches.

    The lengths come from a generator seeded by `seed`, and sampling runs under a forked RNG seeded the same way,
    so every model evaluated with the same prompts and seed gets the same prompt order, lengths and seeds.
    """
    device = next(model.parameters()).device
    expanded = [p for p in prompts for _ in range(num_return_sequences)]
    lengths = draw_lengths(len(expanded), gen, torch.Generator().manual_seed(seed))
    texts: list[str] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in tqdm(range(0, len(expanded), batch_size), desc=desc, disable=not progress):
            chunk = expanded[start : start + batch_size]
            ids, mask = tokenize_prompts(tokenizer, chunk, device)
            samples = sample(model, tokenizer, ids, mask, lengths[start : start + batch_size], gen)
            texts.extend(decode_responses(tokenizer, samples))
    return [texts[i : i + num_return_sequences] for i in range(0, len(texts), num_return_sequences)]
