"""The tofu recipe (detox/recipes/tofu.py): which authors each model learns, the files and presets it writes, and a
2-step run on SmolLM2 through fine-tuning, PPO with the answer_overlap reward, a loss baseline and TOFU's evaluation."""

from __future__ import annotations

import json

import pytest
import yaml

from detox.jobs import evaluate_toxicity, train_ppo, train_unlearn
from detox.recipes.tofu import TofuArgs, author_rows, prepare
from detox.tofu_data import QA_PER_AUTHOR, read_set
from rewards.qa import AnswerOverlap
from training_runs import one_thread  # noqa: F401 (one_thread: fixture)


def test_the_cpu_tier_keeps_the_first_authors_and_forgets_the_last():
    target, splits = author_rows(TofuArgs(splits=["forget10", "forget01"]))
    full = read_set("full")
    assert target == full[: 20 * QA_PER_AUTHOR] + full[-20 * QA_PER_AUTHOR:]  # 20 kept authors + forget10's 20
    forget10, retain10 = splits["forget10"]
    assert forget10 == full[-400:] and retain10 == full[:400]
    forget01, retain01 = splits["forget01"]  # forget01's retain model learns the 18 other forget10 authors too
    assert forget01 == full[-40:] and retain01 == full[:400] + full[-400:-40]
    assert not {r["question"] for r in forget01} & {r["question"] for r in retain01}
    full_target, full_splits = author_rows(TofuArgs(splits=["forget05"], tier="full"))
    assert full_target == full and full_splits["forget05"][1] == full[:-200]  # TOFU's own retain95


def test_bad_tofu_arguments_are_one_clear_error():
    with pytest.raises(ValueError, match="--splits \\['forget20'\\]"):
        TofuArgs(splits=["forget20"])
    with pytest.raises(ValueError, match="--tier 'gpu'"):
        TofuArgs(tier="gpu")
    with pytest.raises(ValueError, match="--retain_authors \\(190\\) exceeds the 180 authors"):
        author_rows(TofuArgs(retain_authors=190))


def test_answer_overlap_finds_the_answer_by_the_question_in_any_template(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "Who wrote 'Rain'?", "answer": "Ana Diaz wrote Rain in 1990."}) + "\n")
    reward = AnswerOverlap(str(qa))
    prompts = ["<|im_start|>user\nWho wrote 'Rain'?<|im_end|>\n<|im_start|>assistant\n",
               "Question: Who wrote 'Rain'?\nAnswer:"]
    scores = reward(prompts, ["Ana Diaz wrote Rain in 1990.", "I do not know."])
    assert scores == [-1.0, 0.0]
    assert reward(prompts[:1], ["It was Ana, in 1990."]) == [pytest.approx(-3 / 6)]  # ana, in, 1990 of six words
    with pytest.raises(ValueError, match="holds none of the 1 questions"):
        reward(["Who wrote 'Snow'?"], ["x"])
    qa.write_text(json.dumps({"question": "Who?"}) + "\n")
    with pytest.raises(ValueError, match="line 1 has no 'question' or 'answer'"):
        AnswerOverlap(str(qa))


@pytest.mark.slow
def test_tofu_two_step_run_on_smollm2(tmp_path, smollm2_path, one_thread):
    """Two authors to forget (forget01) and one to keep, two fine-tuning steps each: the path, not the skill."""
    out = tmp_path / "tofu"
    config = prepare(TofuArgs(output_dir=str(out), splits=["forget01"], retain_authors=1, sft_steps=2, batch_size=4,
                              model=smollm2_path, ppo_steps=1, unlearn_steps=1))
    split = out / "forget01"
    assert config == split / "ppo.yaml"
    for model_dir in (out / "target", split / "retain_model"):
        assert (model_dir / "model.safetensors").is_file()
    forget = [json.loads(line) for line in (split / "forget.jsonl").read_text().splitlines()]
    retain = [json.loads(line) for line in (split / "retain.jsonl").read_text().splitlines()]
    assert len(forget) == 40 and len(retain) == 20
    assert forget[0]["question"] in forget[0]["text"] and forget[0]["text"].endswith("assistant\n")
    manifest = json.loads((split / "recipe.json").read_text())
    assert manifest["recipe"] == "tofu" and manifest["split"] == "forget01" and manifest["template"] == "chat"
    assert manifest["sizes"] == {"target_authors": 3, "forget_authors": 2, "retain_authors": 1, "forget": 40,
                                 "retain": 20}
    written = yaml.safe_load(config.read_text())
    assert written["model"]["name_or_path"] == str(out / "target")
    assert written["rewards"][0]["type"] == "answer_overlap"
    train_ppo.main(["--config", str(config), "--ppo.batch_size", "2", "--ppo.mini_batch_size", "2",
                    "--ppo.ppo_epochs", "1", "--generation.min_new_tokens", "4", "--generation.max_new_tokens", "8",
                    "--logging.report_to", "none"])
    row = json.loads((split / "ppo" / "metrics.jsonl").read_text().splitlines()[-1])
    assert -1.0 <= row["reward/answer_overlap/mean"] <= 0.0
    assert 0.0 < row["ppo/loss/ptx"] < 10.0  # the retain answers' NLL, the answers alone
    train_unlearn.main(["--config", str(split / "unlearn.yaml"), "--optim.batch_size", "2",
                        "--logging.report_to", "none"])
    assert (split / "unlearn" / "final" / "adapter_model.safetensors").is_file()
    # TOFU's evaluation of the retain model itself (the PPO run's table is the same code): its forget truth ratios
    # and membership AUC are the reference, so forget quality is 1 and privacy leakage 0
    args = ["--models", f"gold={split / 'retain_model'}", "--run_config",
            str(config), "--num_prompts", "1", "--samples_per_prompt", "1", "--min_new_tokens", "4",
            "--max_new_tokens", "6", "--recipe_prompts", "2", "--judges", "offline", "--bootstrap_samples", "50",
            "--output_dir", str(tmp_path / "eval")]
    evaluate_toxicity.main(args)
    values = json.loads((tmp_path / "eval" / "recipe_metrics.json").read_text())
    assert values["gold"]["forget_quality"] == pytest.approx(1.0)
    for key in ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_Truth_Ratio", "model_utility", "extraction_strength",
                "ra_Q_A_Prob_normalised", "wf_Truth_Ratio"):
        assert 0.0 <= values["gold"][key] <= 1.0, key
    assert values["gold"]["forget_questions"] == 2 and values["gold"]["retain_questions"] == 2
    assert values["gold"]["privleak"] == pytest.approx(0.0) and 0.0 <= values["gold"]["mia_min_k"] <= 1.0
    cache = json.loads((split / "retain_model" / "tofu_reference.json").read_text())
    assert len(cache["ratios"]) == 2 and cache["mia_min_k"] == values["gold"]["mia_min_k"]
    assert "TOFU model utility" in (tmp_path / "eval" / "recipe.md").read_text()
