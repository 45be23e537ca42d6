"""Nothing runs or leaks that the user did not ask for: no code from a model directory without trust_remote_code, no
pickle from a checkpoint or model directory, safetensors-only checkpoints, and no secrets in anything a run writes."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training_runs import (
    REPO,
    one_thread,  # noqa: F401 (fixture)
    run_training,
    subprocess_env,
    tiny_argv,
    write_config,
)

from detox.jobs import train_ppo
from detox.checkpoint import CheckpointError
from detox.config import LoraConfig, ModelConfig
from detox.models import build_models, load_causal_lm, load_tokenizer

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz", ".joblib"}


def plant_remote_code(model_dir: Path, marker: Path, model_type: str | None = None) -> None:
    """Point config.json (and tokenizer_config.json, if any) at custom modules that create `marker` when imported."""
    config = json.loads((model_dir / "config.json").read_text()) if (model_dir / "config.json").is_file() else {}
    if model_type is not None:
        config["model_type"] = model_type
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                          "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (model_dir / "config.json").write_text(json.dumps(config))
    if (model_dir / "tokenizer_config.json").is_file():
        tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
        tokenizer_config["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
        (model_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    for module in ("configuration_evil", "modeling_evil", "tokenization_evil"):
        (model_dir / f"{module}.py").write_text(f"open({str(marker)!r}, 'a').write({module!r} + '\\n')\n")


class _Payload:
    """Unpickling this creates the file `marker`: stands in for any code a malicious pickle would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def plant_pickles(directory: Path, names: list[str], marker: Path) -> None:
    for name in names:
        if name.endswith((".bin", ".pt", ".pth")):
            torch.save({"state": _Payload(marker)}, directory / name)  # torch's zip format, pickle inside
        else:
            (directory / name).write_bytes(pickle.dumps(_Payload(marker)))


# ---------------------------------------------------------------- remote code


def test_custom_code_of_an_unknown_architecture_is_refused(tmp_path):
    model_dir, marker = tmp_path / "model", tmp_path / "CODE_RAN"
    model_dir.mkdir()
    plant_remote_code(model_dir, marker, model_type="evil_arch")
    with pytest.raises(ValueError, match="(?s)contains custom code which must be executed.*trust_remote_code=True"):
        build_models(ModelConfig(name_or_path=str(model_dir)), LoraConfig())
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        load_causal_lm(str(model_dir))
    assert not marker.exists()


def test_custom_code_beside_a_known_architecture_is_ignored(tmp_path, tiny_lm_path):
    # A Llama directory whose config also maps the Auto classes to custom modules: loaded with the library's own
    # Llama and tokenizer classes, and the custom modules are never imported.
    model_dir, marker = tmp_path / "model", tmp_path / "CODE_RAN"
    shutil.copytree(tiny_lm_path, model_dir)
    plant_remote_code(model_dir, marker)
    models = build_models(ModelConfig(name_or_path=str(model_dir)), LoraConfig())
    assert type(models.policy.lm.get_base_model()).__name__ == "LlamaForCausalLM"
    assert type(load_causal_lm(str(model_dir))).__name__ == "LlamaForCausalLM"
    assert type(load_tokenizer(str(model_dir))).__module__.startswith("transformers.")
    assert not marker.exists()


def test_custom_code_runs_only_with_trust_remote_code(tmp_path):
    # The control that shows the planted code is live: with trust_remote_code it runs. In a subprocess, so the module
    # is copied into a throw-away HF_MODULES_CACHE rather than the user's.
    model_dir, marker = tmp_path / "model", tmp_path / "CODE_RAN"
    model_dir.mkdir()
    plant_remote_code(model_dir, marker, model_type="evil_arch")
    script = "\n".join([
        "from detox.models import load_causal_lm",
        "try:",
        f"    load_causal_lm({str(model_dir)!r}, trust_remote_code=True)",
        "except Exception:",  # the planted code defines no real model; having run is all that matters
        "    pass",
    ])
    subprocess.run([sys.executable, "-c", script], cwd=REPO, env=subprocess_env(HF_MODULES_CACHE=str(tmp_path / "m")),
                   timeout=300, check=True, capture_output=True)
    assert marker.read_text().startswith("configuration_evil")


# ---------------------------------------------------------------- pickle


