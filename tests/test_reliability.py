"""Bad input is stopped at the boundary: malformed prompt rows are skipped and counted (or fail the run when there
are too many), and config mistakes or an unwritable output directory fail before anything is loaded or written."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
from training_runs import REPO, one_thread, subprocess_env, tiny_argv, write_config  # noqa: F401 (fixture)

from detox import launch
from detox.jobs import train_ppo
from detox.config import DataConfig, parse_config
from detox.data import load_prompts
from detox.models import load_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- malformed prompt rows

BROKEN_ROWS = [
    ('{"prompt": {"text": "", "toxicity": 0.9}}', "empty"),
    ('{"prompt": {"text": "   \\n ", "toxicity": 0.9}}', "empty"),
    ('{"prompt": {"text": 12345, "toxicity": 0.9}}', "not_a_string"),
    ('{"prompt": {"text": ["a", "list"], "toxicity": 0.9}}', "not_a_string"),
    ('{"prompt": {"toxicity": 0.9}}', "missing_field"),
    ('{"continuation": {"text": "a record without its prompt"}}', "missing_field"),
    ("[1, 2, 3]", "missing_field"),
    ('{"prompt": {"text": "The toxicity score of this row is a word", "toxicity": "high"}}', "bad_toxicity"),
]  # a line that is not JSON at all fails loading at once (tests/test_data_input.py)


def write_prompt_file(path, shared_data, n_good=40):
    """The first `n_good` real RealToxicityPrompts records, the broken rows interleaved, and one over-long prompt
    (twenty real prompts joined, several hundred tokens)."""
    lines = (shared_data / "real-toxicity-prompts" / "toxic.jsonl").read_text().splitlines()
    good = lines[:n_good]
    long_text = " ".join(json.loads(line)["prompt"]["text"] for line in lines[n_good : n_good + 20])
    rows = list(good)
    for i, (row, _) in enumerate(BROKEN_ROWS):
        rows.insert(4 * i + 1, row)
    rows.append(json.dumps({"prompt": {"text": long_text, "toxicity": 0.9}}))
    path.write_text("\n".join(rows) + "\n")
    return long_text


@pytest.mark.parametrize("long_prompts", ["truncate", "drop"])
def test_malformed_prompt_rows_are_skipped_and_counted(tmp_path, shared_data, tiny_lm_path, long_prompts):
    long_text = write_prompt_file(tmp_path / "prompts.jsonl", shared_data)
    tokenizer = load_tokenizer(tiny_lm_path)
    cfg = DataConfig(prompts=str(tmp_path / "prompts.jsonl"), max_bad_fraction=0.2, long_prompts=long_prompts,
                     max_prompt_tokens=64)  # every real prompt fits in 64 tokens: only the joined one is too long
    split = load_prompts(cfg, tokenizer)

    expected_bad = Counter(f"bad/{kind}" for _, kind in BROKEN_ROWS)
    assert {k: v for k, v in split.stats.items() if k.startswith("bad/")} == expected_bad
    assert split.stats["read"] == 40 + len(BROKEN_ROWS) + 1
    prompts = split.train + split.heldout
    assert len(prompts) == split.stats["kept"]
    assert all(isinstance(p, str) and p.strip() for p in prompts)
    head = tokenizer.decode(tokenizer(long_text, add_special_tokens=False)["input_ids"][:64])
    if long_prompts == "truncate":
        assert split.stats["truncated"] == 1 and head in prompts
    else:
        assert split.stats["filtered/too_long"] == 1 and not any(p.startswith(head[:40]) for p in prompts)


def test_too_many_malformed_rows_is_an_error(tmp_path, shared_data, tiny_lm_path):
    # 8 malformed rows of 49 is 16%, over the default max_bad_fraction of 10%.
    write_prompt_file(tmp_path / "prompts.jsonl", shared_data)
    with pytest.raises(ValueError, match=r"8 of 49 rows are malformed \(bad_toxicity: 1, empty: 2, missing_field: 3, "
                                         r"not_a_string: 2\), more than data.max_bad_fraction \(0.1\)"):
        load_prompts(DataConfig(prompts=str(tmp_path / "prompts.jsonl")), load_tokenizer(tiny_lm_path))


def test_training_reports_skipped_prompt_rows(tmp_path, shared_data, tiny_lm_path, capsys):
    write_prompt_file(tmp_path / "prompts.jsonl", shared_data)
    train_ppo.build(tiny_argv(tiny_lm_path, tmp_path / "run", write_config(tmp_path), "--data.prompts",
                              str(tmp_path / "prompts.jsonl"), "--data.max_bad_fraction", "0.2"))
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("prompts: "))
    assert "'bad/empty': 2" in line and "'bad/missing_field': 3" in line and "'bad/not_a_string': 2" in line


# ---------------------------------------------------------------- config mistakes and unwritable output


@pytest.mark.parametrize(
    "argv, error, message",
    [
        (["--ppo.batch_sise", "8"], ValueError, r"^unknown setting --ppo.batch_sise; did you mean --ppo.batch_size\?$"),
        (["--trainer.steps", "8"], ValueError, r"^unknown setting --trainer.steps; did you mean --ppo.steps\?$"),
        (["--ppo.batch_size", "eight"], TypeError, r"ppo.batch_size: expected int, got str \('eight'\)"),
        (["--ppo.learning_rate", "[1, 2]"], TypeError, r"ppo.learning_rate: expected float, got list"),
        (["--logging.report_to", "mlflow"], ValueError, r"logging.report_to: 'mlflow' is not one of \['wandb', "),
        (["--ppo.batch_size", "-4"], ValueError, r"ppo.batch_size \(-4\) must be a positive integer"),
        (["--ppo.batch_size", "6", "--ppo.mini_batch_size", "4"], ValueError,
         r"ppo.mini_batch_size \(4\) must divide ppo.batch_size \(6\)"),
        (["--checkpoint.save_every", "0"], ValueError, r"checkpoint.save_every \(0\) must be positive"),
    ],
)
def test_config_errors_name_the_field_value_and_fix(argv, error, message):
    with pytest.raises(error, match=message):
        parse_config(argv)


def test_config_file_typo_is_an_error(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("ppo:\n  batch_size: 8\n  minibatch_size: 4\n")
    with pytest.raises(ValueError, match=r"run.yaml, line 3: unknown setting ppo.minibatch_size; did you mean "
                                         r"ppo.mini_batch_size\?$"):
        parse_config(["--config", str(path)])


def test_cli_reports_a_config_error_without_a_traceback_or_output(tmp_path):
    output_dir = tmp_path / "never_created"
    result = subprocess.run(
        [sys.executable, str(REPO / "train_ppo.py"), "--ppo.batch_size", "-4", "--checkpoint.output_dir",
         str(output_dir)], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "error: ppo.batch_size (-4) must be a positive integer."
    assert not output_dir.exists()  # rejected before anything was created


CLI_RUN = """
import atexit, sys
import torch, torch.distributed as dist
from detox import launch

