"""The documentation site builds strictly (every link, anchor and picture resolves), and the README stays a short
front door whose links into docs/ all land."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _build(project: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(project / "mkdocs.yml"),
         "--site-dir", str(site)],
        capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("site")
    done = _build(REPO, path)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-4000:]}"
    return path


def test_every_docs_page_is_built(site):
    pages = sorted(p.relative_to(REPO / "docs").with_suffix(".html") for p in (REPO / "docs").rglob("*.md"))
    assert len(pages) >= 10
    missing = [str(p) for p in pages if not (site / p).is_file()]
    assert not missing, f"pages not built: {missing}"


@pytest.mark.parametrize("broken", ["[a page](no-such-page.md)", "![a picture](no-such-picture.png)",
                                    "[a section](running.md#no-such-section)"])
def test_strict_build_fails_on_a_broken_link(tmp_path, broken):
    """The check above can fail: the same site with one broken link, picture or anchor added does not build."""
    project = tmp_path / "project"
    (project / "docs").mkdir(parents=True)
    shutil.copy(REPO / "mkdocs.yml", project / "mkdocs.yml")
    for path in (REPO / "docs").iterdir():
        if path.is_file():
            shutil.copy(path, project / "docs" / path.name)
    index = project / "docs" / "index.md"
    index.write_text(index.read_text() + f"\n{broken}\n")
    done = _build(project, tmp_path / "site")
    assert done.returncode != 0, f"a strict build accepted {broken}"


def test_readme_links_into_docs_resolve(site):
    links = [m.group(1) for m in LINK.finditer(README.read_text()) if m.group(1).startswith("docs/")]
    assert len(links) >= 8, "the README's results table links each row to its report"
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        if not (REPO / path).is_file():
            broken.append(f"{link}: no such file")
        elif anchor:
            html = (site / Path(path).relative_to("docs").with_suffix(".html")).read_text()
            if f'id="{anchor}"' not in html:
                broken.append(f"{link}: no such section")
    assert not broken, broken


def test_readme_links_to_the_repository_resolve():
    others = [m.group(1) for m in LINK.finditer(README.read_text())
              if not m.group(1).startswith(("docs/", "http://", "https://", "#"))]
    missing = [link for link in others if not (REPO / link.partition("#")[0]).exists()]
    assert not missing, missing


def test_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; studies belong in docs/"
    ci = (REPO / ".ci" / "run").read_text()
    test_command = next(line for line in lines if "python -m pytest" in line)
    assert test_command in ci.splitlines(), "the README's test command is what CI runs (.ci/run)"
