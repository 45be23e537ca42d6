"""TRL 0.11.4's own environment: its virtual environment, a view of the model it can read, and the worker command.

TRL 0.11.4 is the last release with the classic PPOTrainer and needs transformers 4.46, so it runs in .venv-trl011/
(made on first use with PINS) as benchmarks/trl011_worker.py; benchmarks/vs_trl_ppo.py and
benchmarks/detox_per_minute.py start it through `worker_command`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.harness import REPO, run

VENV = REPO / ".venv-trl011"
WORKER = "benchmarks.trl011_worker"
"""The worker module, run from the repository root by the venv's python."""
PINS = [  # TRL 0.11.4 is the last release with the classic PPOTrainer; these are versions it works with
    "torch==2.13.0",
    "trl==0.11.4",
    "transformers==4.46.3",
    "tokenizers==0.20.3",
    "accelerate==1.1.1",
    "datasets==3.1.0",
    "rich==13.9.4",  # trl 0.11 imports rich; newer tyro releases no longer pull it in
    "tyro==0.8.14",
    "alt-profanity-check==1.9.1",  # the same scorer, and scikit-learn model, as ours
    "scikit-learn==1.9.1",
    "peft==0.13.2",  # LoRA for benchmarks/detox_per_minute.py, which trains the profanity preset's adapter
]


def ensure_venv() -> Path:
    """The venv's python; creates the venv, or reinstalls when PINS changed since it was made."""
    python, marker = VENV / "bin" / "python", VENV / "detox-pins.txt"
    if python.exists() and marker.is_file() and marker.read_text() == "\n".join(PINS):
        return python
    print(f"creating {VENV} with {' '.join(PINS)}", flush=True)
    run([sys.executable, "-m", "venv", VENV])
    run([python, "-m", "pip", "install", "--quiet", *PINS])
    marker.write_text("\n".join(PINS))
    return python


def trl_model_dir(src: Path, dst: Path) -> Path:
    """A view of the model directory that transformers 4.46 reads the same way transformers 5 does.

    Weights and tokenizer.json are symlinked; the configs are rewritten where the formats differ: 4.46 knows no
    `TokenizersBackend` tokenizer class, reads `rope_theta` (not `rope_parameters`, which it would silently ignore
    and fall back to theta 10000), and would treat the GGUF note in `quantization_config` as a quantizer to load.
    """
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "tokenizer.json", "generation_config.json"):
        if not (dst / name).exists():
            (dst / name).symlink_to(src / name)
    config = json.loads((src / "config.json").read_text())
    config.pop("quantization_config", None)  # the weights were dequantised when the GGUF was converted
    rope = config.pop("rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"{src}/config.json: rope_type {rope['rope_type']!r} has no transformers 4.46 spelling here.")
    config.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
    config["torch_dtype"] = config.pop("dtype", "float32")
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer = json.loads((src / "tokenizer_config.json").read_text())
    for key in ("backend", "is_local", "local_files_only"):
        tokenizer.pop(key, None)
    tokenizer["tokenizer_class"] = "PreTrainedTokenizerFast"
    (dst / "tokenizer_config.json").write_text(json.dumps(tokenizer, indent=2))
    return dst


def worker_command(python: Path, flags: dict[str, object]) -> list[str]:
    """The worker run as a module by the venv's `python` (from the repository root), with `--name value` per flag;
    a None value leaves its flag out."""
    pairs = [(f"--{name}", str(value)) for name, value in flags.items() if value is not None]
    return [str(python), "-m", WORKER, *(item for pair in pairs for item in pair)]
