"""End-to-end training: learning on a tiny model, `accelerate launch` with the real SmolLM2, two CPU processes, and
the bad inputs that must fail before training starts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from detox import launch
from detox.jobs import train_ppo
from detox.hub import HubUnreachableError

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# Shrunk knobs, each for speed on a 2-core CPU: a few prompts, short responses, one PPO epoch.
SMALL = [
    "--ppo.batch_size", "4", "--ppo.mini_batch_size", "2", "--ppo.ppo_epochs", "1",
    "--generation.min_new_tokens", "4", "--generation.max_new_tokens", "6",
    "--data.max_prompts", "40", "--logging.report_to", "none",
]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=f"{REPO}{os.pathsep}{TESTS}", OMP_NUM_THREADS="1")
    env.pop("WANDB_API_KEY", None)
    return env


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def aligned_token_set(model_path: str, share: float = 0.125, seed: int = 0) -> list[int]:
    """The `share` of the vocabulary whose embeddings point most along one random direction.

    A random model samples them about `share` of the time, and moving its last hidden state along that direction
    raises all of them at once, so the reward is easy to earn (a set of unrelated ids would have to be learned one
    embedding row at a time).
    """
    from transformers import AutoModelForCausalLM

    embeddings = AutoModelForCausalLM.from_pretrained(model_path).get_output_embeddings().weight.detach()
    direction = torch.randn(embeddings.shape[1], generator=torch.Generator().manual_seed(seed))
    k = int(share * embeddings.shape[0])
    return torch.topk(embeddings @ direction, k).indices.tolist()


def test_ppo_learns_an_easy_reward(tiny_lm_path, tmp_path, monkeypatch):
    """Reward = share of completion tokens in an aligned eighth of the vocabulary; PPO must raise it well above
    its start within a few dozen steps while the KL to the reference stays bounded.

    Responses are two tokens long: with a sequence-level reward, longer responses spread the credit over more
    tokens and need more steps than a unit test should take (the one-token bandit learns even faster)."""
    monkeypatch.syspath_prepend(str(TESTS))
    ids_file = tmp_path / "token_set.json"
    ids_file.write_text(json.dumps(aligned_token_set(tiny_lm_path)))
    reward = f'[{{type: callable, options: {{path: "train_fixtures:token_set_share", kwargs: {{ids_file: "{ids_file}"}}}}}}]'
    argv = SMALL + [
        "--model.name_or_path", tiny_lm_path,
        "--lora.enabled", "false",  # the tiny model is trained whole; LoRA on hidden size 16 learns too slowly
        "--ppo.steps", "30",
        "--ppo.batch_size", "32", "--ppo.mini_batch_size", "8", "--ppo.ppo_epochs", "4",
        "--generation.min_new_tokens", "2", "--generation.max_new_tokens", "2",
        "--data.max_prompts", "60",
        "--ppo.learning_rate", "1e-2",  # a random 2-layer model starts near uniform: a high lr moves it in time
        "--ppo.init_kl_coef", "0.05",
        "--rewards", reward,
        "--checkpoint.output_dir", str(tmp_path / "run"), "--checkpoint.save_every", "100",
    ]
    train_ppo.main(argv)
    metrics = [m for m in read_metrics(tmp_path / "run") if "reward/total" in m]
    first = sum(m["reward/total"] for m in metrics[:3]) / 3
    last = sum(m["reward/total"] for m in metrics[-3:]) / 3
    assert 0.05 < first < 0.25, f"a random model should earn about 1/8 at first, got {first}"
    assert last > 2 * first, f"mean reward did not rise: {first:.3f} -> {last:.3f}"
    kls = [m["objective/kl"] for m in metrics]
    assert max(kls) < 50, f"KL ran away: {kls}"


@pytest.mark.slow
def test_accelerate_launch_smollm2_then_plain_reload(smollm2_path, tmp_path):
    """The README's launcher on the real model and real prompts; the output loads without importing detox."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(REPO / "accelerate_configs" / "cpu.yaml"), str(REPO / "train_ppo.py"),
        "--config", str(REPO / "configs" / "offline_default.yaml"), *SMALL,
        "--ppo.steps", "2", "--checkpoint.output_dir", str(tmp_path),
    ]
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    final = tmp_path / "final"
    assert (final / "adapter_model.safetensors").is_file()
    # the adapter names its base by Hub id; offline, plain peft loads it onto the local copy of that base
    assert json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        "HuggingFaceTB/SmolLM2-135M-Instruct")
    reload = (
        "import sys, torch\n"
        "from peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"base = AutoModelForCausalLM.from_pretrained({smollm2_path!r})\n"
        f"model = PeftModel.from_pretrained(base, {str(final)!r})\n"
        f"tok = AutoTokenizer.from_pretrained({str(final)!r})\n"
        "ids = tok('The weather today', return_tensors='pt').input_ids\n"
        "out = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False)\n"
        "assert out.shape[1] == ids.shape[1] + 3\n"
        "assert not any(m.startswith(('detox', 'rewards')) for m in sys.modules), 'detox was imported'\n"
        "print('reloaded')\n"
    )
    env = subprocess_env() | {"PYTHONPATH": ""}
    check = subprocess.run([sys.executable, "-c", reload], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0 and "reloaded" in check.stdout, check.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_cpu_processes_keep_identical_weights(tiny_lm_path, tmp_path):
    """DDP over gloo: each rank samples its own prompts, and gradient averaging keeps the weights identical."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(REPO / "accelerate_configs" / "multi_cpu.yaml"), "--main_process_port", str(29500 + os.getpid() % 1000),
        str(TESTS / "ddp_worker.py"), *SMALL, "--model.name_or_path", tiny_lm_path,
        "--ppo.steps", "2", "--checkpoint.output_dir", str(tmp_path),
    ]
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = load_file(tmp_path / "rank0_weights.safetensors")
    rank1 = load_file(tmp_path / "rank1_weights.safetensors")
    assert rank0.keys() == rank1.keys() and rank0
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), f"{name} differs between ranks"
    initial = {n: p for n, p in load_file(tmp_path / "checkpoint-2" / "model" / "adapter_model.safetensors").items()}
    assert initial, "the checkpoint holds the adapter"
    lora_b = [v for k, v in rank0.items() if "lora_B" in k]
    assert any(v.abs().sum() > 0 for v in lora_b), "the adapters never moved off their zero initialisation"


def _fails_fast(argv: list[str], error: type, *fragments: str, within: float = 60.0) -> str:
    start = time.perf_counter()
    with pytest.raises(error) as caught:
        train_ppo.build(argv)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"
    assert time.perf_counter() - start < within
    return message


def test_missing_prompt_file(tiny_lm_path, tmp_path):
    _fails_fast(["--model.name_or_path", tiny_lm_path, "--data.prompts", str(tmp_path / "nope.jsonl"),
                 "--checkpoint.output_dir", str(tmp_path)], FileNotFoundError, "data.prompts", "nope.jsonl")


def test_prompt_set_empty_after_filtering(tiny_lm_path, tmp_path):
    _fails_fast(["--model.name_or_path", tiny_lm_path, "--data.min_toxicity", "0.9999",
                 "--checkpoint.output_dir", str(tmp_path)], ValueError, "no prompt is left", "data.min_toxicity")


def test_unreachable_hub_model_names_offline_preset(tmp_path):
    """Offline, a Hub id fails in well under the ~50 s the Hub client spends retrying."""
    _fails_fast(["--model.name_or_path", "EleutherAI/gpt-neo-125M", "--checkpoint.output_dir", str(tmp_path)],
                HubUnreachableError, "unreachable", "configs/offline_default.yaml", within=10.0)


def test_lora_target_module_the_model_lacks(tiny_lm_path, tmp_path):
    _fails_fast(SMALL + ["--model.name_or_path", tiny_lm_path, "--lora.target_modules", "[c_attn]",
                         "--checkpoint.output_dir", str(tmp_path)], ValueError, "lora.target_modules", "q_proj")


def test_num_shared_layers_beyond_the_model(tiny_lm_path, tmp_path):
    _fails_fast(SMALL + ["--model.name_or_path", tiny_lm_path, "--lora.enabled", "false",
                         "--model.num_shared_layers", "5", "--checkpoint.output_dir", str(tmp_path)],
                ValueError, "model.num_shared_layers (5)", "layer count (2)")


def test_fresh_run_refuses_a_directory_holding_a_run(tiny_lm_path, tmp_path):
    """A forgotten resume flag must not wipe an earlier run's checkpoints."""
    (tmp_path / "latest").write_text("checkpoint-3")
    (tmp_path / "checkpoint-3").mkdir()
    _fails_fast(["--model.name_or_path", tiny_lm_path, "--checkpoint.output_dir", str(tmp_path)],
                FileExistsError, "already holds a run", "resume_from_checkpoint latest", "overwrite")
    assert (tmp_path / "checkpoint-3").is_dir()


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_lone_cpu_process_takes_every_core_from_accelerates_one_thread(monkeypatch, restore_threads):
    import psutil

    cores = min(psutil.cpu_count(logical=False) or 1, len(os.sched_getaffinity(0)))
    for name in ("WORLD_SIZE", "DETOX_CPU_THREADS"):
        monkeypatch.delenv(name, raising=False)
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    launch.use_every_core_when_alone()  # plain `python train_ppo.py` with OMP_NUM_THREADS=1: the user's choice
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # what accelerate's launcher exports to its process
    launch.use_every_core_when_alone()
    assert torch.get_num_threads() == cores
    monkeypatch.setenv("DETOX_CPU_THREADS", "1")
    launch.use_every_core_when_alone()
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("DETOX_CPU_THREADS", "two")
    with pytest.raises(ValueError, match="DETOX_CPU_THREADS"):
        launch.use_every_core_when_alone()


def test_a_run_starts_from_an_earlier_runs_adapter(tiny_lm_path, tmp_path):
    """`model.name_or_path` may be another run's final/ (a LoRA adapter): the new run starts from its merged weights,
    which are also its reference, and its own adapter loads back onto that chain."""
    from training_runs import tiny_argv, write_config

    from detox.models import load_causal_lm

    config = write_config(tmp_path)
    first = tmp_path / "first"
    train_ppo.main(tiny_argv(tiny_lm_path, first, config, "--ppo.steps", "1"))
    assert (first / "final" / "adapter_config.json").is_file()
    ids = torch.tensor([[5, 17, 42, 7, 99]])
    with torch.no_grad():
        base = load_causal_lm(tiny_lm_path)(ids).logits
        after_first = load_causal_lm(str(first / "final"))(ids).logits
    assert (after_first - base).abs().max() > 1e-4  # the first run moved the weights

    second = tmp_path / "second"
    run = train_ppo.build(tiny_argv(str(first / "final"), second, config, "--ppo.steps", "1"))
    with torch.no_grad():
        reference = run.trainer.models.reference_lm()(input_ids=ids).logits
    assert torch.allclose(reference, after_first, atol=1e-5)  # the reference is the first run's model
    train_ppo.run(run)
    with torch.no_grad():
        after_second = load_causal_lm(str(second / "final"))(ids).logits
    assert (after_second - after_first).abs().max() > 1e-4

    loop = tmp_path / "loop"
    shutil.copytree(first / "final", loop)
    saved = yaml.safe_load((loop / "detox_config.yaml").read_text())
    saved["model"]["name_or_path"] = str(loop)
    (loop / "detox_config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(ValueError, match="names itself"):
        load_causal_lm(str(loop))
    # two adapters that name each other are caught the same way
    other = tmp_path / "other"
    shutil.copytree(first / "final", other)
    saved["model"]["name_or_path"] = str(other)
    (loop / "detox_config.yaml").write_text(yaml.safe_dump(saved))
    saved["model"]["name_or_path"] = str(loop)
    (other / "detox_config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(ValueError, match="names itself \\(or an adapter built on it\\)"):
        load_causal_lm(str(loop))
