"""A regular install holds everything a user needs: the wheel is built from a copy of the repository, then every
module, asset and preset is looked for inside it, and every module is imported from it alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("detox", "rewards")
SCRIPTS = sorted(p.stem for p in REPO.glob("*.py"))
PRESET_DIRS = ("configs", "accelerate_configs")
# What a clone holds beside the sources and that the build must not see (a stale build/lib would leak into the wheel).
NOT_COPIED = shutil.ignore_patterns(".git", "build", "outputs", "wandb", "site", "*.egg-info", "__pycache__", ".venv*")


def _package_files() -> list[str]:
    """Every file of the shipped packages, sources and assets alike, as a path inside the wheel."""
    return sorted(
        p.relative_to(REPO).as_posix()
        for package in PACKAGES
        for p in (REPO / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def _module_names() -> list[str]:
    names = list(SCRIPTS)
    for path in _package_files():
        if path.endswith(".py"):
            parts = path[: -len(".py")].split("/")
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel` builds from a clean copy of the repository, offline and without build isolation."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO, source, ignore=NOT_COPIED)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(work / "dist")],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    wheels = list((work / "dist").glob("detox-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_holds_every_module_asset_and_preset(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    files = _package_files()
    assert any(f.startswith("detox/assets/model_configs/") for f in files), "the repository's assets were not found"
    missing = [f for f in files if f not in names]
    missing += [f"{s}.py" for s in SCRIPTS if f"{s}.py" not in names]
    data = next(n.split("/data/")[0] for n in names if ".data/data/" in n)
    for folder in PRESET_DIRS:
        for preset in sorted((REPO / folder).glob("*.yaml")):
            inside = f"{data}/data/share/detox/{folder}/{preset.name}"
            if inside not in names:
                missing.append(inside)
    assert not missing, f"missing from {wheel.name}: {missing}"
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names), "tests and benchmarks stay in the repo"


def test_every_module_imports_from_the_unpacked_wheel(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    check = (
        "import importlib, json, sys\n"
        f"site = {str(site)!r}\n"
        "sys.path.insert(0, site)\n"
        "outside = {}\n"
        f"for name in {_module_names()!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    if not module.__file__.startswith(site):\n"
        "        outside[name] = module.__file__\n"
        "from detox.data import ASSETS\n"
        "from detox.config import DataConfig\n"
        "from detox.data import read_records\n"
        "rows = list(read_records(DataConfig().prompts))\n"
        "print(json.dumps({'outside': outside, 'assets': str(ASSETS), 'prompts': len(rows)}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", check], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["outside"] == {}, f"imported from outside the wheel: {report['outside']}"
    assert report["assets"].startswith(str(site)), report["assets"]
    assert report["prompts"] > 0, "the shipped prompts did not load from the wheel"


def test_installing_the_wheel_puts_the_presets_under_share(wheel, tmp_path):
    """Where the README tells a user of a regular install to find the presets: <prefix>/share/detox/."""
    prefix = tmp_path / "prefix"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--prefix", str(prefix),
                           str(wheel)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for folder in PRESET_DIRS:
        shipped = sorted(p.name for p in (prefix / "share" / "detox" / folder).glob("*.yaml"))
        assert shipped == sorted(p.name for p in (REPO / folder).glob("*.yaml")), folder

    from detox.config import TrainConfig, parse_config

    preset = prefix / "share" / "detox" / "configs" / "offline_default.yaml"
    assert parse_config(["--config", str(preset)], TrainConfig).model.name_or_path == "smollm2-135m-instruct"
