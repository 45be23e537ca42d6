"""`--help` of every entry point and the suggestion for an unknown setting, both read from the config dataclass.

The help lists every setting, grouped by section (a nested dataclass), with its type, its default and the docstring
written under the field in the source (`field: type = default` then `\"\"\"docstring\"\"\"`, as CleanRL writes them).
A list of dataclasses (`rewards`, `logging.probes`) is shown with the fields of one item, which the YAML file sets
(or the whole list, as YAML, after its flag). It imports only the standard library and yaml, so that `--help` answers before anything heavy loads.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import shutil
import textwrap
import types
import typing
from typing import Any, Literal

import yaml

FLAGS_HELP = (
    "Settings come from the YAML file given with --config, then from flags, which win. A flag names a setting as "
    "listed below.{sections} A flag's value is read as YAML (null, true, [a, b]), except that a text setting keeps "
    "the text as typed; several values after one flag make a list; a yes/no flag given alone means true."
)
SECTIONS_HELP = (" A setting of a section is `--section.field value`: `--ppo.learning_rate 1e-5` sets "
                 "`ppo: {learning_rate: 1e-5}`.")


@dataclasses.dataclass
class Setting:
    """One field of a config dataclass, as the help shows it."""

    path: str
    """Dotted name (`ppo.learning_rate`); an item field of a list of dataclasses reads `rewards[].weight`."""
    type: str
    """The type as a user writes it: `int`, `float | null`, `{adapter, merged}`, `list[str]`."""
    default: str
    """The default as YAML (`null`, `true`, `[a, b]`), or `required`."""
    doc: str
    """The attribute docstring, whitespace collapsed; empty when the field has none."""
    section: str
    """Dotted name of the section holding it; empty at the top level."""


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of `cls` and of the dataclasses it extends, read from their source."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


@functools.cache
def _own_field_docs(cls: type) -> dict[str, str]:
    node = _class_node(cls)
    if node is None:
        return {}
    body = node.body
    return {a.target.id: " ".join(d.value.value.split()) for a, d in zip(body, body[1:])
            if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(d, ast.Expr)
            and isinstance(d.value, ast.Constant) and isinstance(d.value.value, str)}


def class_doc(cls: type) -> str:
    """The docstring written in the class body; dataclasses without one get a generated signature, left out here."""
    node = _class_node(cls)
    doc = ast.get_docstring(node) if node is not None else None
    return " ".join(doc.split()) if doc else ""


def _class_node(cls: type) -> ast.ClassDef | None:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # defined where no source can be read (an interactive session)
        return None
    node = ast.parse(source).body[0]
    return node if isinstance(node, ast.ClassDef) else None


def type_name(hint: Any) -> str:
    """A type hint as the help shows it: `float | null`, `{k1, k2, k3, abs}`, `list[str] | str`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is Literal:
        return "{" + ", ".join(str(a) for a in args) + "}"
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in args)}]"
    if hint is type(None):
        return "null"
    if hint is Any:
        return "any"
    return getattr(hint, "__name__", str(hint))


def yaml_value(value: Any) -> str:
    """`value` as it is written in a config file or after a flag."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    elif isinstance(value, list):
        value = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for v in value]
    return yaml.safe_dump(value, default_flow_style=True, width=float("inf"), sort_keys=False).strip().removesuffix(
        "\n...").strip()


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return yaml_value(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return yaml_value(f.default_factory())
    return "required"


def item_class(hint: Any) -> type | None:
    """The dataclass of a `list[SomeConfig]` field, else None."""
    if typing.get_origin(hint) is list and dataclasses.is_dataclass(typing.get_args(hint)[0]):
        return typing.get_args(hint)[0]
    return None


def settings(cls: type, prefix: str = "") -> list[Setting]:
    """Every setting of `cls`: the plain fields, then each section's (a nested dataclass, or the items of a list of
    dataclasses), in source order. A list of dataclasses at the top level (`rewards`) is a section of its own."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    plain: list[Setting] = []
    sections: list[Setting] = []
    for f in dataclasses.fields(cls):
        hint, path = hints[f.name], prefix + f.name
        if dataclasses.is_dataclass(hint):
            sections += settings(hint, path + ".")
            continue
        item = item_class(hint)
        own = Setting(path, type_name(hint), _default(f), docs.get(f.name, ""),
                      path if item is not None and not prefix else prefix.rstrip("."))
        if item is None:
            plain.append(own)
        elif prefix:
            plain.append(own)
            sections += settings(item, path + "[].")
        else:
            sections += [own, *settings(item, path + "[].")]
    return plain + sections


def flag_names(cls: type) -> list[str]:
    """The dotted names a flag can set: every setting outside the items of a list of dataclasses."""
    return [s.path for s in settings(cls) if "[]" not in s.path]


