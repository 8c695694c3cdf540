"""Print closedloop's package graph and check it against the layers docs/architecture.md names.

Every ``import closedloop.X`` in ``src/closedloop`` (inside functions too; ``if TYPE_CHECKING:`` blocks
are skipped: annotations only) becomes an arrow between top-level packages. A layer may import only the
layers above it in :data:`LAYERS` (the order of the table in docs/architecture.md); packages in the
same layer never import each other; and no two packages import each other at all.
``tests/test_layers.py`` runs :func:`violations` and checks that docs/architecture.md lists the same
layers, so the doc, the test and this script cannot drift apart.

    python benchmarks/package_graph.py          # the graph, the upward arrows, the mutual imports
"""

from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "closedloop"
DOC = ROOT / "docs" / "architecture.md"

# Imports the layering does not yet allow, each with the reason it is still there. The test fails when
# one disappears (remove it here) as well as when a new one appears.
KNOWN: dict[str, str] = {}


def layers_from_doc(doc: Path = DOC) -> list[tuple[str, ...]]:
    """The layer table of docs/architecture.md, top to bottom: the packages named in each row."""
    rows: list[tuple[str, ...]] = []
    for line in doc.read_text(encoding="utf-8").splitlines():
        cells = line.split("|")
        if len(cells) > 3 and "`closedloop." in cells[2]:
            rows.append(tuple(re.findall(r"`closedloop\.(\w+)`", cells[2])))
        elif rows and not line.startswith("|"):
            break  # the first table ends: the stage table below is not a layer list
    return rows


LAYERS: list[tuple[str, ...]] = layers_from_doc()
# The entry points sit above everything: they wire the packages together.
TOP = ("cli", "__main__", "__init__")


def module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every closedloop import in the file, in functions too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
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


def top_package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def package_edges(src: Path = SRC) -> dict[tuple[str, str], list[str]]:
    """(importer, imported) top-level packages -> the ``file:line`` of each import making the arrow."""
    packages = {
        p.name if p.is_dir() else p.stem
        for p in src.iterdir()
        if not p.name.startswith((".", "_")) or p.name == "__init__.py"
    }
    packages |= {"__init__", "__main__"}
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(src.rglob("*.py")):
        mod = module_name(path, src)
        src_pkg = "__init__" if path == src / "__init__.py" else top_package(mod)
        for line, imported in imports_of(path, mod):
            dst = top_package(imported)
            if dst != src_pkg and dst in packages and imported != "closedloop":
                edges[(src_pkg, dst)].append(f"{path.relative_to(src)}:{line}")
    return dict(edges)


def rank(package: str) -> int | None:
    if package in TOP:
        return len(LAYERS)
    for i, layer in enumerate(LAYERS):
        if package in layer:
            return i
    return None


def violations(edges: dict[tuple[str, str], list[str]]) -> dict[str, str]:
    """``"a -> b"`` -> what is wrong with that arrow: upward, inside one layer, or a package the layer
    table does not name. A pair importing each other always has one upward or same-layer arrow."""
    out: dict[str, str] = {}
    for (a, b), where in sorted(edges.items()):
        ra, rb = rank(a), rank(b)
        missing = [p for p, r in ((a, ra), (b, rb)) if r is None]
        if missing:
            out[f"{a} -> {b}"] = f"{missing[0]} is in no row of docs/architecture.md's layer table"
        elif rb is not None and ra is not None and rb >= ra and b not in TOP:
            kind = "same layer" if ra == rb else "upward"
            mutual = ", and the two import each other" if (b, a) in edges else ""
            shown = ", ".join(where[:3]) + (" ..." if len(where) > 3 else "")
            out[f"{a} -> {b}"] = f"{kind}{mutual}: {shown}"
    return out


def mutual_pairs(edges: dict[tuple[str, str], list[str]]) -> list[str]:
    return sorted(f"{a} <-> {b}" for (a, b) in edges if (b, a) in edges and a < b)


def main() -> int:
    edges = package_edges()
    print("layers (docs/architecture.md, top to bottom):", " | ".join(", ".join(r) for r in LAYERS))
    print("closedloop package graph (importer -> imported: import lines)")
    for (a, b), where in sorted(edges.items(), key=lambda kv: (rank(kv[0][0]) or 0, kv[0])):
        print(f"  {a:>10} -> {b:<10} {len(where)}")
    bad = violations(edges)
    new = {k: v for k, v in bad.items() if k not in KNOWN}
    print(f"packages: {len({p for e in edges for p in e})}, arrows: {len(edges)}")
    print(f"arrows against the layers: {len(bad)} ({len(bad) - len(new)} known, {len(new)} new)")
    print(f"package pairs importing each other: {len(mutual_pairs(edges))} {mutual_pairs(edges)}")
    for k, v in sorted(bad.items()):
        print(f"  {'known' if k in KNOWN else 'NEW'} {k}: {v}" + (f" [{KNOWN[k]}]" if k in KNOWN else ""))
    return 1 if new else 0


if __name__ == "__main__":
    sys.exit(main())
