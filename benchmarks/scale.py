"""PPO steps of a preset's architecture with random weights: peak memory, seconds per phase, tokens per second.

    python -m benchmarks.scale --preset gpt-neo-125m|gpt-neo-2.7b|gpt-j-6b [--layers N] [--steps K] [--json FILE]
    python -m benchmarks.scale --preset gpt-j-6b --layers 2 --steps 2 --ppo.ppo_epochs 1   # dotted run flags pass on

No Hub: the architecture comes from the model config shipped in detox/assets/model_configs (EleutherAI's published
hyperparameters) and gets random weights. The run config is the preset's own (configs/<preset>.yaml: dtype, LoRA,
gradient checkpointing, shared layers, batch and mini-batch sizes, response lengths); only the prompts and the reward
are replaced: synthetic prompts of the preset's prompt lengths, written in a word-per-id tokenizer that covers the
model's vocabulary, and the offline toxicity scorer. The steps run through the project's own PPOTrainer.

`--layers` keeps the preset's width but stacks fewer layers (the shared share of the reference is kept), `--width`
narrows it too (for quick checks of the memory model). Peak memory is measured within each phase of the steps
(generate, score, forward, update; reset at the start of each) and the largest is the step's peak:
`torch.cuda.max_memory_allocated`/reserved on a GPU and, on CPU, the resident-set peak (VmHWM) minus the resident size
just before the model was built (the Python interpreter, torch, transformers and the reward scorer are baseline, not
model memory). Building the model (random initialisation) is not part of any phase.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import random
import statistics
import tempfile
from contextlib import contextmanager
from pathlib import Path

import psutil
import torch
from accelerate import Accelerator
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from benchmarks.harness import REPO
from detox import launch
from detox.config import parse_config
from detox.models import DTYPES, assemble_models
from detox.trainer import PPOTrainer
from rewards import RewardComposer

PRESETS = ("gpt-neo-125m", "gpt-neo-2.7b", "gpt-j-6b")
MODEL_CONFIGS = REPO / "detox" / "assets" / "model_configs"
EOS_TEXT = "<|endoftext|>"
PHASES = ("generate", "score", "forward", "update")


def model_config(preset: str, layers: int | None = None, width: int | None = None):
    """The preset's transformers config, optionally with fewer layers or a narrower width (head size kept)."""
    raw = json.loads((MODEL_CONFIGS / f"{preset}.json").read_text())
    config = AutoConfig.for_model(**raw)
    if width is not None:
        head_size = config.hidden_size // config.num_attention_heads
        if width % head_size:
            raise ValueError(f"--width ({width}) must be a multiple of the preset's head size ({head_size}).")
        _set_first(config, ("n_embd", "hidden_size"), width)
        _set_first(config, ("n_head", "num_heads"), width // head_size)
    if layers is not None:
        _set_first(config, ("n_layer", "num_layers"), layers)
        if hasattr(config, "attention_layers"):  # GPT-Neo alternates global and local attention layer by layer
            config.attention_layers = (config.attention_layers * layers)[:layers]
            config.attention_types = [[[kind], 1] for kind in config.attention_layers]
    return config


def _set_first(config, names: tuple[str, ...], value: int) -> None:
    setattr(config, next(name for name in names if name in config.to_dict()), value)


def word_tokenizer(vocab_size: int, eos_id: int):
    """A tokenizer with one whitespace-separated word per token id (`w<id>`), covering the whole vocabulary."""
    vocab = {f"w{i}": i for i in range(vocab_size)}
    del vocab[f"w{eos_id}"]
    vocab[EOS_TEXT] = eos_id
    backend = Tokenizer(models.WordLevel(vocab, unk_token=EOS_TEXT))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS_TEXT, pad_token=EOS_TEXT,
                                   padding_side="left")


