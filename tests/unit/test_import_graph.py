"""The package's import graph: layers point one way, no module circle.

Every `import` in a module counts, wherever it stands (top level, inside a function, under
TYPE_CHECKING): a circle through type hints is still a circle for whoever reads the code.
Run this file directly to print the graph: `python tests/unit/test_import_graph.py`.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "gateway"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports."""
    modules = {_module_name(p): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    deps.add(sub if sub in modules else target)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read():
    graph = import_graph()
    # A module the checks below rely on, with imports we know: the check must see them.
    assert {"gateway.config", "gateway.store"} <= graph["gateway.app"]
    assert "gateway.server.wire" in graph["gateway.server.session"]


def test_a_circle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_only_the_command_line_imports_the_wiring():
    graph = import_graph()
    assert sorted(m for m, deps in graph.items() if "gateway.app" in deps) == ["gateway.cli"]


def test_services_do_not_import_the_server():
    """Clients, pickup and journal answer requests but know nothing of WebSockets: the error
    codes they raise live in gateway.errors."""
    graph = import_graph()
    for module in ("gateway.clients", "gateway.pickup", "gateway.journal"):
        assert not {d for d in graph[module] if d.startswith("gateway.server")}, module


def test_the_pure_core_imports_no_edge():
    graph = import_graph()
    core = {"gateway.model", "gateway.calls", "gateway.errors", "gateway.numbers",
            "gateway.backoff", "gateway.panels.lamps", "gateway.panels.rights",
            "gateway.panels.engine"}
    for module in core:
        assert graph[module] <= core | {"gateway.config", "gateway.panels"}, module


if __name__ == "__main__":
    g = import_graph()
    for mod in sorted(g):
        print(f"{mod:32} -> {', '.join(sorted(g[mod])) or '-'}")
    print("cycles:", cycles(g) or "none")
    sys.exit(1 if cycles(g) else 0)
