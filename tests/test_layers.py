"""The package's imports run downward only (a lower layer never imports a higher one) and never in a
circle. The layers are written here and, as prose, in foolbench/__init__.py; both must agree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import foolbench

PACKAGE = Path(foolbench.__file__).parent

# Lowest first. A module belongs to the layer of its first name under foolbench (models.base: models).
LAYERS = [
    ["errors", "fileio", "text", "options", "images", "progress"],
    ["data", "models", "encodings", "lookalike", "judges"],
    ["search"],
    ["presets", "protocol"],
    ["zoo"],
    ["resolve"],
    ["rundir"],
    ["transfer_stats", "rating", "report"],
    ["runner"],
    ["experiments", "sweep", "probe", "api"],
    ["cli"],
]
KNOWN_CIRCLES: list[set] = []  # none: every import circle is a failure
# The package root re-exports the Python API lazily (a module __getattr__, on first use): the one import
# that runs upward, from the root's docstring-listed exception, never at `import foolbench`.
LAZY_EXPORTS = {("", "api")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.joinpath(*name.split(".")) if name else PACKAGE
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> set[str]:
    """Every foolbench module `path` imports, at its top or inside functions, relative to foolbench.
    `from foolbench.x import y` counts as importing foolbench.x.y where y is a module."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "foolbench"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                target = ".".join(
                    ["foolbench", *[b for b in base if b], *([node.module] if node.module else [])]
                )
            else:
                target = node.module or ""
            if target.split(".")[0] != "foolbench":
                continue
            inner = target.removeprefix("foolbench").lstrip(".")
            subs = [f"{inner}.{a.name}".lstrip(".") for a in node.names]
            modules = [s for s in subs if is_module(s)]
            found |= {f"foolbench.{m}" for m in modules}
            if len(modules) < len(subs):
                found.add(target)
    return {f.removeprefix("foolbench").lstrip(".") for f in found} - {name}


def graph() -> dict[str, set[str]]:
    edges = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}
    return {a: {b for b in targets if (a, b) not in LAZY_EXPORTS} for a, targets in edges.items()}


def layer(name: str) -> int:
    """The layer of a module; the package root (`__version__`) is below everything."""
    if not name:
        return -1
    top = name.split(".")[0]
    for index, members in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(
        f"foolbench.{name} is in no layer: add '{top}' to LAYERS and to foolbench/__init__.py"
    )


def test_every_module_has_a_layer():
    for name in graph():
        layer(name)


def test_no_import_runs_upward():
    upward = [
        f"foolbench.{a} (layer {layer(a) + 1}) imports foolbench.{b} (layer {layer(b) + 1})"
        for a, targets in graph().items()
        for b in sorted(targets)
        if layer(b) > layer(a)
    ]
    assert not upward, "\n".join(upward)


def circles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    unexpected = [c for c in circles(graph()) if c not in KNOWN_CIRCLES]
    assert not unexpected, f"import circles: {unexpected}"


def test_the_checks_catch_what_they_should():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert circles({"a": {"b"}, "b": set()}) == []
    assert layer("models.base") < layer("zoo.registry") < layer("cli")
    assert "zoo" in imports(PACKAGE / "resolve.py") and "models.load" in imports(PACKAGE / "resolve.py")


def test_the_package_docstring_lists_the_same_layers():
    written = re.findall(r"^\s+(\d+)\.\s+([a-z_]+(?:, [a-z_]+)*)", foolbench.__doc__, flags=re.M)
    assert [int(n) for n, _ in written] == list(range(1, len(LAYERS) + 1))
    assert [names.split(", ") for _, names in written] == LAYERS
