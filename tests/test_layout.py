"""The import graph: arrows only point down the layers, and no module imports itself back.

Layers, lowest first (docs/design.md "Layers of the code" draws them):

    core (and errors) < foundation (settings, logging) < aws < domain < runtime < ops < local < cli

A module may import its own layer and the layers below it. `sesguard.errors`, the error
tree, sits with core, whose checks raise it. `sender` and `worker` sit on top and may
import any layer of sesguard; sesguard imports neither, except `sesguard.cli.services`,
the one module that starts them. Every import counts, including those inside functions and
under `if TYPE_CHECKING:` (a type-only import is still an arrow a reader follows); the cycle
check leaves out the type-only ones, which never run.

The graph is read with `ast` from the source files, so a lazy import cannot hide an arrow.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sesguard", "sender", "worker")

# sesguard's layers, lowest first; a module's layer is the first of its dotted name's
# prefixes found here.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("sesguard.core", "sesguard.errors")),
    ("foundation", ("sesguard", "sesguard.settings", "sesguard.logging")),
    ("aws", ("sesguard.aws",)),
    ("domain", ("sesguard.domain",)),
    ("runtime", ("sesguard.runtime",)),
    ("ops", ("sesguard.ops",)),
    ("local", ("sesguard.local",)),
    ("cli", ("sesguard.cli",)),
    ("services", ("sender", "worker")),
)
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (ours only)
    line: int
    type_only: bool  # under `if TYPE_CHECKING:`


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def layer_of(module: str) -> str:
    best, best_len = "", -1
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and len(prefix) > best_len:
                best, best_len = name, len(prefix)
    assert best, f"{module} is in no layer: add it to LAYERS in tests/test_layout.py"
    return best


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import of one of our modules in `path`, wherever it is written."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def ours(name: str) -> str | None:
        """The deepest of our modules that `name` is or is inside."""
        while name:
            if name in modules:
                return name
            name = name.rpartition(".")[0]
        return None

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            # `from a import b` imports the module a.b when there is one, else a name of a.
            targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
        for target in targets:
            resolved = ours(target)
            if resolved is not None and resolved != module:
                found.append(Import(module, resolved, getattr(node, "lineno", 0), type_only))
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(tree, False)
    return found


def upward(imports: list[Import]) -> list[str]:
    """The imports that point up a layer, or from sesguard into a service, as messages."""
    wrong = []
    for imp in imports:
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if RANK[dst] > RANK[src] and (src, dst) != ("cli", "services"):
            wrong.append(f"{imp.source}:{imp.line} ({src}) imports {imp.target} ({dst})")
    return wrong


def cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), run-time imports only."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if not imp.type_only:
            graph.setdefault(imp.source, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:  # recursion depth is bounded by the module count (~100)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


@pytest.fixture(scope="module")
def graph() -> list[Import]:
    modules = all_modules()
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


def test_every_module_has_a_layer() -> None:
    for module in all_modules():
        layer_of(module)


def test_the_graph_is_read(graph: list[Import]) -> None:
    """The reader sees lazy, type-only and `from package import module` imports alike."""
    edges = {(imp.source, imp.target, imp.type_only) for imp in graph}
    assert ("sesguard.cli.services", "sender.service", False) in edges  # inside a function
    assert ("sesguard.cli.services", "sesguard.local.demo", True) in edges  # TYPE_CHECKING
    assert ("sesguard.cli.partners", "sesguard.ops.operations", False) in edges  # pkg import mod
    assert ("sesguard.cli", "sesguard.cli.dlq", False) in edges  # a package's own module
    assert ("sesguard.aws.store", "sesguard.aws.table", False) in edges  # import ... as t


def test_no_arrow_points_up(graph: list[Import]) -> None:
    assert upward(graph) == []


def test_only_the_cli_imports_the_services(graph: list[Import]) -> None:
    into_services = sorted(
        {
            imp.source
            for imp in graph
            if imp.source.startswith("sesguard") and layer_of(imp.target) == "services"
        }
    )
    assert into_services == ["sesguard.cli.services"]


def test_no_import_cycle(graph: list[Import]) -> None:
    assert cycles(graph) == []


def test_the_checks_catch_what_they_look_for() -> None:
    """An upward arrow and a cycle, made up, are reported (the checks can fail)."""
    made_up = [
        Import("sesguard.core.policy", "sesguard.ops.report", 1, False),
        Import("sesguard.aws.store", "worker.apply", 2, True),
        Import("sesguard.cli", "worker.main", 7, False),  # the one entry that starts them
        Import("sesguard.aws.held", "sesguard.aws.enqueue", 3, False),
        Import("sesguard.aws.enqueue", "sesguard.aws.held", 4, False),
        Import("sesguard.aws.table", "sesguard.aws.store", 5, True),  # type-only: no cycle
        Import("sesguard.aws.store", "sesguard.aws.table", 6, False),
    ]
    assert upward(made_up) == [
        "sesguard.core.policy:1 (core) imports sesguard.ops.report (ops)",
        "sesguard.aws.store:2 (aws) imports worker.apply (services)",
    ]
    assert cycles(made_up) == [["sesguard.aws.enqueue", "sesguard.aws.held"]]


def local_imports_of_services(imports: list[Import]) -> list[str]:
    """Arrows from a service into the local tooling (the demo's stand-in, the simulator)."""
    return [
        f"{imp.source}:{imp.line} imports {imp.target}"
        for imp in imports
        if layer_of(imp.source) == "services" and layer_of(imp.target) == "local"
    ]


def test_the_services_are_free_of_the_local_tooling(graph: list[Import]) -> None:
    """What runs on ECS never imports the demo's stand-in: local runs inject what they
    need (the simulator's after-send hook) from above, through sesguard.cli."""
    assert local_imports_of_services(graph) == []
    made_up = [Import("sender.handler", "sesguard.local.simulator", 9, True)]
    assert local_imports_of_services(made_up) == [
        "sender.handler:9 imports sesguard.local.simulator"
    ]


def test_one_partner_judgement(graph: list[Import]) -> None:
    """The sender's gate and the worker's enforcement judge through sesguard.domain, and
    nothing but the domain writes a pause (sesguard.domain.transitions)."""
    judged_by = {imp.source for imp in graph if imp.target == "sesguard.domain.judgement"}
    assert {"sender.gate", "worker.enforce"} <= judged_by
    transitions_users = {
        imp.source
        for imp in graph
        if imp.target == "sesguard.domain.transitions" and not imp.type_only
    }
    assert transitions_users <= {
        "sesguard.domain.judgement",
        "sesguard.domain.reactions",
        "sesguard.ops.operations",
    }
