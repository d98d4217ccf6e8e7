"""The package's structure as docs/architecture.md states it: imports go
one way (no cycles), and modules stay small enough to read."""

import ast
import os

import pytest

# Independent of the Keras backend (see conftest.py).
pytestmark = pytest.mark.once

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scan_keras")
# Modules allowed over MAX_LINES, each with the reason docs/architecture.md gives.
MAX_LINES = 450
LARGER = {}


def _modules():
    """{dotted name: path} of every module of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3]
                dotted = relative.replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def _imports(path, modules):
    """The package's modules that the file at `path` imports, anywhere in it."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import sub` imports the submodule when there is one.
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in modules
                else node.module
                for alias in node.names
            ]
        else:
            continue
        targets.update(name for name in names if name in modules)
    return targets


def import_graph():
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    # A package's __init__ re-exporting its modules is no cycle: those
    # modules import siblings, never the package's names.
    for name in list(graph):
        if _modules()[name].endswith("__init__.py"):
            graph[name] = set()
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_layers_import_only_layers_and_checks():
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith("scan_keras.layers"):
            outside = {
                t for t in targets
                if not t.startswith("scan_keras.layers") and t != "scan_keras.checks"
            }
            assert not outside, f"{name} imports {sorted(outside)}"


def test_the_fused_kernel_imports_only_constants_and_the_platform():
    graph = import_graph()
    allowed = {
        "scan_keras.layers.options",
        "scan_keras.layers.platform",
        "scan_keras.layers.norms",
        "scan_keras.layers.pallas.tiles",
        "scan_keras.checks",
    }
    assert graph["scan_keras.layers.pallas.kernel"] <= allowed
    assert not graph["scan_keras.layers.pallas.tiles"]


@pytest.mark.parametrize("name", sorted(_modules()))
def test_modules_stay_short(name):
    lines = sum(1 for _ in open(_modules()[name], encoding="utf-8"))
    assert lines <= LARGER.get(name, MAX_LINES), (
        f"{name} has {lines} lines; split it by concept or give the reason "
        "in docs/architecture.md and LARGER"
    )


def render_graph(graph):
    """The import graph as text, lowest layer first: `module -> imports`."""
    depth = {}

    def level(node):
        if node not in depth:
            depth[node] = 1 + max((level(n) for n in graph[node]), default=-1)
        return depth[node]

    short = lambda name: name.removeprefix("scan_keras.") or name  # noqa: E731
    lines = []
    for node in sorted(graph, key=lambda n: (level(n), n)):
        if node == "scan_keras" or _modules()[node].endswith("__init__.py"):
            continue
        targets = ", ".join(sorted(short(t) for t in graph[node] if t != "scan_keras"))
        lines.append(f"{short(node)} -> {targets or '(nothing of the package)'}")
    return "\n".join(lines)


def test_architecture_md_shows_the_import_graph():
    graph = import_graph()
    for name in list(graph):
        if _modules()[name].endswith("__init__.py"):
            graph[name] = set()
    path = os.path.join(os.path.dirname(PACKAGE), "docs", "architecture.md")
    text = open(path, encoding="utf-8").read()
    start = text.index("<!-- import graph -->\n```text\n") + len("<!-- import graph -->\n```text\n")
    shown = text[start : text.index("```", start)].strip()
    assert shown == render_graph(graph), (
        "docs/architecture.md's import graph is out of date; it should read:\n"
        + render_graph(graph)
    )
