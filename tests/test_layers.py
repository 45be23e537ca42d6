"""The layers of detox/__init__.py, read from the imports themselves: every module of the package stands on a layer,
imports nothing from a layer above its own, sits in no import circle and imports its project modules at the top; no
file imports a script. Each check names every offending import, with its file and line.

The imports are parsed with `ast`, module level and inside functions alike, so a lazy import counts as much as a
top-level one. The checks run on a small made-up tree first, to show that each of them fails when it should.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("detox", "rewards")
"""Top-level packages of the project; `rewards` stands on layer 2 beside detox.judges."""
OUTSIDE = ("benchmarks", "tests", "tools")
"""Folders outside the package: they may import any package module, never a script."""

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", (
        "detox", "detox.config", "detox.baselines", "detox.baselines.config", "detox.judge_specs", "detox.hub",
        "detox.sharding", "detox.ppo", "detox.losses", "detox.metrics", "detox.number_words", "detox.checkpoint",
        "detox.tracking", "detox.plots", "detox.memory_model", "detox.config_help", "detox.validity",
        "detox.tofu_metrics",
    )),
    ("middle", (
        "detox.data", "detox.corpus", "detox.models", "detox.generation", "detox.scoring", "detox.blocks",
        "detox.probes", "detox.recipe_files", "detox.tofu_data",
    )),
    ("rewards and judges", ("rewards", "rewards.*", "detox.judges", "detox.independence")),
    ("loops", (
        "detox.trainer", "detox.experience", "detox.ptx", "detox.forget_loss", "detox.group", "detox.baselines.trainer",
        "detox.baselines.whp", "detox.evaluation", "detox.state", "detox.export", "detox.model_card",
    )),
    ("top", ("detox.recipes", "detox.recipes.*", "detox.launch", "detox.jobs", "detox.jobs.*")),
]
"""Layers from the bottom up: (name, modules); `pkg.*` is every module below pkg. detox/__init__.py says the same."""

OPTIONAL = ("deepspeed", "trackio", "vllm")
"""Optional dependencies (pyproject's extras): the only imports a function may hold, with a comment saying why."""


@dataclass(frozen=True)
class Import:
    source: str
    """Importing module, dotted (`detox.trainer`; a script or test is its file's stem, `train_ppo`)."""
    target: str
    """Imported module as the tree names it; a name imported from a package resolves to its module when it is one."""
    file: str
    line: int
    top: bool
    """Whether the import stands at module level (not inside a function or class)."""
    commented: bool
    """Whether a `#` comment stands on the import's line or the line above."""

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_files(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every package module, script (a .py at the root) and file of the OUTSIDE folders."""
    files = {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}
    files |= {p.stem: p for p in sorted(root.glob("*.py"))}
    files |= {f"{folder}.{p.stem}": p for folder in OUTSIDE for p in sorted((root / folder).glob("*.py"))}
    return files


def scripts(root: Path) -> set[str]:
    return {p.stem for p in root.glob("*.py")}


def is_package_module(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def parse_imports(name: str, path: Path, root: Path, known: set[str]) -> list[Import]:
    """Every import of `path`, module level and inside functions, resolved against the `known` module names."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source, str(path))
    top_level = set()
    for node in tree.body:  # module level, including module-level if/try blocks
        top_level |= {id(n) for n in ast.walk(node)} if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                                ast.ClassDef)) else set()
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        above = lines[node.lineno - 2] if node.lineno > 1 else ""
        commented = "#" in lines[node.lineno - 1] or above.strip().startswith("#")
        for target in dict.fromkeys(targets):
            out.append(Import(name, target, str(path.relative_to(root)), node.lineno, id(node) in top_level,
                              commented))
    return out


def all_imports(root: Path) -> list[Import]:
    files = project_files(root)
    return [i for name, path in files.items() for i in parse_imports(name, path, root, set(files))]


def layer_of(module: str) -> int | None:
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if module == member or (member.endswith(".*") and module.startswith(member[:-1])):
                return index
    return None


def resolve(target: str, modules: set[str]) -> str | None:
    """The project module an import names: itself, or the module that holds the imported name."""
    while target:
        if target in modules:
            return target
        target = target.rpartition(".")[0]
    return None


def unplaced_modules(root: Path) -> list[str]:
    return [m for m in project_files(root) if is_package_module(m) and layer_of(m) is None]


