"""Sharded training on two CPU processes (gloo) with the shipped accelerate configs: FSDP2 and DeepSpeed ZeRO-3.

Each engine: `accelerate launch --config_file accelerate_configs/<engine>.yaml --num_processes 2 train_ppo.py` trains
2 steps and checkpoints after each; a second launch resumes from the first run's checkpoint of step 1 and must
replay step 2 exactly; both final models must be the same full (unsharded) adapter, loadable with plain peft.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from training_runs import REPO, metrics_by_step, subprocess_env, tiny_argv, write_config

ENGINES = {
    "fsdp": "fsdp.yaml",
    "deepspeed_zero3": "deepspeed_zero3.yaml",
}


def launch(engine: str, argv: list[str], port: int) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "accelerate_configs" / ENGINES[engine]), "--num_processes", "2",
               "--main_process_port", str(port), str(REPO / "train_ppo.py"), *argv]
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_sharded_training_checkpoints_resumes_and_reloads(engine, tmp_path, tiny_lm_path):
    if engine.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed: pip install -e '.[deepspeed]'")
    config = write_config(tmp_path)
    flags = ["--ppo.steps", "2", "--checkpoint.save_every", "1", "--checkpoint.keep_last", "null",
             "--logging.sample_every", "1"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    port = 29600 + os.getpid() % 200
    done = launch(engine, tiny_argv(tiny_lm_path, straight, config, *flags), port)
    # the engine really sharded: accelerate's FSDP2 or DeepSpeed, not a silent fall-back to data parallelism
    assert f"engine: {engine.split('_')[0].upper()}, 2 process(es)" in done.stdout, done.stdout[-2000:]
    launch(engine, tiny_argv(tiny_lm_path, resumed, config, *flags,
                             "--checkpoint.resume_from_checkpoint", str(straight / "checkpoint-1")), port + 1)

    expected, got = metrics_by_step(straight), metrics_by_step(resumed)
    assert got[2] == expected[2], "the resumed run's step 2 differs from the uninterrupted run's"
    assert abs(expected[2]["objective/kl"]) > 1e-4, "the policy did not move: the comparison would prove nothing"

    # The final adapter is whole (the tiny model's full shapes, not one rank's slice) and both runs agree on it.
    final = load_file(straight / "final" / "adapter_model.safetensors")
    assert final and final.keys() == load_file(resumed / "final" / "adapter_model.safetensors").keys()
    for name, tensor in load_file(resumed / "final" / "adapter_model.safetensors").items():
        assert torch.equal(tensor, final[name]), f"{name} differs between the straight and the resumed run"
    hidden = 16  # the tiny model's width (tests/conftest.py)
    q_proj = next(t for n, t in final.items() if "q_proj.lora_A" in n)
    assert q_proj.shape == (16, hidden), f"lora_A of q_proj is {tuple(q_proj.shape)}: a shard, not the full matrix"
    assert any(t.abs().sum() > 0 for n, t in final.items() if "lora_B" in n), "the adapters never trained"

    reload = (
        "import sys\n"
        "from peft import AutoPeftModelForCausalLM\n"
        f"model = AutoPeftModelForCausalLM.from_pretrained({str(straight / 'final')!r})\n"
        "assert not any(m.startswith(('detox', 'rewards')) for m in sys.modules), 'detox was imported'\n"
        "print('reloaded', sum(p.numel() for n, p in model.named_parameters() if 'lora_' in n))\n"
    )
    check = subprocess.run([sys.executable, "-c", reload], env=subprocess_env() | {"PYTHONPATH": ""},
                           capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0 and "reloaded" in check.stdout, check.stderr[-3000:]
    assert int(check.stdout.split()[-1]) == sum(t.numel() for t in final.values())
