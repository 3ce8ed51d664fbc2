"""The package layout: no import cycles among the project's modules, and one registry that names every
acquisition the command line accepts."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fkal", "vaal")


def module_graph() -> dict[str, set[str]]:
    """``{module: project modules it imports}``, from every import statement (function-level ones included)."""
    files = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            files[name.removesuffix(".__init__")] = path

    def targets(module: str, node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = module.split(".") if files[module].name == "__init__.py" else module.split(".")[:-1]
        if node.level:
            base = base[:len(base) - node.level + 1]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module
        names = [f"{prefix}.{a.name}" for a in node.names]
        # ``from package import module`` depends on the module; the package itself only where a name is not one
        return names + ([prefix] if any(n not in files for n in names) else [])

    graph = {}
    for module, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in targets(module, node):
                    while target not in files and "." in target:
                        target = target.rsplit(".", 1)[0]
                    if target in files and target != module:
                        deps.add(target)
        graph[module] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = module_graph()
    assert "fkal.acquisitions.registry" in graph and "fkal.data.protocol" in graph
    assert cycles(graph) == []


def test_the_contract_imports_no_acquisition():
    graph = module_graph()
    families = {m for m in graph if m.startswith("fkal.acquisitions.") and m not in
                ("fkal.acquisitions.contract", "fkal.acquisitions.registry")}
    assert not graph["fkal.acquisitions.contract"] & (families | {"fkal.acquisitions.registry"})
    assert families <= graph["fkal.acquisitions.registry"]                # the registry names every family
