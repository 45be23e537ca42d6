"""Scoring text under a causal language model: NLL per token and per sequence, perplexity of whole documents, and
greedy continuations. Evaluation, the recipes' metrics and the benchmarks all score text here.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from detox import metrics
from detox.generation import stop_token_ids, tokenize_prompts


def sequence_nll(model, tokenizer, contexts: list[str], targets: list[str], batch_size: int, desc: str):
    """Summed NLL in nats (N,) of each target given its context, and the number of target tokens scored (N,).

    Context and target are tokenised separately (no special tokens) and concatenated, as in generation; with an
    empty context the target's first token has nothing to condition on and is not scored.
    """
    per_token = token_nll(model, tokenizer, contexts, targets, batch_size, desc)
    nll = np.array([np.nansum(t) for t in per_token], dtype=float)
    count = np.array([int(np.isfinite(t).sum()) for t in per_token], dtype=np.int64)
    return nll, count


def token_nll(model, tokenizer, contexts: list[str], targets: list[str], batch_size: int, desc: str,
              target_ids: list[list[int]] | None = None) -> list[np.ndarray]:
    """NLL in nats of every token of each target given its context: one array per target, aligned with the target's
    tokens (`target_ids`, or the target tokenised without special tokens), NaN where a token is not scored (the first
    token of a target with an empty context)."""
    return token_scores(model, tokenizer, contexts, targets, batch_size, desc, target_ids)[0]


def token_scores(model, tokenizer, contexts: list[str], targets: list[str], batch_size: int, desc: str,
                 target_ids: list[list[int]] | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """token_nll's arrays, and beside each a bool array: whether the model's most likely next token (teacher-forced,
    greedy) is the target's token there (False where a token is not scored)."""
    ctx_ids = tokenizer(list(contexts), add_special_tokens=False)["input_ids"]
    tgt_ids = target_ids if target_ids is not None else tokenizer(list(targets), add_special_tokens=False)["input_ids"]
    out = [np.full(len(t), np.nan) for t in tgt_ids]
    hits_out = [np.zeros(len(t), dtype=bool) for t in tgt_ids]
    device = next(model.parameters()).device
    # batches of similar lengths: right padding to the longest row costs compute, not results
    order = sorted(range(len(tgt_ids)), key=lambda i: len(ctx_ids[i]) + len(tgt_ids[i]))
    for start in tqdm(range(0, len(order), batch_size), desc=desc):
        batch = order[start : start + batch_size]
        rows = [(ctx_ids[i], ctx_ids[i] + tgt_ids[i]) for i in batch]
        width = max(len(seq) for _, seq in rows)
        if width < 2:
            continue
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        labels, mask = torch.full_like(ids, -100), torch.zeros_like(ids)
        for i, (ctx, seq) in enumerate(rows):  # right padding: positions are 0..len-1 without position_ids
            ids[i, : len(seq)], mask[i, : len(seq)] = torch.tensor(seq, dtype=torch.long), 1
            first = max(len(ctx), 1)
            labels[i, first : len(seq)] = ids[i, first : len(seq)]
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1].float()
        target = labels[:, 1:].to(device)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
        nll = nll.view(len(rows), -1).cpu().numpy()
        hits = (logits.argmax(dim=-1) == target).cpu().numpy()
        for row, (i, (ctx, seq)) in enumerate(zip(batch, rows)):
            first = max(len(ctx), 1)  # label position p is predicted at row position p - 1
            out[i][first - len(ctx) :] = nll[row, first - 1 : len(seq) - 1]
            hits_out[i][first - len(ctx) :] = hits[row, first - 1 : len(seq) - 1]
    return out, hits_out


def greedy_completions(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """The greedy continuation of each prompt (left-padded batches, stopped at the model's EOS tokens)."""
    device, stops, out = next(model.parameters()).device, stop_token_ids(model, tokenizer), []
    for start in range(0, len(prompts), batch_size):
        ids, mask = tokenize_prompts(tokenizer, prompts[start : start + batch_size], device)
        with torch.no_grad():
            generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                       do_sample=False, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
        out += tokenizer.batch_decode(generated[:, ids.shape[1] :], skip_special_tokens=True)
    return out


def continuation_logprob(model, tokenizer, prompts: list[str], continuations: list[str], batch_size: int):
    """(N,) summed log-probability of each continuation after its prompt, and (N,) its token counts."""
    nll, count = sequence_nll(model, tokenizer, prompts, continuations, batch_size, "recipe log-probs")
    return -nll, count


def document_perplexity(key: str, model, tokenizer, documents: list[str], cfg,
                        desc: str | None = None) -> dict[str, float]:
    """Perplexity of `documents`, each scored alone from its start, with its 95% bootstrap interval over documents,
    keyed `key`. `cfg` gives batch_size, bootstrap_samples and seed (an evaluation's EvalConfig)."""
    nll, count = sequence_nll(model, tokenizer, [""] * len(documents), documents, cfg.batch_size,
                              desc or f"perplexity ({key})")
    return metrics.perplexity_with_ci(key, nll, count, cfg.bootstrap_samples, cfg.seed)
