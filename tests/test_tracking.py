"""Trackers write real files: W&B offline runs read back from the .wandb file, tensorboard event files, local
metrics/samples/config, and no secret from the environment in any of them."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from accelerate import Accelerator
from PIL import Image

from detox.config import LoggingConfig
from detox.plots import plot_curves
from detox.tracking import (
    REDACTED,
    Tracker,
    accelerate_log_with,
    make_tracker,
    read_wandb_offline_history,
    redact,
)

FAKE_WANDB_KEY = "wandbFAKEkey0123456789abcdef0123456789ab"
FAKE_HF_TOKEN = "hf_FAKEtokenDoNotLeak9876"
STEPS = 3


def _isolate_wandb(monkeypatch, tmp_path: Path) -> None:
    """Keep W&B's caches and settings inside the test's directory, and start from no key and no netrc."""
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / var.lower()))
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)


def _png(path: Path) -> Path:
    Image.new("L", (12, 8), color=200).save(path)
    return path


def _gif(path: Path) -> Path:
    frames = [Image.new("L", (12, 8), color=c) for c in (0, 128, 255)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def _run(tracker: Tracker, image: Path) -> None:
    """The calls the trainer makes: metrics every step, then a sample table and an image, then finish."""
    for step in range(STEPS):
        tracker.log(
            {
                "objective/kl": 0.5 * step,  # 0, 0.5, 1.0: exact in binary, so read-back can compare with ==
                "objective/kl_coef": 0.2,
                "reward/total": -1.0 + step,
                "reward/toxicity/mean": -2.0 + step,
                "ppo/loss/value": 1.0 / (step + 1),
            },
            step=step,
        )
    tracker.log_samples(
        [{"prompt": "You are", "completion": " kind.", "reward/toxicity": -2.5}, {"prompt": "I", "completion": "!"}],
        step=STEPS - 1,
    )
    animation = _gif(image.with_suffix(".gif"))
    tracker.log_images({"probe_sixty/heatmap": image, "probe_sixty/animation": animation}, step=STEPS - 1)
    tracker.finish()


def test_wandb_offline_run_is_readable_from_its_files(tmp_path, monkeypatch, capsys):
    _isolate_wandb(monkeypatch, tmp_path)
    cfg = LoggingConfig(report_to="wandb", run_name="roundtrip")
    log_with = accelerate_log_with(cfg)
    assert log_with == ["wandb"] and os.environ["WANDB_MODE"] == "offline"  # no key, no netrc: offline on its own
    run_dir = tmp_path / "run"
    tracker = make_tracker(cfg, Accelerator(log_with=log_with, cpu=True), run_dir, {"ppo": {"learning_rate": 1e-4}})
    _run(tracker, _png(tmp_path / "probe.png"))

    rows = read_wandb_offline_history(run_dir)
    scalars = [r for r in rows if "objective/kl" in r]
    assert [r["_step"] for r in scalars] == list(range(STEPS))
    assert [r["objective/kl"] for r in scalars] == [0.0, 0.5, 1.0]
    for row in scalars:
        for key in ("objective/kl_coef", "reward/total", "reward/toxicity/mean", "ppo/loss/value"):
            assert math.isfinite(row[key]), (key, row)
    last = rows[-1]
    assert last["samples"]["_type"] == "table-file" and last["samples"]["nrows"] == 2
    assert last["probe_sixty/heatmap"]["_type"] == "image-file"
    assert last["probe_sixty/animation"]["_type"] == "video-file"  # a GIF plays as a W&B video
    # The table's rows are in the file W&B will upload on `wandb sync`.
    offline_dir = next((run_dir / "wandb").glob("offline-run-*"))
    table = json.loads((offline_dir / "files" / last["samples"]["path"]).read_text())
    assert ["You are", " kind.", -2.5] in table["data"]
    assert f"wandb sync {offline_dir}" in capsys.readouterr().out
    # The local files are written whatever the tracker.
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == STEPS
    assert (run_dir / "training_curves.png").is_file()


def test_tensorboard_event_file_holds_the_scalars_and_image(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = LoggingConfig(report_to="tensorboard", project="detox")
    run_dir = tmp_path / "run"
    accelerator = Accelerator(log_with=accelerate_log_with(cfg), project_dir=str(run_dir), cpu=True)
    image = _png(tmp_path / "probe.png")
    _run(make_tracker(cfg, accelerator, run_dir, {"ppo": {"learning_rate": 1e-4}}), image)

    events = EventAccumulator(str(run_dir / "detox"), size_guidance={"images": 0})
    events.Reload()
    assert [e.value for e in events.Scalars("objective/kl")] == [0.0, 0.5, 1.0]
    assert [e.step for e in events.Scalars("reward/total")] == list(range(STEPS))
    assert events.Images("probe_sixty/heatmap")[0].encoded_image_string == image.read_bytes()
    gif = image.with_suffix(".gif").read_bytes()  # stored encoded as is, so tensorboard animates it
    assert events.Images("probe_sixty/animation")[0].encoded_image_string == gif


def test_none_writes_only_local_files(tmp_path):
    cfg = LoggingConfig(report_to="none")
    assert accelerate_log_with(cfg) is None
    run_dir = tmp_path / "run"
    _run(make_tracker(cfg, Accelerator(log_with=None, cpu=True), run_dir, {"a": 1}), _png(tmp_path / "p.png"))
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "samples.jsonl", "training_curves.png", "curve_kl.png"} <= names
    assert not (run_dir / "wandb").exists()
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert samples[0] == {"step": STEPS - 1, "prompt": "You are", "completion": " kind.", "reward/toxicity": -2.5}


def test_log_images_refuses_files_that_are_not_pictures(tmp_path):
    tracker = make_tracker(LoggingConfig(report_to="none"), Accelerator(log_with=None, cpu=True), tmp_path, {})
    (tmp_path / "probes.json").write_text("{}")
    with pytest.raises(ValueError, match="probes.json; only .png, .gif and .jpg"):
        tracker.log_images({"probes": tmp_path / "probes.json"}, step=0)


def test_other_ranks_write_nothing(tmp_path):
    # A real second process needs `accelerate launch`; the tracker only reads `is_main_process` from it.
    tracker = make_tracker(LoggingConfig(report_to="none"), SimpleNamespace(is_main_process=False), tmp_path, {})
    _run(tracker, _png(tmp_path / "p.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.gif", "p.png"]  # only the test's own pictures


def test_no_secret_reaches_any_file(tmp_path, monkeypatch, capsys):
    _isolate_wandb(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_WANDB_KEY)
    monkeypatch.setenv("HF_TOKEN", FAKE_HF_TOKEN)
    monkeypatch.setenv("WANDB_MODE", "offline")  # a key is set, so only this keeps W&B from trying to log in
    monkeypatch.setattr(sys, "argv", ["train_ppo.py", "--model.revision", FAKE_HF_TOKEN])  # W&B records argv
    config = {
        "model": {"name_or_path": f"https://user:{FAKE_HF_TOKEN}@example.com/model", "max_new_tokens": 30},
        "rewards": [{"type": "toxicity", "options": {"api_key": "short", "hf_token": "x"}}],
    }
    cfg = LoggingConfig(report_to="wandb")
    run_dir = tmp_path / "run"
    tracker = make_tracker(cfg, Accelerator(log_with=accelerate_log_with(cfg), cpu=True), run_dir, config)
    tracker.log({"reward/total": 1.0}, step=0)
    tracker.log_samples([{"prompt": "my key is " + FAKE_WANDB_KEY, "completion": FAKE_HF_TOKEN}], step=0)
    tracker.finish()

    written = [Path(d) / f for d, _, files in os.walk(tmp_path) for f in files if not Path(d, f).is_symlink()]
    assert any(p.suffix == ".wandb" for p in written)
    for path in written:
        data = path.read_bytes()
        for secret in (FAKE_WANDB_KEY, FAKE_HF_TOKEN):
            assert secret.encode() not in data, f"{secret} leaked into {path}"
    assert FAKE_WANDB_KEY not in capsys.readouterr().out
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["name_or_path"] == f"https://user:{REDACTED}@example.com/model"
    assert saved["rewards"][0]["options"] == {"api_key": REDACTED, "hf_token": REDACTED}
    assert saved["model"]["max_new_tokens"] == 30  # "tokens" in a field name is not a secret


def test_redact_rules():
    env = {"MY_SECRET": "s3cr3t-value", "SHORT_KEY": "abc", "HOME": "/root/home-dir"}
    raw = {"path": Path("/x/s3cr3t-value/y"), "pad_token": "<pad>", "token": "t", "n": 3, "l": ("SHORT_KEY abc",)}
    assert redact(raw, environ=env) == {
        "path": f"/x/{REDACTED}/y",  # inside a string, and a Path becomes a string
        "pad_token": "<pad>",  # a tokenizer field, not a credential
        "token": REDACTED,  # named like a secret
        "n": 3,
        "l": ["SHORT_KEY abc"],  # values under 8 characters are too common to blank out
    }


def test_missing_tracker_package_is_an_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trackio" else real(name, *a))
    with pytest.raises(ImportError, match=r"logging.report_to \('trackio'\).*pip install trackio"):
        accelerate_log_with(LoggingConfig(report_to="trackio"))


@pytest.mark.slow  # a second interpreter: ~6-10 s on 2 cores
def test_trackio_logs_locally(tmp_path):
    pytest.importorskip("trackio")
    # trackio fixes its data directory when first imported, so it runs in a fresh interpreter pointed at tmp_path.
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from accelerate import Accelerator
        from detox.config import LoggingConfig
        from detox.tracking import accelerate_log_with, make_tracker
        cfg = LoggingConfig(report_to="trackio", project="detox-test", run_name="r")
        accelerator = Accelerator(log_with=accelerate_log_with(cfg), cpu=True)
        tracker = make_tracker(cfg, accelerator, Path("{tmp_path}/run"), {{}})
        for step in range(3):
            tracker.log({{"objective/kl": 0.5 * step}}, step=step)
        tracker.log_samples([{{"prompt": "p", "completion": "c"}}], step=2)
        tracker.finish()
        """
    )
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "PYTHONPATH": str(Path(__file__).parents[1])}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, timeout=120)
    import sqlite3

    with sqlite3.connect(tmp_path / "trackio" / "detox-test.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = db.execute("SELECT step, metrics FROM metrics WHERE run_name = 'r' ORDER BY step").fetchall()
    assert "metrics" in tables
    kl = [json.loads(m)["objective/kl"] for _, m in rows if "objective/kl" in json.loads(m)]
    assert kl == [0.0, 0.5, 1.0]


def test_plot_curves_writes_one_png_per_group(tmp_path):
    rows = [
        {"step": 0, "reward/total": -1.0, "reward/toxicity/mean": -2.0, "reward/toxicity/std": 0.5,
         "objective/kl": 0.0, "objective/kl_coef": 0.2, "ppo/loss/value": 1.0},
        {"step": 1, "reward/total": 0.0, "reward/toxicity/mean": -1.0, "reward/toxicity/std": 0.4,
         "objective/kl": None, "objective/kl_coef": 0.21, "ppo/loss/value": 0.5},
        {"step": 1, "reward/total": 0.5},  # a resumed run logging step 1 again: the later value wins
    ]  # fmt: skip
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    written = plot_curves(metrics, tmp_path / "plots")
    assert [p.name for p in written] == [
        "curve_reward_total.png",
        "curve_reward_toxicity.png",
        "curve_kl.png",
        "curve_value_loss.png",  # no objective/entropy logged: no entropy curve
        "training_curves.png",
    ]
    with Image.open(written[0]) as image:
        assert image.size == (400, 240)  # 5 x 3 inches at 80 dpi
