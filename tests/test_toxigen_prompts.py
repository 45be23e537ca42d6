"""The shipped ToxiGen-style implicit-hate prompts: reproducible from the seed statements, held out of training, and
used whole by the evaluation."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from training_runs import REPO, subprocess_env

from detox.config import DataConfig
from detox.data import BUILTIN, read_records, refuse_evaluation_only
from detox.evaluation import EvalConfig, load_eval_prompts
from detox.models import load_tokenizer

STATEMENTS = 5  # statements per prompt, tools/make_toxigen_implicit.py's STATEMENTS


def test_the_shipped_file_is_what_the_generator_writes(shared_data, tmp_path):
    seed_file = shared_data / "toxigen" / "prompt_seed_sentences.csv"
    subprocess.run([sys.executable, "tools/make_toxigen_implicit.py", "--seeds", str(seed_file), "--out",
                    str(tmp_path / "made.jsonl")], cwd=REPO, check=True, capture_output=True, timeout=60)
    shipped = BUILTIN["builtin:toxigen_implicit"].read_text(encoding="utf-8")
    assert (tmp_path / "made.jsonl").read_text(encoding="utf-8") == shipped
    with seed_file.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    seeds = {(r["target_group"], r["label"], " ".join(r["text"].split())) for r in rows}
    records = [json.loads(line) for line in shipped.splitlines()]
    assert {r["label"] for r in records} == {"hate", "neutral"} and len({r["target_group"] for r in records}) >= 13
    for record in records:
        lines = record["prompt"]["text"].split("\n")
        assert lines[-1] == "-" and len(lines) == STATEMENTS + 1
        # every statement is a seed statement of the record's own group and class
        assert all((record["target_group"], record["label"], line[2:]) in seeds for line in lines[:-1])


def test_a_trainer_refuses_the_evaluation_set_before_loading_anything(tmp_path):
    with pytest.raises(ValueError, match="data.prompts 'builtin:toxigen_implicit' is an evaluation prompt set"):
        refuse_evaluation_only(DataConfig(prompts="builtin:toxigen_implicit"))
    refuse_evaluation_only(DataConfig())  # the default training prompts pass
    done = subprocess.run([sys.executable, "train_ppo.py", "--data.prompts", "builtin:toxigen_implicit",
                           "--checkpoint.output_dir", str(tmp_path / "run")], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.strip().startswith("error: data.prompts 'builtin:toxigen_implicit'")
    assert not (tmp_path / "run").exists()


def test_the_evaluation_uses_every_prompt_whole(smollm2_path):
    tokenizer = load_tokenizer(smollm2_path)
    prompts = load_eval_prompts(EvalConfig(prompts="builtin:toxigen_implicit", num_prompts=None), tokenizer)
    shipped = [r["prompt"]["text"] for r in read_records("builtin:toxigen_implicit")]
    assert prompts and sorted(prompts) == sorted(shipped)  # no held-out split, no prompt cut to a token window
