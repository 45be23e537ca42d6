"""The command line every entry point shares: `--help` from the config dataclasses, the suggestion for an unknown
setting, one `error:` line for bad input (and a traceback for a crash), also as the last line under `accelerate
launch`."""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import sys
import types
import typing
from typing import Any, Literal

import pytest
import yaml
from training_runs import REPO, subprocess_env

from detox.baselines.config import UnlearnConfig
from detox.config import ConfigTypeError, TrainConfig, parse_config
from detox.evaluation import EvalConfig
from detox.group import GroupRunConfig
from detox.launch import is_user_error
from detox.recipes.forget_text import ForgetTextArgs
from detox.recipes.obscene_numbers import ObsceneNumbersArgs

CONFIGS = [TrainConfig, UnlearnConfig, GroupRunConfig, EvalConfig, ObsceneNumbersArgs, ForgetTextArgs]
ENTRY_POINTS = [["train_ppo.py"], ["train_unlearn.py"], ["train_grpo.py"], ["evaluate_toxicity.py"],
                ["-m", "detox.recipes.obscene_numbers"], ["-m", "detox.recipes.forget_text"]]


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)


def _source_docs(cls: type) -> dict[str, str]:
    """Each field's docstring, read with a regular expression from the source of `cls` and the classes it extends
    (independently of detox.config_help's reading of the syntax tree)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            for name, doc in re.findall(r'^    (\w+): [^\n]*\n    """(.*?)"""', inspect.getsource(klass), re.M | re.S):
                docs[name] = " ".join(doc.split())
    return docs


def _leaves(cls: type, prefix: str = ""):
    """(dotted name, field, hint, owner class) of every field below `cls`, through sections and lists of sections."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _leaves(hint, f"{prefix}{f.name}.")
            continue
        yield prefix + f.name, f, hint, cls
        if typing.get_origin(hint) is list and dataclasses.is_dataclass(typing.get_args(hint)[0]):
            yield from _leaves(typing.get_args(hint)[0], f"{prefix}{f.name}[].")


def _type_words(hint: Any) -> set[str]:
    """The names a reader must find in the help's type of `hint`."""
    if hint is type(None):
        return {"null"}
    if typing.get_origin(hint) is Literal:
        return {str(a) for a in typing.get_args(hint)}
    if typing.get_origin(hint) in (typing.Union, types.UnionType, list, dict):
        return set().union(*(_type_words(a) for a in typing.get_args(hint))) | (
            {typing.get_origin(hint).__name__} if typing.get_origin(hint) in (list, dict) else set())
    return {"any"} if hint is Any else {hint.__name__}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return [_plain(v) for v in value] if isinstance(value, list) else value


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_help_lists_every_field_with_its_type_default_and_docstring(cls, capsys):
    with pytest.raises(SystemExit) as done:
        parse_config(["--config", "ignored.yaml", "--help"], cls, "Usage lines of the script.")
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("Usage lines of the script.\n")
    entries = {}  # shown name -> (type, default, doc), parsed from the help text
    for name, kind, default, doc in re.findall(r"^  (\S+)  \((.*); default: (.*)\)\n((?:      .*\n)*)", text, re.M):
        entries[name.removeprefix("--")] = (kind, default, " ".join(doc.split()))
    docs = {}
    for path, f, hint, owner in _leaves(cls):
        docs.setdefault(owner, _source_docs(owner))
        assert path in entries, f"--help of {cls.__name__} leaves out {path}"
        kind, default, doc = entries.pop(path)
        assert doc == docs[owner].get(f.name, ""), path
        assert _type_words(hint) <= set(re.findall(r"[\w.-]+", kind)), (path, kind)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            assert default == "required", path
        else:
            expected = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert yaml.safe_load(default) == _plain(expected), path  # written as YAML, it reads back as the default
    assert not entries, f"--help shows settings that {cls.__name__} does not have: {sorted(entries)}"


def test_help_heads_a_section_with_its_class_docstring_and_every_field_has_a_docstring():
    from detox.config import PtxConfig
    from detox.config_help import render_help

    text = " ".join(render_help(TrainConfig, width=100).split())
    assert "ptx: " + " ".join(PtxConfig.__doc__.split()) in text
    undocumented = [path for c in CONFIGS for path, f, _, owner in _leaves(c) if f.name not in _source_docs(owner)]
    assert undocumented == []


@pytest.mark.parametrize("script", ENTRY_POINTS, ids=lambda s: s[-1])
def test_every_entry_point_answers_help_and_exits_0(script):
    import importlib

    done = _run(*script, "-h")
    assert done.returncode == 0, done.stderr[-2000:]
    job = script[-1] if script[0] == "-m" else "detox.jobs." + script[0].removesuffix(".py")
    assert done.stdout.startswith(importlib.import_module(job).__doc__.splitlines()[0])  # its usage lines first
    assert "\noptions:\n  -h, --help\n" in done.stdout and re.search(r"^  --\w+.*; default: ", done.stdout, re.M)


