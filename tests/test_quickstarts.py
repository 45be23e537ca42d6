"""The README's quick starts, copied from README.md and run as written: the user's model becomes the packaged SmolLM2,
the user's files are made from real data in ../shared/data, and toy-size flags are appended to each command.

The several-GPUs quick start cannot run here (no GPU): its launcher flags are parsed by accelerate's own parser, its
accelerate config files must exist with the topology the README names, and its run flags must build a run config.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
USER_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"  # the README's stand-in for the user's model
QUICK_STARTS = {
    "prompts": "Detoxify your model on your prompts",
    "reward": "Your own reward function",
    "unlearn": "Unlearn your text",
    "evaluate": "Evaluate two models",
    "gpus": "Several GPUs",
}
# Appended to each command: the test checks that a user's command runs end to end and writes what it promises, not
# what it learns, so one step of two samples of a few tokens is enough.
TOY = {
    "train_ppo.py": "--ppo.steps 1 --ppo.batch_size 2 --ppo.mini_batch_size 2 --ppo.ppo_epochs 1 "
                    "--generation.min_new_tokens 4 --generation.max_new_tokens 6 --logging.report_to none "
                    "--logging.judges '[]'",
    "train_unlearn.py": "--optim.steps 1 --optim.batch_size 2 --logging.report_to none --logging.judges '[]'",
    # alt-profanity-check alone: the MiniLM judge would first fit its head, a minute on 2 cores
    "evaluate_toxicity.py": "--num_prompts 3 --samples_per_prompt 1 --min_new_tokens 4 --max_new_tokens 6 "
                            "--judges offline --bootstrap_samples 50",
}

pytestmark = pytest.mark.slow


def readme_blocks() -> dict[str, list[str]]:
    """The bash blocks under each `###` heading of the README's "Quick starts" section, keyed as QUICK_STARTS."""
    text = README_TEXT.split("\n## Quick starts\n", 1)[1].split("\n## ", 1)[0]
    sections = re.split(r"^### (.+)$", text, flags=re.M)
    found = {title.strip(): re.findall(r"```bash\n(.*?)```", body, flags=re.S)
             for title, body in zip(sections[1::2], sections[2::2])}
    missing = [title for title in QUICK_STARTS.values() if not found.get(title)]
    assert not missing, f"README quick starts without a bash block (renamed?): {missing}"
    return {key: found[title] for key, title in QUICK_STARTS.items()}


README_TEXT = (REPO / "README.md").read_text()


def commands(block: str) -> list[str]:
    """The block's lines with backslash continuations joined."""
    return block.replace("\\\n", " ").splitlines()


def at_toy_size(block: str) -> str:
    assert USER_MODEL in block, "the quick start names the user's model the way this test replaces it"
    from detox.hub import OFFLINE_MODEL

    lines = []
    for line in commands(block.replace(USER_MODEL, OFFLINE_MODEL)):
        for script, flags in TOY.items():
            if re.search(rf"(^|\s){re.escape(script)}\s", line):
                line = f"{line} {flags}"
        lines.append(line)
    return "\n".join(lines)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, shared_data) -> Path:
    """A folder laid out as the root of a clone, holding the user's files the README's commands read."""
    work = tmp_path_factory.mktemp("quickstarts")
    for script in REPO.glob("*.py"):  # copied, not linked: a user's my_reward.py sits beside the script it runs
        shutil.copy(script, work / script.name)
    for folder in ("configs", "accelerate_configs"):
        (work / folder).symlink_to(REPO / folder)

    def write_jsonl(name: str, texts: list[str]) -> None:
        (work / name).write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))

    with (shared_data / "real-toxicity-prompts" / "toxic.jsonl").open() as handle:
        write_jsonl("my_prompts.jsonl", [json.loads(next(handle))["prompt"]["text"] for _ in range(40)])
    forget = [json.loads(line) for line in (shared_data / "tofu" / "forget01.jsonl").read_text().splitlines()]
    questions = {row["question"] for row in forget}
    others = [json.loads(line) for line in (shared_data / "tofu" / "full.jsonl").read_text().splitlines()]
    retain = [row for row in others if row["question"] not in questions][:40]
    (work / "forget.txt").write_text("\n".join(row["answer"] for row in forget) + "\n")
    (work / "retain.txt").write_text("\n".join(row["answer"] for row in retain) + "\n")
    write_jsonl("forget_prompts.jsonl", [row["question"] for row in forget])
    return work


