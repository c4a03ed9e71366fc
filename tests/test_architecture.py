"""DESIGN section 2's import rules, checked on the source.

Every ``.py`` file of ``engine/``, ``propeller/``, ``plugins/`` and ``catalog/`` is parsed with ``ast``
and every import between our own files becomes an edge of a file-level graph. Module-level and
function-level (deferred) imports both count: a deferred import still ties the two files together,
it only moves the failure to run time. Imports under ``if TYPE_CHECKING:`` are left out, since they
never execute.

Resolution: ``import engine`` and ``from engine import Name`` are edges to ``engine/__init__.py``
(its lazy ``__getattr__`` map is not followed); ``from engine import errors``, where the name is a
submodule, is an edge to that submodule; relative imports are resolved against the importing file.
Implicit imports of parent packages are not edges.
"""

from __future__ import annotations

import ast
import fnmatch
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "propeller", "plugins", "catalog")

FLOOR = (
    "engine.errors",
    "engine.models",
    "engine.events",
    "engine.literals",
    "engine.state",
    "engine._array_state",
    "engine.interfaces",
    "engine.testing",
    # what every event store shares (the in-memory one in engine.testing included)
    "engine._projection",
    "engine._wakeups",
    "engine._chain",  # the checksum chain every store writes and every read checks
)
# the worker runtime (DESIGN: "the one runner every executor uses")
RUNTIME = ("engine.runtime", "engine._capture")  # _capture: what an attempt prints, kept per attempt
# task / workflow / dynamic / map_task, the type system, the codec, the compiler
SDK = (
    "engine._compiler",
    "engine._context",
    "engine._files",
    "engine._interface",
    "engine._literals",
    "engine._map",
    "engine._promise",
    "engine._task",
    "engine._types",
    "engine._workflow",
)
OUTSIDE_ENGINE = tuple(p for pkg in PACKAGES if pkg != "engine" for p in (pkg, f"{pkg}.*"))


@dataclass(frozen=True)
class Rule:
    """Modules matching ``modules`` may import, of ours, only modules matching ``may_import``, and never
    those matching ``must_not_import`` (fnmatch patterns over dotted module names)."""

    name: str
    modules: tuple[str, ...]
    may_import: tuple[str, ...]
    design: str
    must_not_import: tuple[str, ...] = ()


# DESIGN section 2, one row per sentence (the shell, the rest of engine/, may import anything).
RULES = (
    Rule(
        "floor",
        modules=FLOOR,
        may_import=FLOOR,
        design="The floor imports nothing of ours outside the floor.",
    ),
    Rule(
        "propeller",
        modules=("propeller", "propeller.*"),
        may_import=(*FLOOR, "propeller", "propeller.*"),
        design="`propeller` imports the floor only (never `engine`'s SDK, a backend, `catalog` or `plugins`).",
    ),
    Rule(
        "plugins",
        modules=("plugins", "plugins.*"),
        may_import=(*FLOOR, *RUNTIME, "plugins", "plugins.*"),
        design="`plugins/*` and `catalog` import the floor and `engine.runtime`.",
    ),
    Rule(
        "catalog",
        modules=("catalog", "catalog.*"),
        may_import=(*FLOOR, *RUNTIME, "catalog", "catalog.*"),
        design="`plugins/*` and `catalog` import the floor and `engine.runtime`.",
    ),
    Rule(
        "runtime",
        modules=RUNTIME,
        may_import=(*FLOOR, *SDK, *RUNTIME),
        design="The worker runtime imports the floor and the SDK, never the shell: every executor imports it.",
    ),
    Rule(
        "private",
        modules=OUTSIDE_ENGINE,
        may_import=("*",),
        must_not_import=("engine._*",),
        design="Private modules, public facade: outside `engine` nothing imports a private `engine._x` module.",
    ),
)


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: str
    line: int


def _matches(module: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(module, p) for p in patterns)


def _module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join(parts)] = path
    return files


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)  # the body never runs; an `else:` does
        else:
            stack.extend(ast.iter_child_nodes(node))


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, files: dict[str, Path], packages: tuple[str, ...]
) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] in packages:
                yield alias.name
        return
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join([*parts, *([node.module] if node.module else [])])
    else:
        base = node.module or ""
    if base.split(".")[0] not in packages:
        return
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        yield submodule if submodule in files else base


