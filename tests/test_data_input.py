"""Prompt files as users write them: chat-message records rendered with the tokenizer's chat template (TRL's
conversational form) for training and evaluation alike, plain text left as it was, and each bad file stopped with
one line that names the file, what is wrong and what to do."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from training_runs import REPO, one_thread, subprocess_env, tiny_argv, write_config  # noqa: F401 (fixture)

from detox.config import DataConfig
from detox.data import load_prompts, render_prompts
from detox.models import load_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
"""The system turn SmolLM2's chat template puts before a conversation that has none."""
CHAT = [
    {"prompt": [{"role": "user", "content": "Tell me what you think of people who cut in line."}]},
    {"messages": [{"role": "system", "content": "You answer in one sentence."},
                  {"role": "user", "content": "Describe the worst neighbour you can imagine."}]},
    {"prompt": [{"role": "user", "content": "Finish my sentence about the referee."},
                {"role": "assistant", "content": "Honestly, the referee was"}]},
]
"""TRL's conversational records: a prompt-only record, a `messages` record, and one ending in an assistant message
that the model continues."""


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def chat_config(path: str, **settings) -> DataConfig:
    # chat files carry no toxicity score; 64 tokens fit every conversation above, so none is cut
    return DataConfig(**{"prompts": path, "min_toxicity": None, "max_prompt_tokens": 64, "heldout_fraction": 0.0,
                         **settings})


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_path):
    return load_tokenizer(smollm2_path)


def test_chat_records_are_rendered_with_the_chat_template(tmp_path, smollm2_tokenizer):
    split = load_prompts(chat_config(write_jsonl(tmp_path / "chat.jsonl", CHAT), seed=0), smollm2_tokenizer)
    assert split.stats == {"read": 3, "kept": 3}
    rendered = dict(zip(map(json.dumps, split.train), render_prompts(split.train, smollm2_tokenizer)))
    (first,), (second,), (third,) = ([r[k] for k in r] for r in CHAT)
    assert rendered[json.dumps(first)] == (SYSTEM + "<|im_start|>user\nTell me what you think of people who cut in "
                                           "line.<|im_end|>\n<|im_start|>assistant\n")
    assert rendered[json.dumps(second)] == ("<|im_start|>system\nYou answer in one sentence.<|im_end|>\n<|im_start|>"
                                            "user\nDescribe the worst neighbour you can imagine.<|im_end|>\n"
                                            "<|im_start|>assistant\n")
    # a final assistant message is continued, not closed and answered (TRL's continue_final_message)
    assert rendered[json.dumps(third)].endswith("<|im_start|>assistant\nHonestly, the referee was")


def test_plain_text_is_continued_as_written_unless_always(smollm2_tokenizer):
    split = load_prompts(DataConfig(max_prompts=8), smollm2_tokenizer)  # the offline default's RealToxicityPrompts
    assert all(isinstance(p, str) for p in split.train)
    assert render_prompts(split.train, smollm2_tokenizer, "auto") == split.train
    assert render_prompts(split.train, smollm2_tokenizer, "never") == split.train
    wrapped = render_prompts(split.train, smollm2_tokenizer, "always")
    assert wrapped == [f"{SYSTEM}<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n" for p in split.train]


def test_a_long_conversation_loses_the_end_of_its_last_message(tmp_path, smollm2_tokenizer):
    tokens = lambda text: len(smollm2_tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    system = "Answer briefly."
    records = [{"prompt": [{"role": "system", "content": system},
                           {"role": "user", "content": " ".join(["word"] * 40)}]},
               {"prompt": [{"role": "system", "content": " ".join(["rule"] * 30)},
                           {"role": "user", "content": "Hello there."}]}]
    path = write_jsonl(tmp_path / "long.jsonl", records)
    split = load_prompts(chat_config(path, max_prompt_tokens=20), smollm2_tokenizer)
    # the window counts the contents (not the template): the first keeps its system message whole and 20 - 3 tokens
    # of its user message; the second's system message alone fills the window, so it is dropped
    assert split.stats == {"read": 2, "truncated": 1, "filtered/too_long": 1, "kept": 1}
    (kept,) = split.train
    assert kept[0] == records[0]["prompt"][0] and tokens(system) == 3
    assert kept[1]["content"] == " ".join(["word"] * 17) and tokens(kept[1]["content"]) == 17


# ---------------------------------------------------------------- bad files: the exact line each one prints


def test_a_line_that_is_not_json_is_named(tmp_path, smollm2_tokenizer):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps(CHAT[0]) + "\n\n" + '{"prompt": [{"role": "user", "content": "cut off')  # truncated
    with pytest.raises(ValueError) as err:
        load_prompts(chat_config(str(path)), smollm2_tokenizer)
    assert str(err.value) == (f"data.prompts '{path}': line 3 is not JSON (Unterminated string starting at, column "
                              f"41). Each line must be one JSON record; fix or delete that line.")