def entry(argv):
    if argv[0] == "group":  # a process of a launched run: it joined a process group and ran collectives
        dist.init_process_group("gloo", init_method="file://" + argv[1], rank=0, world_size=1)
        dist.all_gather([torch.empty(3)], torch.ones(3), async_op=True)
        dist.barrier()
    print("trained and saved")  # stdout is a pipe here, so this waits in Python's buffer until someone flushes it
    if argv[-1] == "fail":
        raise ValueError("data.path 'missing.jsonl' does not exist")

atexit.register(lambda: print("interpreter finalized", flush=True))
launch.cli(entry)
"""


@pytest.mark.parametrize("group", [False, True], ids=["one_process", "process_group"])
@pytest.mark.parametrize("fails", [False, True], ids=["finished", "user_error"])
def test_cli_exit_code_output_and_finalization(tmp_path, group, fails):
    # A process of a launched run must not reach interpreter finalization with its process groups alive: a gloo
    # thread freeing tensors there aborts it (SIGABRT) after the run finished. So it exits at once, its output flushed.
    argv = (["group", str(tmp_path / "store")] if group else ["alone"]) + (["fail"] if fails else [])
    done = subprocess.run([sys.executable, "-c", CLI_RUN, *argv], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == (1 if fails else 0), done.stderr
    assert done.stdout.startswith("trained and saved\n")
    assert ("interpreter finalized" in done.stdout) is not group
    assert done.stderr.strip().endswith("error: data.path 'missing.jsonl' does not exist") is fails


def test_output_dir_that_cannot_be_created_is_rejected_up_front(tmp_path, tiny_lm_path):
    # Tests run as root, which ignores permission bits, so the unwritable place is a path below a regular file.
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match=r"checkpoint.output_dir '.*a_file/run' cannot be written \(Not a "
                                              r"directory\); choose a writable directory"):
        train_ppo.build(tiny_argv(tiny_lm_path, blocker / "run", write_config(tmp_path)))
    assert blocker.read_text() == "not a directory"