def synthetic_prompts(n: int, low: int, high: int, vocab_size: int, eos_id: int, seed: int = 0) -> list[str]:
    """`n` prompts of random words, each [low, high] tokens long (the preset's prompt window)."""
    rng = random.Random(seed)
    words = [i for i in range(vocab_size) if i != eos_id]
    return [" ".join(f"w{rng.choice(words)}" for _ in range(rng.randint(low, high))) for _ in range(n)]


def run_config(preset: str, steps: int, output_dir: str, layers: int | None, full_layers: int, extra: list[str]):
    """The preset's run config with the offline reward, no tracker, no judges (the step is what is measured: a judge
    classifier, built into the cache by whichever process first needs it, would add its own memory), and the
    reference's shared share kept."""
    argv = ["--config", str(REPO / "configs" / f"{preset}.yaml"), "--ppo.steps", str(steps),
            "--rewards", "[{type: offline_toxicity}]", "--logging.report_to", "none", "--logging.judges", "[]",
            "--checkpoint.output_dir", output_dir, *extra]
    cfg = parse_config(argv)
    shared = cfg.model.num_shared_layers
    if layers is not None and shared:
        cfg.model.num_shared_layers = shared * layers // full_layers
    return cfg


def rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def release_freed_memory() -> None:
    """Hand memory freed by earlier phases back to the system (glibc keeps it otherwise), so that a phase's resident
    peak starts from the memory in use rather than from what an earlier phase happened to leave cached."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the peak keeps whatever the allocator holds
        pass


def reset_peak(device) -> None:
    """Start the peak from the memory in use now."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        release_freed_memory()
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM, the resident-set peak, to the current RSS


def peak_bytes(device) -> dict[str, int]:
    """The peak since the last `reset_peak`: allocated and reserved on CUDA, resident set (VmHWM) on CPU."""
    if device.type == "cuda":
        return {"allocated": torch.cuda.max_memory_allocated(device), "reserved": torch.cuda.max_memory_reserved(device)}
    status = Path("/proc/self/status").read_text()
    return {"rss": int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024}


def watch_phase_peaks(trainer) -> dict[str, dict[str, int]]:
    """Record each phase's peak (reset at its start) in the returned dict, by wrapping the trainer's phase timer."""
    peaks: dict[str, dict[str, int]] = {}
    timed, device = trainer._timed, trainer.accelerator.device

    @contextmanager
    def timed_and_measured(phase: str):
        reset_peak(device)
        with timed(phase):
            yield
        seen = peaks.setdefault(phase, {})
        for kind, value in peak_bytes(device).items():
            seen[kind] = max(seen.get(kind, 0), value)

    trainer._timed = timed_and_measured
    return peaks


def memory_figures(peaks: dict[str, dict[str, int]], baseline: int) -> dict[str, float]:
    """GiB at the step's peak and at each phase's: allocated (and reserved) on CUDA; on CPU the resident-set peak and
    its part above `baseline`, the resident size before the model was built."""
    out: dict[str, float] = {}
    for kind in next(iter(peaks.values())):
        out[f"peak_{kind}_gib"] = max(p[kind] for p in peaks.values()) / 2**30
    if "peak_rss_gib" in out:
        out["baseline_rss_gib"] = baseline / 2**30
        out["peak_rss_above_baseline_gib"] = out["peak_rss_gib"] - baseline / 2**30
    main_kind = "rss" if "peak_rss_gib" in out else "allocated"
    for phase, p in peaks.items():
        out[f"peak_gib/{phase}"] = (p[main_kind] - (baseline if main_kind == "rss" else 0)) / 2**30
    return out