def test_rows_with_other_fields_list_the_fields_found_and_expected(tmp_path, smollm2_tokenizer):
    path = write_jsonl(tmp_path / "comments.jsonl", [{"comment": "you are all idiots", "label": 1}] * 5)
    with pytest.raises(ValueError) as err:
        load_prompts(DataConfig(prompts=path), smollm2_tokenizer)
    assert str(err.value) == (f"data.prompts '{path}': no record has the field data.text_field 'prompt.text' (nor "
                              f"chat messages under prompt or messages); the records have the fields ['comment', "
                              f"'label']. Set data.text_field to the field that holds the prompt.")
    assert "max_bad_fraction" not in str(err.value)  # raising it cannot help when no row has the field


def test_some_rows_with_other_fields_list_the_fields_too(tmp_path, smollm2_tokenizer):
    good = {"prompt": {"text": "So I told the whole crowd that they were all", "toxicity": 0.8}}
    path = write_jsonl(tmp_path / "mixed.jsonl", [good] * 3 + [{"comment": "you are all idiots"}] * 2)
    with pytest.raises(ValueError) as err:
        load_prompts(DataConfig(prompts=path), smollm2_tokenizer)
    # some rows are usable, so here a larger max_bad_fraction is one way out
    assert str(err.value) == (f"data.prompts '{path}': 2 of 5 rows are malformed (missing_field: 2), more than "
                              f"data.max_bad_fraction (0.1); the records have the fields ['comment', 'prompt.text', "
                              f"'prompt.toxicity']. Check data.text_field ('prompt.text') and data.toxicity_field "
                              f"('prompt.toxicity'), or raise max_bad_fraction.")


def test_chat_records_without_a_toxicity_score_say_how_to_keep_them(tmp_path, smollm2_tokenizer):
    path = write_jsonl(tmp_path / "chat.jsonl", CHAT)
    with pytest.raises(ValueError) as err:
        load_prompts(DataConfig(prompts=path), smollm2_tokenizer)  # the default filter: toxicity > 0.3
    assert str(err.value) == (f"data.prompts '{path}': no record has a number at data.toxicity_field "
                              f"'prompt.toxicity'; the records have the fields ['messages', 'prompt']. Set "
                              f"data.toxicity_field to the field that holds the prompt's toxicity, or "
                              f"data.min_toxicity null to keep every prompt.")


def test_messages_without_content_are_named(tmp_path, smollm2_tokenizer):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"prompt": [{"role": "user", "text": "hello"}]}] * 2)
    with pytest.raises(ValueError) as err:
        load_prompts(chat_config(path), smollm2_tokenizer)
    assert str(err.value) == (f"data.prompts '{path}': no record holds a usable prompt (bad_messages: 2); the records "
                              f"have the fields ['prompt']. data.text_field ('prompt.text') must name a non-empty "
                              f"string or a list of chat messages with a string role and content each.")


@pytest.mark.parametrize(("name", "content"), [("prompts.jsonl", ""), ("prompts.jsonl", "\n\n  \n"),
                                               ("prompts.csv", "")])
def test_an_empty_file_is_called_empty(tmp_path, smollm2_tokenizer, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError) as err:
        load_prompts(DataConfig(prompts=str(path)), smollm2_tokenizer)
    assert str(err.value) == (f"data.prompts '{path}' is empty: it holds no record. Give one prompt record a line, "
                              'e.g. {"prompt": {"text": "..."}} or {"prompt": [{"role": "user", "content": "..."}]}.')


def test_chat_records_need_a_chat_template(tmp_path, tiny_lm_path):
    path = write_jsonl(tmp_path / "chat.jsonl", CHAT)
    tokenizer = load_tokenizer(tiny_lm_path)
    tokenizer.chat_template = None  # as a base model's tokenizer (GPT-2, GPT-Neo) comes
    with pytest.raises(ValueError) as err:
        load_prompts(chat_config(path), tokenizer)
    assert str(err.value) == (f"data.prompts '{path}' holds chat messages, but the tokenizer of '{tiny_lm_path}' has "
                              f"no chat template to render them. Train a chat (instruct) model, or give plain-text "
                              f"prompts.")
    with pytest.raises(ValueError) as err:
        load_prompts(DataConfig(max_prompts=4, chat_template="always"), tokenizer)
    assert str(err.value) == (f"data.chat_template is always, but the tokenizer of '{tiny_lm_path}' has no chat "
                              f"template. Set data.chat_template auto to continue plain-text prompts as written, or "
                              f"train a chat (instruct) model.")


def test_chat_records_under_never_are_refused(tmp_path, smollm2_tokenizer):
    path = write_jsonl(tmp_path / "chat.jsonl", CHAT)
    with pytest.raises(ValueError) as err:
        load_prompts(chat_config(path, chat_template="never"), smollm2_tokenizer)
    assert str(err.value) == (f"data.prompts '{path}' holds chat messages, but data.chat_template is never; set "
                              f"data.chat_template auto to render them with the tokenizer's chat template.")