def test_model_weights_in_a_pickle_are_never_unpickled(tmp_path, tiny_lm_path):
    # A model directory whose only weights are a malicious pytorch_model.bin: loading fails, the payload does not run.
    model_dir, marker = tmp_path / "model", tmp_path / "UNPICKLED"
    shutil.copytree(tiny_lm_path, model_dir)
    (model_dir / "model.safetensors").unlink()
    plant_pickles(model_dir, ["pytorch_model.bin"], marker)
    with pytest.raises(Exception, match="Weights only load failed"):
        load_causal_lm(str(model_dir))
    assert not marker.exists()


def _pickle_free(directory: Path) -> list[str]:
    """Files under `directory` that hold a pickle, by name or by content (pickle protocol 2+ or a torch zip)."""
    found = []
    for path in directory.rglob("*"):
        if path.is_file():
            head = path.read_bytes()[:4]
            if path.suffix in PICKLE_SUFFIXES or head[:1] == b"\x80" or head == b"PK\x03\x04":
                found.append(str(path.relative_to(directory)))
    return found


def test_checkpoints_are_safetensors_and_resume_never_unpickles(tmp_path, tiny_lm_path, one_thread):
    output_dir, marker = tmp_path / "run", tmp_path / "UNPICKLED"
    argv = tiny_argv(tiny_lm_path, output_dir, write_config(tmp_path), "--ppo.steps", "2",
                     "--checkpoint.save_every", "1")
    train_ppo.main(argv)
    for directory in (output_dir / "checkpoint-2", output_dir / "final"):
        assert _pickle_free(directory) == []
        assert {p.name for p in directory.rglob("*.safetensors")} >= {"adapter_model.safetensors",
                                                                       "value_head.safetensors"}

    # Pickles named like the state files other trainers write, planted in the checkpoint to resume: none is read.
    checkpoint = output_dir / "checkpoint-2"
    plant_pickles(checkpoint, ["optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.pkl",
                               "training_args.bin", "value_head.bin"], marker)
    plant_pickles(checkpoint / "model", ["adapter_model.bin", "pytorch_model.bin"], marker)
    resumed = train_ppo.build([*argv, "--ppo.steps", "3", "--checkpoint.resume_from_checkpoint", str(checkpoint)])
    assert resumed.trainer.step_index == 2
    train_ppo.run(resumed)
    assert not marker.exists()

    # Without its safetensors file, a state is missing, with no fallback to the pickle beside it.
    (checkpoint / "optimizer.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"optimizer.safetensors is missing"):
        train_ppo.build([*argv, "--checkpoint.resume_from_checkpoint", str(checkpoint)])
    (checkpoint / "model" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        train_ppo.build([*argv, "--checkpoint.resume_from_checkpoint", str(checkpoint)])
    assert not marker.exists()


# ---------------------------------------------------------------- secrets

SECRETS = {
    "WANDB_API_KEY": "fakeWandbKey0123456789abcdef0123456789ab",  # 40 characters, like a real key
    "HF_TOKEN": "hf_fakeHubToken0123456789abcdefghijkl",
    "OPENAI_API_KEY": "sk-fakeOpenaiKey0123456789abcdef",
    "DATABASE_PASSWORD": "fake-db-password-0123456789",
}


@pytest.mark.slow
def test_secrets_never_reach_files_or_logs(tmp_path, tiny_lm_path):
    # A real 2-step run with W&B (offline) and fake secrets in the environment, one of them also pasted into the
    # config (a reward option) and onto the command line (the run name). Every byte written under the run
    # directory (config dumps, checkpoints, metrics, the W&B run file and logs) and the console output is searched.
    config = write_config(tmp_path, api_key=SECRETS["HF_TOKEN"], note=f"uses {SECRETS['OPENAI_API_KEY']}")
    output_dir, log = tmp_path / "run", tmp_path / "run.log"
    argv = tiny_argv(tiny_lm_path, output_dir, config, "--ppo.steps", "2", "--checkpoint.save_every", "1",
                     "--logging.report_to", "wandb", "--logging.run_name", f"run-{SECRETS['HF_TOKEN']}")
    run_training(argv, log, env=subprocess_env(WANDB_MODE="offline", **SECRETS))

    written = [p for p in output_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in written), "W&B wrote no run file: the test would miss its content"
    assert (output_dir / "final" / "detox_config.yaml").is_file()
    for path in [*written, log]:
        content = path.read_bytes()
        for name, value in SECRETS.items():
            assert value.encode() not in content, f"{name} leaked into {path}"
    assert "<redacted>" in (output_dir / "config.yaml").read_text()