@pytest.mark.parametrize(
    ("cls", "flag", "message"),
    [
        (TrainConfig, "--output_dir", "unknown setting --output_dir; did you mean --checkpoint.output_dir?"),
        (UnlearnConfig, "--output_dir", "unknown setting --output_dir; did you mean --checkpoint.output_dir?"),
        (GroupRunConfig, "--num_generation", "unknown setting --num_generation; did you mean --num_generations?"),
        (TrainConfig, "--seed", "unknown setting --seed; did you mean --data.seed or --ppo.seed?"),
        (TrainConfig, "--ppo.batch_sise", "unknown setting --ppo.batch_sise; did you mean --ppo.batch_size?"),
        (EvalConfig, "--num_prompt", "unknown setting --num_prompt; did you mean --num_prompts?"),
        (ForgetTextArgs, "--speaker", "unknown setting --speaker; did you mean --speakers?"),
        (TrainConfig, "--ppo.lr", "unknown setting --ppo.lr; the ppo settings are: steps, batch_size, "),
        (TrainConfig, "--lr", "unknown setting --lr; `--help` lists every setting."),
    ],
)
def test_unknown_setting_suggests_the_closest_valid_one(cls, flag, message):
    with pytest.raises(ValueError) as error:
        parse_config([flag, "1"], cls)
    assert str(error.value).startswith(message)


def test_config_file_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("ppo:\n  steps: 3\ncheckpoint:\n  outputdir: x\n")
    with pytest.raises(ValueError, match=r"^--config .*run.yaml, line 4: unknown setting checkpoint.outputdir; did "
                                         r"you mean checkpoint.output_dir\?$"):
        parse_config(["--config", str(path)])
    path.write_text("rewards:\n  - type: phrase\n    wieght: 2\n")
    with pytest.raises(ValueError, match=r"line 3: unknown setting rewards\[0\].wieght; did you mean "
                                         r"rewards\[0\].weight\?$"):
        parse_config(["--config", str(path)])
    path.write_text("ppo:\n  steps: [3\n")
    with pytest.raises(ValueError, match=r"^--config .*run.yaml, line 3: not valid YAML \(.*\); fix the file.$"):
        parse_config(["--config", str(path)])


def test_flags_read_as_the_setting_needs():
    args = parse_config(["--pair", "07", "--output_dir", "out"], ObsceneNumbersArgs)
    assert args.pair == "07"  # a text setting keeps the text: YAML would read 07 as the octal number 7
    args = parse_config(["--speakers", "ROMEO", "--contrast", "--anchors", "null"], ForgetTextArgs)
    assert args.speakers == ["ROMEO"] and args.contrast is True and args.anchors is None
    with pytest.raises(ValueError, match=r"^flag --ppo.steps needs a value.$"):
        parse_config(["--ppo.steps"])


def test_user_errors_are_the_types_bad_input_raises_and_the_projects_own():
    from detox.checkpoint import CheckpointError
    from detox.hub import HubUnreachableError
    from rewards.custom import RewardImportError

    for err in (ValueError("x"), FileNotFoundError("x"), ConfigTypeError("x"), HubUnreachableError("x"),
                CheckpointError("x"), RewardImportError("x")):
        assert is_user_error(err), err
    for err in (RuntimeError("CUDA out of memory"), TypeError("f() takes 2 arguments"), KeyError("x")):
        assert not is_user_error(err), err


CRASH = """
from detox import launch
from detox.hub import HubUnreachableError

def entry(argv):
    raise {error}("{message}")

launch.cli(entry)
"""


@pytest.mark.parametrize(
    ("error", "one_line"), [("HubUnreachableError", True), ("RuntimeError", False), ("TypeError", False)]
)
def test_a_crash_keeps_its_traceback(error, one_line):
    done = _run("-c", CRASH.format(error=error, message="the message"))
    assert done.returncode == 1
    if one_line:
        assert done.stderr == "error: the message\n"
    else:
        assert "Traceback (most recent call last)" in done.stderr
        assert done.stderr.rstrip().endswith(f"{error}: the message")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train_ppo.py", "--output_dir", "x"], "unknown setting --output_dir; did you mean --checkpoint.output_dir?"),
        (["evaluate_toxicity.py", "--num_prompts", "0"], "num_prompts (0) must be positive, or null for all prompts."),
        (["-m", "detox.recipes.obscene_numbers", "--pair", "6"],
         "pair ('6') must be exactly two digits, e.g. 69 or 07 (in a YAML file, quote a leading zero: \"07\")."),
        (["-m", "detox.recipes.forget_text", "--play_lines", "null"],
         "give the play to forget: --play_lines start-end or --speakers NAME [NAME ...]."),
    ],
    ids=["train_ppo", "evaluate_toxicity", "obscene_numbers", "forget_text"],
)
def test_user_error_is_one_line_without_traceback(argv, message):
    done = _run(*argv)
    assert (done.returncode, done.stderr) == (1, f"error: {message}\n")


def _accelerate_launch(*argv: str) -> subprocess.CompletedProcess:
    """`accelerate launch` (accelerate's command-line module, which its `accelerate` script runs), one process on the
    CPU, its settings given so that no machine-wide accelerate config changes the launch."""
    launcher = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--num_processes", "1",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--cpu"]
    return subprocess.run([*launcher, *argv], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=120)


def test_under_accelerate_launch_the_error_line_is_the_last_thing_printed():
    done = _accelerate_launch("train_ppo.py", "--output_dir", "x")
    assert done.returncode != 0  # the launcher's own exit status on being stopped (143 with accelerate 1.16)
    assert done.stderr.splitlines()[-1] == "error: unknown setting --output_dir; did you mean --checkpoint.output_dir?"
    assert "Traceback" not in done.stderr and "CalledProcessError" not in done.stderr
    helped = _accelerate_launch("train_ppo.py", "--help")
    assert helped.returncode == 0 and "--checkpoint.output_dir" in helped.stdout