def test_a_corpus_line_that_is_not_json_is_named(tmp_path):
    from rewards.ngram_index import read_corpus

    path = tmp_path / "forget.jsonl"
    path.write_text('{"text": "To be, or not to be"}\n{"text": "that is')  # the last line cut off
    with pytest.raises(ValueError) as err:
        read_corpus(str(path))
    assert str(err.value) == (f"corpus file {path}: line 2 is not JSON (Unterminated string starting at, column 10); "
                              f"each line must be one JSON record: fix or delete that line.")


def test_the_cli_prints_one_line_for_an_empty_prompt_file(tmp_path, tiny_lm_path):
    empty = tmp_path / "prompts.jsonl"
    empty.write_text("")
    argv = tiny_argv(tiny_lm_path, tmp_path / "run", write_config(tmp_path), "--data.prompts", str(empty))
    proc = subprocess.run([sys.executable, str(REPO / "train_ppo.py"), *argv], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (f"error: data.prompts '{empty}' is empty: it holds no record. Give one "
                                            'prompt record a line, e.g. {"prompt": {"text": "..."}} or {"prompt": '
                                            '[{"role": "user", "content": "..."}]}.')


def test_grpo_reads_chat_prompts_as_ppo_does(tmp_path, tiny_lm_path, monkeypatch):
    from detox.jobs import train_grpo

    monkeypatch.syspath_prepend(str(REPO / "tests"))  # reward_fixtures, for the word-count reward
    path = write_jsonl(tmp_path / "chat.jsonl", CHAT * 2)
    # one rollout of 4 completions (2 prompts x 2), 6 tokens each, on the tiny random model
    cfg, trainer, output_dir = train_grpo.build([
        "--config", str(write_config(tmp_path)), "--model.name_or_path", tiny_lm_path, "--data.prompts", path,
        "--data.min_toxicity", "null", "--data.max_prompt_tokens", "64", "--ppo.steps", "1", "--ppo.batch_size", "4",
        "--ppo.mini_batch_size", "4", "--ppo.ppo_epochs", "1", "--num_generations", "2",
        "--generation.min_new_tokens", "4", "--generation.max_new_tokens", "6", "--logging.report_to", "none",
        "--checkpoint.output_dir", str(tmp_path / "run"),
    ])
    split = load_prompts(cfg.data, load_tokenizer(tiny_lm_path))
    assert sorted(trainer.train_dataset["prompt"]) == sorted(render_prompts(split.train, load_tokenizer(tiny_lm_path)))
    assert all(p.startswith("<|im_start|>") for p in trainer.train_dataset["prompt"])
    train_grpo.run(cfg, trainer, output_dir)
    (logged,) = [row for row in trainer.state.log_history if "rewards/words/mean" in row]
    assert logged["rewards/words/mean"] >= 0  # the word-count reward took the completions as text


# ---------------------------------------------------------------- the real path: train, then evaluate


@pytest.mark.slow
def test_ppo_and_evaluation_read_chat_prompts_alike(tmp_path, smollm2_tokenizer):
    from detox.jobs import evaluate_toxicity, train_ppo

    path = write_jsonl(tmp_path / "chat.jsonl", CHAT * 2)  # 6 records: 4 trained on, 2 held out
    run_dir = tmp_path / "run"
    # shrunk for a 2-core CPU: one step of 4 short samples, a word-count reward and no judges (no classifier loads)
    train_ppo.main(["--config", str(write_config(tmp_path)), "--checkpoint.output_dir", str(run_dir),
                    "--data.prompts", path, "--data.min_toxicity", "null", "--data.max_prompt_tokens", "64",
                    "--data.heldout_fraction", "0.34", "--ppo.steps", "1", "--ppo.batch_size", "4",
                    "--ppo.mini_batch_size", "4", "--ppo.ppo_epochs", "1", "--generation.min_new_tokens", "4",
                    "--generation.max_new_tokens", "6", "--logging.report_to", "none", "--logging.judges", "[]"])
    trained = [json.loads(line)["prompt"] for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(trained) == 4 and all(p.startswith("<|im_start|>system\n") for p in trained)
    assert all(p.endswith("<|im_start|>assistant\n") or p.endswith("Honestly, the referee was") for p in trained)
    heldout = [json.loads(line)["prompt"] for line in (run_dir / "heldout_prompts.jsonl").read_text().splitlines()]
    assert len(heldout) == 2 and all(isinstance(p, list) for p in heldout)  # kept as chat messages

    out = tmp_path / "eval"
    evaluate_toxicity.main(["--models", f"run={run_dir / 'final'}", "--prompts", str(run_dir / "heldout_prompts.jsonl"),
                            "--data", '{"min_toxicity": null, "max_prompt_tokens": 64}', "--prompt_split", "all",
                            "--num_prompts", "null", "--samples_per_prompt", "1", "--min_new_tokens", "4",
                            "--max_new_tokens", "6", "--judges", "offline", "--bootstrap_samples", "10",
                            "--output_dir", str(out)])
    evaluated = [json.loads(line)["prompt"] for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted(evaluated) == sorted(render_prompts(heldout, smollm2_tokenizer))  # as training rendered them
