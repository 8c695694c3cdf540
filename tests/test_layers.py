"""The architecture a newcomer can see: lower layers never import stages, and no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "closedloop"
LOWER_LAYERS = ("core", "stats", "data", "models")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every closedloop import, in functions too; ``if TYPE_CHECKING:``
    blocks are skipped (annotations only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, a.name) for a in child.names if a.name.startswith("closedloop"))
            elif isinstance(child, ast.ImportFrom):
                mod = child.module or ""
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    mod = ".".join([*base, mod] if mod else base)
                if mod.startswith("closedloop"):
                    found.append((child.lineno, mod))
                    # `from closedloop.x import y` may import the submodule closedloop.x.y
                    found.extend((child.lineno, f"{mod}.{a.name}") for a in child.names)
            visit(child)

    visit(tree)
    return found


def test_lower_layers_never_import_stages() -> None:
    offenders = []
    for layer in LOWER_LAYERS:
        for path in sorted((SRC / layer).rglob("*.py")):
            for line, mod in _imports(path):
                if mod == "closedloop.stages" or mod.startswith("closedloop.stages."):
                    offenders.append(f"{path.relative_to(SRC)}:{line} imports {mod}")
    assert not offenders, "lower layers import stages:\n" + "\n".join(offenders)


def test_no_import_cycles() -> None:
    """Also counts imports inside functions: a lazy import hides a cycle from Python, not from a reader."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = {m for _, m in _imports(path) if m in modules and m != name}
        # importing a.b.c runs a/__init__ and a/b/__init__ first, but that is not a cycle of ideas
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                dfs(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    # a package __init__ re-exporting its submodules is not a cycle of ideas
    real = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)]
    assert not real, "import cycles:\n" + "\n".join(" -> ".join(c) for c in real)
