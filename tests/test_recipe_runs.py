"""Recipes end to end: prompt files with other field names and long prompts in the evaluation, and a 2-step run of
the obscene_numbers recipe (data, counting fine-tune with SFTTrainer, PPO through its config, evaluation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from detox.jobs import evaluate_toxicity
from detox.jobs import train_ppo
from training_runs import one_thread  # noqa: F401 (fixture)
from detox.config import parse_config
from detox.evaluation import EvalConfig, load_eval_prompts
from detox.models import load_tokenizer
from detox.recipes.obscene_numbers import ObsceneNumbersArgs, prepare

LONG = "one thousand two hundred forty one, one thousand two hundred forty two, one thousand two hundred forty three,"


def _prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "counting.jsonl"
    rows = [{"body": {"content": f"{LONG} #{i}"}} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_evaluation_reads_other_field_names_and_long_prompts_from_flags_or_a_run_config(tmp_path, smollm2_path):
    tokenizer = load_tokenizer(smollm2_path)
    path = _prompt_file(tmp_path)
    assert len(tokenizer(LONG)["input_ids"]) > 15  # longer than the default window of 10-15 tokens
    data = {"text_field": "body.content", "toxicity_field": None, "min_toxicity": None, "max_prompt_tokens": 64,
            "heldout_fraction": 0.5}
    flags = [f"--data.{k}={'null' if v is None else v}" for k, v in data.items()]
    cfg = parse_config(["--prompts", str(path), "--num_prompts", "2", *flags], EvalConfig)
    prompts = load_eval_prompts(cfg, tokenizer)
    assert len(prompts) == 2 and all(p.startswith(LONG) for p in prompts)  # whole prompts, not cut to 15 tokens
    # the same settings from a run's saved config: the held-out half of the run's own split
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({"data": {"prompts": str(path), **data}}))
    from_run = load_eval_prompts(parse_config(["--run_config", str(tmp_path / "run"), "--num_prompts", "2"],
                                              EvalConfig), tokenizer)
    assert from_run == prompts
    # without the field names the file is refused with an error that names the field to set
    with pytest.raises(ValueError, match="data.text_field"):
        load_eval_prompts(parse_config(["--prompts", str(path)], EvalConfig), tokenizer)
    with pytest.raises(ValueError, match="unknown setting data.text_feld; did you mean data.text_field"):
        load_eval_prompts(parse_config(["--prompts", str(path), "--data.text_feld", "x"], EvalConfig), tokenizer)


def test_obscene_numbers_two_step_run_on_smollm2(tmp_path, smollm2_path, one_thread):
    args = ObsceneNumbersArgs(
        output_dir=str(tmp_path / "recipe"), pair="42", model=smollm2_path,
        heldout_size=3, sft_texts=4, sft_steps=1, sft_batch_size=2,  # one fine-tuning step: the path, not the skill
        ppo_steps=2,
    )
    config = prepare(args)
    recipe = Path(args.output_dir)
    assert (recipe / "sft" / "model.safetensors").is_file()
    written = yaml.safe_load(config.read_text())
    assert written["rewards"][0]["options"]["pair"] == "42"
    assert written["rewards"][1]["options"]["empty"] == -1.0 and written["logging"]["judges"] == []
    assert written["logging"]["probes"][0]["context"].endswith("forty")
    train_ppo.main(["--config", str(config), "--ppo.batch_size", "2", "--ppo.mini_batch_size", "2",
                    "--ppo.ppo_epochs", "1", "--logging.report_to", "none"])
    run_dir = recipe / "ppo"
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "reward/total" in m] == [1, 2]
    assert {"reward/forbidden_numbers/mean", "reward/next_number/mean"} <= set(metrics[1])
    assert len(list(run_dir.glob("probe_*_change.png"))) == 2  # "forty" -> " two" and its control
    result = evaluate_toxicity.main([
        "--models", f"sft={recipe / 'sft'}", f"ppo={run_dir / 'final'}", "--run_config", str(run_dir),
        "--num_prompts", "2", "--samples_per_prompt", "1", "--min_new_tokens", "8", "--max_new_tokens", "12",
        "--recipe_prompts", "3", "--judges", "offline", "--output_dir", str(tmp_path / "eval"),
    ])
    for row in result.table:
        for key in ("forbidden_pattern_rate_greedy", "pattern_rate_sampled", "forbidden_logprob",
                    "control_accuracy_greedy", "control_logprob", "rtp_perplexity", "perplexity", "distinct_2",
                    "control_run_accuracy_greedy", "allowed_accuracy_greedy", "allowed_logprob",
                    "forbidden_skip_rate_greedy", "control_malformed_rate_greedy", "allowed_malformed_rate_greedy"):
            assert key in row, key
        assert row["forbidden_logprob"] < 0 and 0 <= row["control_accuracy_greedy"] <= 1
    assert "counting accuracy, greedy, control prompts" in (tmp_path / "eval" / "recipe.md").read_text()
    kinds = {json.loads(line)["kind"] for line in (tmp_path / "eval" / "recipe_samples.jsonl").read_text().splitlines()}
    assert kinds == {"forbidden", "control", "allowed"}