def collect_edges(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[Edge]:
    """The imports between our own modules under ``root``.

    Args:
        root: the repository root.
        packages: the top-level packages that are ours.

    Returns:
        One edge per (import statement, imported module of ours), in file order.
    """
    files = _module_files(root, packages)
    edges: list[Edge] = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(root).as_posix()
        found = {
            Edge(module, target, rel, node.lineno)
            for node in _imports(tree)
            for target in _targets(node, module, path.name == "__init__.py", files, packages)
            if target != module
        }
        edges.extend(sorted(found, key=lambda e: (e.line, e.target)))
    return edges


def find_cycles(edges: Iterable[Edge]) -> list[str]:
    """The import cycles, as ``a.py:3 -> b.py:7 -> a.py``: for every file that is on a cycle, the
    shortest cycle through it (so a hub imported back by three files shows three cycles).

    Each ``file:line`` is the import that leads to the next file.

    Args:
        edges: from ``collect_edges``.

    Returns:
        The cycles, readable; empty when the graph is acyclic.
    """
    graph: dict[str, dict[str, Edge]] = {}
    for edge in edges:
        graph.setdefault(edge.source, {}).setdefault(edge.target, edge)
    cycles: dict[frozenset[Edge], list[Edge]] = {}
    for component in _strongly_connected(graph):
        for start in sorted(component):
            path = _shortest_cycle(graph, component, start)
            # the same cycle found from each of its files is reported once, from its first file
            cycles.setdefault(frozenset(path), path)
    return sorted(" -> ".join([*(f"{e.path}:{e.line}" for e in path), path[0].path]) for path in cycles.values())


def _shortest_cycle(graph: dict[str, dict[str, Edge]], component: set[str], start: str) -> list[Edge]:
    """Breadth-first from ``start`` back to it, staying inside its strongly connected component."""
    previous: dict[str, Edge] = {}
    queue = deque([start])
    while queue and start not in previous:
        node = queue.popleft()
        for target, edge in sorted(graph.get(node, {}).items()):
            if target in component and target not in previous:
                previous[target] = edge
                queue.append(target)
    path = [previous[start]]
    while path[-1].source != start:
        path.append(previous[path[-1].source])
    return path[::-1]


def _strongly_connected(graph: dict[str, dict[str, Edge]]) -> list[set[str]]:
    """Tarjan's algorithm; only components that hold a cycle (two files or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def rule_violations(edges: Iterable[Edge], rules: Iterable[Rule] = RULES) -> list[str]:
    """The edges that break a rule, one line each: file, line, the edge, the rules and DESIGN's wording.

    Args:
        edges: from ``collect_edges``.
        rules: the rule table.

    Returns:
        The violations, readable; empty when every edge is allowed.
    """
    rules = list(rules)
    found = []
    for edge in edges:
        broken = [
            f"rule {rule.name!r} ({rule.design})"
            for rule in rules
            if _matches(edge.source, rule.modules)
            and (not _matches(edge.target, rule.may_import) or _matches(edge.target, rule.must_not_import))
        ]
        if broken:
            found.append(f"{edge.path}:{edge.line}: {edge.source} imports {edge.target}, breaking " + "; ".join(broken))
    return found


def test_no_import_cycles() -> None:
    cycles = find_cycles(collect_edges(ROOT))
    assert not cycles, (
        "import cycles between files (each file:line imports the next file; deferred imports count):\n  "
        + "\n  ".join(cycles)
    )


def test_layers_import_only_what_design_allows() -> None:
    violations = rule_violations(collect_edges(ROOT))
    assert not violations, "imports that DESIGN section 2 forbids:\n  " + "\n  ".join(violations)


def test_checker_reports_planted_violations(tmp_path: Path) -> None:
    files = {
        "engine/__init__.py": "",
        "engine/_types.py": "def type_repr(tp):\n    return str(tp)\n",
        # the floor importing the SDK, from inside a function
        "engine/errors.py": "def f():\n    from engine._types import type_repr\n    return type_repr\n",
        # a floor import that never runs is no edge
        "engine/models.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from engine import _types\n",
        # a two-file cycle through a relative import
        "engine/_a.py": "from . import _b\n",
        "engine/_b.py": "import engine._a\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)

    edges = collect_edges(tmp_path)

    assert find_cycles(edges) == ["engine/_a.py:1 -> engine/_b.py:1 -> engine/_a.py"]
    assert rule_violations(edges) == [
        "engine/errors.py:2: engine.errors imports engine._types, breaking rule 'floor' "
        "(The floor imports nothing of ours outside the floor.)"
    ]
