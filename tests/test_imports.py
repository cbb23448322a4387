"""The package's import graph has no cycle (docs/design.md: a module only imports the layers
above it). Read from the source (AST), so function-level imports count as well as top-level ones;
nothing is imported."""

from __future__ import annotations

import ast
import os

import projcomp

ROOT = os.path.dirname(os.path.abspath(projcomp.__file__))


def _modules() -> dict:
    """{dotted module name: file path} for every .py file of the package."""
    mods = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), os.path.dirname(ROOT))[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                mods[".".join(rel)] = os.path.join(folder, f)
    return mods


def import_graph() -> dict:
    """{module: set of package modules it imports anywhere in its body}. `from a import b` is an
    edge to `a.b` when that is a module, else to `a`; the implicit import of a module's parent
    packages is not an edge (Python runs a package's __init__ before its submodules, and a submodule
    that imports its parent package is no cycle of its own)."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        is_pkg = os.path.basename(path) == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:  # `import projcomp.x.y` names a module; keep the longest known
                    t = t.rpartition(".")[0]
                if t and t != name:
                    edges.add(t)
        graph[name] = edges
    return graph


def find_cycles(graph: dict) -> list:
    """Every strongly connected component with more than one module (Tarjan), as sorted lists."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_graph_reads_function_level_imports():
    g = import_graph()
    assert "projcomp.compose" in g and "projcomp.sampling" in g
    # evaluate imports the detector inside functions only; the walk must still see it.
    assert "projcomp.clevr.detect" in g["projcomp.evaluate"]


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert cycles == [], f"import cycles in projcomp: {cycles}"
