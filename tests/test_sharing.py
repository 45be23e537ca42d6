"""Sharing a trained model: the model card, the Hub id in adapter_config.json, merged weights, and Hub upload."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training_runs import REPO, one_thread, subprocess_env, tiny_argv, write_config  # noqa: F401 (fixture)


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.fixture(scope="module")
def tiny_run(tiny_lm_path, tmp_path_factory) -> Path:
    """Two tiny LoRA steps with `--checkpoint.export merged`; the high learning rate of TINY_RUN moves the adapter
    off zero, so merged and unmerged weights really differ from the base."""
    import torch

    from detox.jobs import train_ppo

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny_run")
    try:
        train_ppo.main(tiny_argv(tiny_lm_path, out / "run", write_config(out), "--ppo.steps", "2",
                                 "--checkpoint.export", "merged", "--logging.judges", "[]"))
    finally:
        torch.set_num_threads(before)
    return out / "run"


def test_merged_weights_give_the_adapters_logits(tiny_run, tiny_lm_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tiny_run / "merged")  # plain transformers, no adapter
    assert (tiny_run / "merged" / "model.safetensors").is_file()
    assert not (tiny_run / "merged" / "adapter_config.json").exists()
    base = AutoModelForCausalLM.from_pretrained(tiny_lm_path)
    ids = torch.randint(0, merged.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    base_logits = _logits(base, ids)
    adapted = PeftModel.from_pretrained(base, tiny_run / "final").eval()
    adapter_logits = _logits(adapted, ids)
    assert not torch.allclose(adapter_logits, base_logits, atol=1e-4)  # the adapter does something
    torch.testing.assert_close(_logits(merged, ids), adapter_logits, atol=1e-5, rtol=1e-4)


def test_card_of_a_run_names_base_rewards_and_data(tiny_run, tiny_lm_path):
    card = (tiny_run / "final" / "README.md").read_text()
    assert card.startswith("---\nbase_model: " + tiny_lm_path)
    assert "[More Information Needed]" not in card
    assert "| words | callable | 1.0 |" in card  # the run's reward, with its weight
    assert "`builtin:rtp_challenging`" in card and "CC BY-SA 4.0" in card
    assert "Ziegler" in card and "- peft " in card and "- transformers " in card
    assert "Not evaluated yet" in card
    assert f"detox={tiny_run / 'final'} " in card and ".tmp-" not in card  # where the model lives, not its staging
    merged_card = (tiny_run / "merged" / "README.md").read_text()
    assert "LoRA merged into the base" in merged_card and f"detox={tiny_run / 'merged'} " in merged_card


def test_card_of_the_offline_default_and_its_evaluation(tmp_path):
    from detox.config import TrainConfig
    from detox.model_card import update_evaluation, write_model_card
    from detox.state import config_dict

    write_model_card(tmp_path, config_dict(TrainConfig()))
    card = (tmp_path / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct\n" in card and "license: apache-2.0" in card
    assert "HuggingFaceTB/SmolLM2-135M-Instruct detoxified with PPO\n" in card and "- detoxification\n" in card
    assert ("| minilm_toxicity | minilm_toxicity | 1.0 | `{'output': 'log_odds', 'data': 'rtp_continuations'}` | False "
            "| [None, 2.0] |") in card
    assert "Ziegler, D. M." in card and "Gehman, S." in card and "de-quantized" in card
    table = "| Model | offline: Mean toxicity |\n|---|---|\n| base | 0.1000 |"
    assert update_evaluation(tmp_path, table, ["detox vs base: -40%"], "python evaluate_toxicity.py ...", [])
    assert update_evaluation(tmp_path, table, ["detox vs base: -41%"], "python evaluate_toxicity.py ...", [])
    updated = (tmp_path / "README.md").read_text()
    assert updated.count("## Evaluation") == 1 and "-41%" in updated and "-40%" not in updated
    assert "Not evaluated yet" not in updated and updated.endswith(card[card.index("## Training config") - 1 :])
    assert not update_evaluation(tmp_path / "elsewhere", table, [], "", [])  # no card there: nothing written


def test_card_of_a_ppo_run_without_a_toxicity_reward_says_unlearned(tmp_path):
    """A forget_text or obscene_numbers run is rewarded for not writing a text or a number, not for low toxicity."""
    from detox.config import RewardComponentConfig, TrainConfig
    from detox.model_card import write_model_card
    from detox.state import config_dict

    cfg = TrainConfig()
    cfg.rewards = [RewardComponentConfig(type="phrase", options={"phrases": ["sixty nine"]})]
    write_model_card(tmp_path, config_dict(cfg))
    card = (tmp_path / "README.md").read_text()
    assert "HuggingFaceTB/SmolLM2-135M-Instruct unlearned with PPO\n" in card
    assert "- unlearning\n" in card and "detoxif" not in card.split("## Training config")[0]


def test_push_to_hub_offline_fails_at_once_and_keeps_the_run(tiny_lm_path, tmp_path):
    from detox.jobs import train_ppo
    from detox.export import push_to_hub
    from detox.hub import HubUnreachableError

    run = tmp_path / "run"
    train_ppo.main(tiny_argv(tiny_lm_path, run, write_config(tmp_path), "--ppo.steps", "1", "--logging.judges", "[]"))
    files = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    start = time.perf_counter()
    with pytest.raises(HubUnreachableError, match="push_to_hub 'me/detox'.*unreachable.*python -m detox.export"):
        train_ppo.main(tiny_argv(tiny_lm_path, run, write_config(tmp_path), "--checkpoint.overwrite", "true",
                                 "--checkpoint.push_to_hub", "me/detox"))
    with pytest.raises(HubUnreachableError, match="Nothing was uploaded"):
        push_to_hub(run / "final", "me/detox")
    assert time.perf_counter() - start < 20  # no minute of retries
    # even with --checkpoint.overwrite, the refused run deleted nothing: every file is there, byte for byte
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == files
    with pytest.raises(ValueError, match="checkpoint.push_to_hub 'not a repo' is not a Hub repo id"):
        train_ppo.main(tiny_argv(tiny_lm_path, run, write_config(tmp_path), "--checkpoint.push_to_hub", "not a repo"))


def test_unlearn_run_exports_merged_weights(tiny_lm_path, tmp_path, one_thread):
    """train_unlearn.py acts on `checkpoint.export merged` as train_ppo.py does: after two NPO steps on a LoRA
    adapter, merged/ holds full weights that give the adapter's logits."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from detox.jobs import train_unlearn

    forget = tmp_path / "forget.jsonl"
    forget.write_text("".join(json.dumps({"text": f"Line {i} of the text to forget, said twice. " * 2}) + "\n"
                              for i in range(8)))
    run = tmp_path / "run"
    final = train_unlearn.main([
        "--model.name_or_path", tiny_lm_path, "--data.forget", str(forget), "--data.max_length", "16",
        "--optim.steps", "2", "--optim.batch_size", "2",
        "--optim.learning_rate", "0.01",  # a high lr, so that two steps move the adapter off zero
        "--logging.report_to", "none", "--checkpoint.output_dir", str(run), "--checkpoint.export", "merged"])
    assert (final / "adapter_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(run / "merged")  # plain transformers, no adapter
    assert not (run / "merged" / "adapter_config.json").exists()
    ids = torch.randint(0, merged.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    base = AutoModelForCausalLM.from_pretrained(tiny_lm_path)
    base_logits = _logits(base, ids)
    adapter_logits = _logits(PeftModel.from_pretrained(base, final).eval(), ids)
    assert not torch.allclose(adapter_logits, base_logits, atol=1e-4)  # the adapter does something
    torch.testing.assert_close(_logits(merged, ids), adapter_logits, atol=1e-5, rtol=1e-4)
    assert "unlearned with negative preference optimization" in (run / "merged" / "README.md").read_text()


@pytest.mark.parametrize("job", ["train_unlearn", "train_grpo"])
def test_every_trainer_refuses_push_to_hub_offline_before_anything_loads(job, tiny_lm_path, tmp_path):
    import importlib

    from detox.hub import HubUnreachableError

    build = importlib.import_module(f"detox.jobs.{job}").build
    argv = ["--model.name_or_path", tiny_lm_path, "--checkpoint.output_dir", str(tmp_path / "run"),
            "--checkpoint.push_to_hub", "me/detox"]
    argv += ["--data.forget", "forget.jsonl"] if job == "train_unlearn" else []  # a corpus it never gets to read
    with pytest.raises(HubUnreachableError, match="push_to_hub 'me/detox'.*unreachable.*Nothing was uploaded"):
        build(argv)
    assert not (tmp_path / "run").exists()  # refused before the output directory, the data or a model


@pytest.mark.slow
def test_smollm2_adapter_names_its_hub_id_and_loads_offline(smollm2_path, tmp_path):
    """The real SmolLM2 path: adapter_config names the Hub id; detox, plain peft on the local copy and the merged
    export (python -m detox.export) all give the same logits offline."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from detox.jobs import train_ppo
    from detox.models import load_causal_lm
    from test_train import SMALL

    train_ppo.main(SMALL + ["--ppo.steps", "1", "--ppo.learning_rate", "1e-3", "--logging.judges", "offline",
                            "--checkpoint.output_dir", str(tmp_path)])
    final = tmp_path / "final"
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    card = (final / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "| minilm_toxicity |" in card
    done = subprocess.run([sys.executable, "-m", "detox.export", str(final), "--merged", str(tmp_path / "merged")],
                          env=subprocess_env(), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    ids = torch.tensor([[1, 504, 3158, 1834, 314, 253, 2724, 30, 2]])
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smollm2_path), final).eval()
    expected = _logits(plain, ids)
    torch.testing.assert_close(_logits(load_causal_lm(str(final)), ids), expected, atol=1e-4, rtol=1e-4)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(_logits(merged, ids), expected, atol=1e-4, rtol=1e-4)