def run_block(block: str, workdir: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    env.pop("WANDB_API_KEY", None)
    done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + at_toy_size(block)], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"quick start failed:\n{at_toy_size(block)}\n{done.stderr[-4000:]}"
    return done


def last_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])


def test_detoxify_your_model_on_your_prompts(workdir):
    (block,) = readme_blocks()["prompts"]
    run_block(block, workdir)
    run = workdir / "outputs" / "my_detox"
    assert (run / "final" / "adapter_model.safetensors").is_file()
    assert "reward/offline_toxicity/mean" in last_metrics(run)
    heldout = (run / "heldout_prompts.jsonl").read_text().splitlines()
    assert len(heldout) == 12, "30% of the 40 prompts are held out"


def test_your_own_reward_function(workdir):
    (block,) = readme_blocks()["reward"]
    run_block(block, workdir)
    run = workdir / "outputs" / "my_reward_run"
    metrics = last_metrics(run)
    assert metrics["reward/callable/mean"] <= 0.0, "the politeness reward only subtracts"
    assert "reward/offline_toxicity/mean" in metrics
    assert (run / "final" / "adapter_model.safetensors").is_file()


def test_unlearn_your_text(workdir):
    blocks = readme_blocks()["unlearn"]
    assert len(blocks) == 2, "gradient difference, then PPO"
    for block in blocks:
        run_block(block, workdir)
    unlearn = workdir / "outputs" / "my_unlearn"
    assert (unlearn / "final" / "adapter_model.safetensors").is_file()
    assert "forget/nll" in json.dumps(last_metrics(unlearn))
    ppo = workdir / "outputs" / "my_unlearn_ppo"
    metrics = last_metrics(ppo)
    assert "reward/forget_verbatim/mean" in metrics and "ppo/loss/ptx" in metrics


def test_evaluate_two_models(workdir):
    (block,) = readme_blocks()["evaluate"]
    if not (workdir / "outputs" / "my_detox" / "final").is_dir():
        pytest.fail("the evaluation reads the first quick start's model, which was not trained")
    run_block(block, workdir)
    results = json.loads((workdir / "outputs" / "my_eval" / "results.json").read_text())
    text = json.dumps(results)
    assert '"base"' in text and '"detox"' in text
    assert (workdir / "outputs" / "my_eval" / "results.md").is_file()


TOPOLOGIES = {"multi_gpu.yaml": "MULTI_GPU", "deepspeed_zero3.yaml": "DEEPSPEED", "fsdp.yaml": "FSDP"}


def test_several_gpus_flags_parse(monkeypatch):
    """Not run (no GPU): each launch must parse, name an existing config of its topology, and build its run config."""
    from accelerate.commands.launch import launch_command_parser

    from detox.config import TrainConfig, parse_config

    (block,) = readme_blocks()["gpus"]
    launches = [line for line in commands(block) if line.startswith("accelerate launch")]
    assert len(launches) == 3, launches
    monkeypatch.chdir(REPO)
    seen = set()
    for line in launches:
        args = launch_command_parser().parse_args(line.split()[2:])
        config_file = Path(args.config_file)
        assert config_file.is_file(), f"{line}: no {config_file}"
        topology = yaml.safe_load(config_file.read_text())["distributed_type"]
        assert TOPOLOGIES[config_file.name] == topology
        assert args.num_processes > 1
        assert (REPO / args.training_script).is_file()
        cfg = parse_config(args.training_script_args, TrainConfig)
        assert cfg.lora.enabled, "sharding needs LoRA"
        seen.add(config_file.name)
    assert seen == set(TOPOLOGIES)