def build_trainer(args, extra: list[str], output_dir: str):
    """The preset's models (random weights), synthetic prompts and the offline reward, in a PPOTrainer.

    Returns the trainer and the resident size measured after everything but the model exists."""
    full_layers = model_config(args.preset).num_hidden_layers
    cfg = run_config(args.preset, args.steps, output_dir, args.layers, full_layers, extra)
    launch.use_every_core_when_alone()
    accelerator = Accelerator()
    torch.manual_seed(cfg.ppo.seed)
    composer = RewardComposer(cfg.rewards)
    composer([""], ["warm up the scorer"], completion_ids=[[0]])  # its model loads on first use: baseline, not model
    config = model_config(args.preset, args.layers, args.width)
    eos = config.eos_token_id
    tokenizer = word_tokenizer(config.vocab_size, eos)
    prompts = synthetic_prompts(cfg.ppo.batch_size * args.steps * accelerator.num_processes,
                                cfg.data.min_prompt_tokens, cfg.data.max_prompt_tokens, config.vocab_size, eos)
    baseline = rss_bytes()
    with torch.device(accelerator.device):
        lm = AutoModelForCausalLM.from_config(config, dtype=DTYPES[cfg.model.dtype])
    models = assemble_models(lm, f"random:{args.preset}", cfg.model, cfg.lora)
    return PPOTrainer(cfg, accelerator, models, tokenizer, prompts, composer), baseline


def summarise(rows: list[dict], batch: int, prompt_tokens: float) -> dict[str, float]:
    """Per-step means over the measured steps (the first is dropped when there are more: it pays one-off costs)."""
    kept = rows[1:] if len(rows) > 1 else rows
    mean = {key: statistics.fmean(r[key] for r in kept) for key in kept[0]}
    response = mean["tokens/response_length"]
    out = {f"s_per_step/{p}": mean[f"time/{p}"] for p in (*PHASES, "step")}
    out["tokens_per_s"] = batch * (prompt_tokens + response) / mean["time/step"]
    out["generated_tokens_per_s"] = batch * response / mean["time/generate"]
    out["generation_share"] = mean["time/generate"] / mean["time/step"]
    out["steps_averaged"] = len(kept)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--preset", required=True, choices=PRESETS)
    parser.add_argument("--layers", type=int, default=None, help="decoder layers (default: the preset's depth)")
    parser.add_argument("--width", type=int, default=None, help="hidden size (default: the preset's width)")
    parser.add_argument("--steps", type=int, default=3, help="PPO steps to run")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args, extra = parser.parse_known_args(argv)
    for name in ("layers", "width", "steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise SystemExit(f"--{name} ({getattr(args, name)}) must be a positive whole number.")

    with tempfile.TemporaryDirectory(prefix="scale-") as output_dir:
        trainer, baseline = build_trainer(args, extra, output_dir)
        cfg, device = trainer.cfg, trainer.accelerator.device
        lm_config = trainer.models.policy.lm.config
        print(f"{args.preset}: {lm_config.num_hidden_layers} layers, width {lm_config.hidden_size}, "
              f"{cfg.model.dtype}, LoRA {cfg.lora.enabled}, gradient checkpointing "
              f"{cfg.model.gradient_checkpointing}, shared layers {cfg.model.num_shared_layers}, batch "
              f"{cfg.ppo.batch_size}/{cfg.ppo.mini_batch_size}, {cfg.ppo.ppo_epochs} epochs, response "
              f"{cfg.generation.min_new_tokens}-{cfg.generation.max_new_tokens} tokens, on {device}", flush=True)
        peaks = watch_phase_peaks(trainer)
        rows, prompt_tokens = [], []
        for step in range(args.steps):
            prompt_tokens.append(sum(len(p.split()) for p in trainer.batch_prompts(step)) / cfg.ppo.batch_size)
            stats, _ = trainer.step()
            rows.append({k: v for k, v in stats.items() if k.startswith("time/") or k == "tokens/response_length"})
            phases = " ".join(f"{p} {stats[f'time/{p}']:.2f}" for p in PHASES)
            print(f"step {step + 1}/{args.steps}: {stats['time/step']:.2f} s ({phases})", flush=True)
    result = {"preset": args.preset, "layers": lm_config.num_hidden_layers, "width": lm_config.hidden_size,
              "batch_size": cfg.ppo.batch_size, "device": str(device), **memory_figures(peaks, baseline),
              **summarise(rows, cfg.ppo.batch_size, statistics.fmean(prompt_tokens))}
    for key, value in result.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