def upward_imports(imports: list[Import]) -> list[str]:
    modules = {i.source for i in imports} | {i.target for i in imports}
    found = []
    for imp in imports:
        target = resolve(imp.target, modules)
        if not (is_package_module(imp.source) and target and is_package_module(target)):
            continue
        low, high = layer_of(imp.source), layer_of(target)
        if low is not None and high is not None and high > low:
            found.append(f"{imp.where()}: {imp.source} ({LAYERS[low][0]}) imports {target} ({LAYERS[high][0]}), "
                         f"a layer above it")
    return found


def circles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected components of more than one package module (Tarjan), each sorted."""
    modules = {i.source for i in imports if is_package_module(i.source)}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for imp in imports:
        target = resolve(imp.target, modules)
        if imp.source in modules and target and target != imp.source:
            edges[imp.source].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(modules):
        if v not in index:
            visit(v)
    return found


def script_imports(imports: list[Import], root: Path) -> list[str]:
    names = scripts(root)
    return [f"{i.where()}: {i.source} imports the script {i.target}.py; import its job in detox.jobs instead"
            for i in imports if i.target in names]


def lazy_imports(imports: list[Import]) -> list[str]:
    """Imports inside a function or class of a package module or script that are project modules, or optional
    dependencies without a comment saying why."""
    found = []
    for imp in imports:
        if imp.top or imp.source.split(".")[0] in OUTSIDE:
            continue
        head = imp.target.split(".")[0]
        if head in PACKAGES:
            found.append(f"{imp.where()}: {imp.source} imports {imp.target} inside a function; import it at the top")
        elif head in OPTIONAL and not imp.commented:
            found.append(f"{imp.where()}: {imp.source} imports the optional {imp.target} lazily without a comment "
                         f"saying why")
    return found


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return all_imports(REPO)


def test_every_package_module_stands_on_a_layer():
    assert unplaced_modules(REPO) == [], "place each new module in a layer of tests/test_layers.py and detox/__init__"


def test_no_module_imports_a_layer_above_its_own(imports):
    assert upward_imports(imports) == []


def test_no_import_circle(imports):
    assert circles(imports) == []


def test_nothing_imports_a_script(imports):
    assert script_imports(imports, REPO) == []


def test_project_imports_stand_at_the_top(imports):
    assert lazy_imports(imports) == []


def test_the_package_docstring_names_every_layer():
    import detox

    for number, (name, _) in enumerate(LAYERS):
        assert f"{number}. {name.capitalize()}" in detox.__doc__


@pytest.fixture
def broken_tree(tmp_path) -> Path:
    """A made-up tree with one of each fault: detox.config (foundation) imports detox.trainer (loops) inside a
    function, detox.data and detox.models import each other, a job imports a script, a tracker imports trackio
    lazily without a comment, and detox.extra stands on no layer."""
    files = {
        "detox/__init__.py": "",
        "detox/config.py": "def f():\n    from detox.trainer import step\n",
        "detox/trainer.py": "from detox.data import load\n\n\ndef step():\n    pass\n",
        "detox/data.py": "from detox.models import load\n",
        "detox/models.py": "from detox import data\n\n\ndef load():\n    pass\n",
        "detox/tracking.py": "def log():\n    import trackio\n\n\ndef table():\n    import trackio  # optional\n",
        "detox/extra.py": "",
        "detox/jobs/__init__.py": "",
        "detox/jobs/train_ppo.py": "import train_ppo\n",
        "rewards/__init__.py": "",
        "train_ppo.py": "from detox.jobs.train_ppo import main\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


def test_each_check_finds_its_fault_in_a_made_up_tree(broken_tree):
    found = all_imports(broken_tree)
    assert unplaced_modules(broken_tree) == ["detox.extra"]
    assert upward_imports(found) == [
        "detox/config.py:2: detox.config (foundation) imports detox.trainer (loops), a layer above it"]
    assert circles(found) == [["detox.data", "detox.models"]]
    assert script_imports(found, broken_tree) == [
        "detox/jobs/train_ppo.py:1: detox.jobs.train_ppo imports the script train_ppo.py; import its job in "
        "detox.jobs instead"]
    assert lazy_imports(found) == [
        "detox/config.py:2: detox.config imports detox.trainer inside a function; import it at the top",
        "detox/tracking.py:2: detox.tracking imports the optional trackio lazily without a comment saying why"]