def render_help(cls: type, usage: str | None = None, width: int | None = None) -> str:
    """The `--help` text of an entry point whose run config is `cls`; `usage` is the script's docstring."""
    width = width or min(shutil.get_terminal_size((100, 24)).columns, 120)
    wrap = functools.partial(textwrap.fill, width=width, initial_indent="      ", subsequent_indent="      ",
                             break_long_words=False, break_on_hyphens=False)
    lines = []
    if usage or class_doc(cls):
        lines += [(usage or class_doc(cls)).strip("\n"), ""]
    nested = any(s.section for s in settings(cls))
    flags_help = FLAGS_HELP.format(sections=SECTIONS_HELP if nested else "")
    lines += [textwrap.fill(flags_help, width, break_long_words=False, break_on_hyphens=False), "",
              "options:", "  -h, --help", wrap("Show this help and exit."), "  --config FILE",
              wrap("YAML file of the run; flags given here override it.")]
    current = None
    for s in settings(cls):
        if s.section != current:
            current = s.section
            lines += ["", f"{s.section or ('top level' if nested else 'settings')}:"]
            doc = _section_doc(cls, s.section)
            if doc:
                lines.append(wrap(doc))
        name = s.path if "[]" in s.path else f"--{s.path}"
        lines.append(f"  {name}  ({s.type}; default: {s.default})")
        if s.doc:
            lines.append(wrap(s.doc))
    return "\n".join(lines) + "\n"


def _section_doc(cls: type, section: str) -> str:
    """The docstring of a section's dataclass (the items' class for `rewards[]`)."""
    if not section:
        return ""
    for part in section.split("."):
        name = part.removesuffix("[]")
        hint = typing.get_type_hints(cls)[name]
        cls = item_class(hint) if part.endswith("[]") else hint
    if not dataclasses.is_dataclass(cls):  # a top-level list of dataclasses, which heads its items' section
        return ""
    doc = class_doc(cls)
    if section.endswith("[]"):
        return "The fields of each item of the list" + (f": {doc}" if doc else ".")
    return doc


def suggest(name: str, names: list[str]) -> list[str]:
    """The valid names closest to a mistyped dotted `name`, at most three, best first: those with the same last part
    (`output_dir` finds `checkpoint.output_dir`), else those whose last part is spelled most alike, in the same
    section when it has any (`ppo.batch_sise` finds `ppo.batch_size`, not `ptx.batch_size`)."""
    section, _, leaf = name.rpartition(".")
    same_leaf = [n for n in names if n.rpartition(".")[2] == leaf]
    if same_leaf:
        return same_leaf[:3]
    score = {n: difflib.SequenceMatcher(None, leaf, n.rpartition(".")[2]).ratio() for n in names}
    close = sorted((n for n in names if score[n] >= 0.75), key=lambda n: -score[n])
    close = [n for n in close if score[n] >= score[close[0]] - 0.1] if close else []  # the best, and nearly-as-good
    in_section = [n for n in close if n.rpartition(".")[0] == section]
    return (in_section or close)[:3]


def unknown_setting(cls: type, raw: dict[str, Any], prefix: str = "") -> tuple[str, list[str]] | None:
    """The first key of `raw` that is no field of `cls`, dotted (`rewards[0].wieght` inside a list), with the
    dotted names valid in its place; None when every key is known."""
    hints = typing.get_type_hints(cls)
    for key, value in raw.items():
        if key not in hints:
            return prefix + key, [prefix + name for name in hints]
        hint = strip_optional(hints[key])
        item = item_class(hint)
        found = None
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            found = unknown_setting(hint, value, f"{prefix}{key}.")
        elif item is not None and isinstance(value, list):
            found = next(filter(None, (unknown_setting(item, v, f"{prefix}{key}[{i}].")
                                       for i, v in enumerate(value) if isinstance(v, dict))), None)
        if found:
            return found
    return None


def strip_optional(hint: Any) -> Any:
    """`X` of `X | None`; any other hint as it is."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint


def did_you_mean(name: str, valid: list[str], here: list[str], dashes: str) -> str:
    """`; did you mean --x?` with the closest valid names, else the names valid `here` (the same section)."""
    close = suggest(name, valid)
    if close:
        return "; did you mean " + " or ".join(dashes + c for c in close) + "?"
    if here:
        section = here[0].rpartition(".")[0]
        return f"; the {section or 'top-level'} settings are: {', '.join(n.rpartition('.')[2] for n in here)}."
    return "; `--help` lists every setting."


def line_of(text: str, dotted: str) -> int | None:
    """Line (1-based) of the key `dotted` in a YAML text, when it lies in mappings all the way down."""
    node = yaml.compose(text)
    key = None
    for part in dotted.split("."):
        name, _, index = part.partition("[")
        match = [(k, v) for k, v in node.value if k.value == name] if isinstance(node, yaml.MappingNode) else []
        if not match:
            return None
        key, node = match[0]
        if index:
            if not isinstance(node, yaml.SequenceNode) or int(index.rstrip("]")) >= len(node.value):
                return None
            node = node.value[int(index.rstrip("]"))]
    return key.start_mark.line + 1 if key is not None else None
