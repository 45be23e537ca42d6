"""Helpers for the reliability tests: tiny end-to-end training runs, in-process or as a killable subprocess.

A run here is the real pipeline (train_ppo.py: config, prompts, policy, PPO steps, checkpoints) on the 2-layer random
model of the `tiny_lm_path` fixture, with a reward from tests/reward_fixtures.py so no classifier has to load.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import yaml

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
if str(TESTS) not in sys.path:  # `type: callable` rewards import reward_fixtures by module name
    sys.path.insert(0, str(TESTS))

TINY_RUN = [
    "--ppo.batch_size", "4",
    "--ppo.mini_batch_size", "2",  # two optimiser steps per epoch: a later loss is computed after an update
    "--ppo.ppo_epochs", "1",
    "--generation.min_new_tokens", "4",  # a few tokens are enough to exercise sampling, masks and rewards
    "--generation.max_new_tokens", "6",
    "--data.max_prompts", "40",
    "--logging.report_to", "none",
    "--ppo.learning_rate", "0.01",  # the random model's gradients are tiny: a high rate makes every step move the
]  # policy (non-zero KL), so equal metrics after a resume are not equal by standing still
"""Flags shared by every tiny run."""

UNSTABLE_METRICS = ("time/", "memory/")
"""Metric prefixes that measure the machine (seconds, resident memory), not the training: never compared."""


def write_config(directory: Path, function: str = "count_token_reward", name: str = "words", **kwargs) -> Path:
    """A YAML run config whose only reward is `reward_fixtures:<function>` with `kwargs` bound to it."""
    directory.mkdir(parents=True, exist_ok=True)
    options = {"path": f"reward_fixtures:{function}", **({"kwargs": kwargs} if kwargs else {})}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"rewards": [{"type": "callable", "name": name, "options": options}]}))
    return path


def tiny_argv(model: str, output_dir: Path, config: Path, *extra: str) -> list[str]:
    return ["--config", str(config), "--model.name_or_path", model, "--checkpoint.output_dir", str(output_dir),
            *TINY_RUN, *extra]


@pytest.fixture
def one_thread():
    """Run torch on one thread: with 2 cores shared by other jobs, torch's one-thread-per-core default oversubscribes
    the machine, and a tiny step measured ~15x slower than on one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def subprocess_env(**extra: str) -> dict[str, str]:
    return os.environ | {
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",  # see `one_thread`
        "DETOX_CPU_THREADS": "1",  # keep it at one under `accelerate launch` too
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]),
        **extra,
    }


def start_training(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python train_ppo.py argv` in the background, its output going to `log` (a pipe nobody reads could block it)."""
    handle = log.open("a")
    return subprocess.Popen([sys.executable, str(REPO / "train_ppo.py"), *argv], cwd=REPO,
                            env=env or subprocess_env(), stdout=handle, stderr=subprocess.STDOUT)


def run_training(argv: list[str], log: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run train_ppo.py to the end; fails the test with the run's output unless it exits 0. Returns the output."""
    process = start_training(argv, log, env)
    process.wait(timeout=timeout)
    output = log.read_text()
    assert process.returncode == 0, f"train_ppo.py exited with {process.returncode}:\n{output[-3000:]}"
    return output


def wait_for(condition: Callable[[], object], process: subprocess.Popen, log: Path, timeout: float = 300):
    """Poll `condition` every 2 ms until it returns something truthy (returned); fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if process.poll() is not None:
            pytest.fail(f"training exited ({process.returncode}) before the awaited moment:\n{log.read_text()[-3000:]}")
        time.sleep(0.002)
    process.kill()
    pytest.fail(f"timed out waiting for the training process:\n{log.read_text()[-3000:]}")


def latest_step(output_dir: Path) -> int:
    """Step of the checkpoint `latest` names, or -1 before the first checkpoint."""
    try:
        name = (output_dir / "latest").read_text().strip()
    except FileNotFoundError:
        return -1
    return int(re.fullmatch(r"checkpoint-(\d+)", name).group(1))


def metrics_by_step(output_dir: Path) -> dict[int, dict]:
    """The last metrics.jsonl row of each step, without machine measurements.

    The last one, because a run killed after logging step k but before checkpointing it logs step k again once resumed.
    """
    rows = {}
    for line in (output_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows[row.pop("step")] = {k: v for k, v in row.items() if not k.startswith(UNSTABLE_METRICS)}
    return rows


def samples_by_step(output_dir: Path, per_step: int) -> dict[int, list[dict]]:
    """samples.jsonl rows grouped by step, keeping the last `per_step` rows of a step logged twice (see
    `metrics_by_step`)."""
    rows: dict[int, list[dict]] = {}
    for line in (output_dir / "samples.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows.setdefault(row.pop("step"), []).append(row)
    return {step: group[-per_step:] for step, group in rows.items()}


def tmp_checkpoint_dirs(output_dir: Path) -> list[str]:
    """Names of the temporary entries (checkpoints or `latest` being written) in a run directory, if it exists."""
    if not output_dir.is_dir():
        return []
    return sorted(p.name for p in output_dir.iterdir() if p.name.startswith((".tmp-", ".latest.tmp-")))


def block_logprobs(lm, ids, mask, labels, adapters_off=False):
    """Per block, the summed log-probability of its learned tokens, and the mean token NLL over all the blocks,
    computed with the language model called directly (with LoRA's adapters switched off for the reference)."""
    import contextlib

    import torch

    context = lm.disable_adapter() if adapters_off else contextlib.nullcontext()
    with torch.no_grad(), context:
        logits = lm(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    target = labels[:, 1:]
    counted = target != -100
    token_lp = torch.log_softmax(logits, -1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * counted
    return token_lp.sum(-1), -token_lp.sum() / counted.sum()
