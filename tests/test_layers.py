"""The architecture a newcomer can see: lower layers never import stages, monitoring sits below both the
stages and the server (neither of which imports the other), and no import cycles."""

from __future__ import annotations

import functools
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "closedloop"
LOWER_LAYERS = ("core", "artifacts", "stats", "data", "models", "monitoring")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every closedloop import, in functions too; ``if TYPE_CHECKING:``
    blocks are skipped (annotations only)."""
    return _imports_of(path, _module_name(path))


def _imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    return _package_graph().imports_of(path, module)


def test_lower_layers_never_import_stages() -> None:
    offenders = []
    for layer in LOWER_LAYERS:
        for path in sorted((SRC / layer).rglob("*.py")):
            for line, mod in _imports(path):
                if mod == "closedloop.stages" or mod.startswith("closedloop.stages."):
                    offenders.append(f"{path.relative_to(SRC)}:{line} imports {mod}")
    assert not offenders, "lower layers import stages:\n" + "\n".join(offenders)


def _offenders(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in sorted((SRC / layer).rglob("*.py")):
        for line, mod in _imports(path):
            if any(mod == f"closedloop.{f}" or mod.startswith(f"closedloop.{f}.") for f in forbidden):
                out.append(f"{path.relative_to(SRC)}:{line} imports {mod}")
    return out


def test_monitoring_sits_below_stages_and_serving() -> None:
    """The monitor library is shared by the monitor stage and the server; it imports neither."""
    offenders = _offenders("monitoring", ("stages", "serving"))
    assert not offenders, "monitoring imports a layer above it:\n" + "\n".join(offenders)


def test_serving_and_stages_never_import_each_other() -> None:
    """The server runs without the pipeline (no torch) and the pipeline without the server; what both
    need (the request log, the profile, the drift tests) lives in ``closedloop.monitoring``."""
    offenders = _offenders("serving", ("stages",)) + _offenders("stages", ("serving",))
    assert not offenders, "serving and stages import each other:\n" + "\n".join(offenders)


def test_the_layer_checks_see_a_violation(tmp_path: Path) -> None:
    """The checks above read imports inside functions too; this guards the reader itself."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f():\n    from closedloop.stages.task import TaskSpec\n    import closedloop.serving.app\n"
    )
    mods = [m for _, m in _imports_of(bad, "closedloop.monitoring.bad")]
    assert "closedloop.stages.task" in mods and "closedloop.serving.app" in mods


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


@functools.cache
def _package_graph():  # benchmarks/package_graph.py prints the graph; the test reads the same code
    import importlib.util

    path = SRC.parents[1] / "benchmarks" / "package_graph.py"
    spec = importlib.util.spec_from_file_location("package_graph", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_core_imports_neither_the_report_nor_the_tracker() -> None:
    """They are pipeline callbacks found by name (core.callbacks.CALLBACKS), as stages are."""
    offenders = _offenders("core", ("report", "tracking"))
    assert not offenders, "core imports its consumers:\n" + "\n".join(offenders)


def test_package_graph_follows_the_layer_table_of_architecture_md() -> None:
    """Every arrow between packages points up docs/architecture.md's layer table (the table is read from
    the doc, so the doc and this test cannot drift); the known exceptions are listed with their reason
    in benchmarks/package_graph.py and must still exist (a fixed one is removed from the list)."""
    g = _package_graph()
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    placed = {p for row in g.LAYERS for p in row}
    assert packages <= placed, (
        f"packages missing from docs/architecture.md's layer table: {packages - placed}"
    )
    bad = g.violations(g.package_edges())
    new = {k: v for k, v in bad.items() if k not in g.KNOWN}
    assert not new, "imports against the layers:\n" + "\n".join(f"{k}: {v}" for k, v in new.items())
    stale = set(g.KNOWN) - set(bad)
    assert not stale, f"fixed, remove from KNOWN in benchmarks/package_graph.py: {stale}"
    # each pair importing each other is one of the known exceptions, never a new one
    assert {m.replace(" <-> ", "") for m in g.mutual_pairs(g.package_edges())} <= {
        "".join(sorted(k.split(" -> "))) for k in g.KNOWN
    }


def test_the_graph_check_sees_an_upward_arrow(tmp_path: Path) -> None:
    g = _package_graph()
    edges = {("core", "report"): ["core/x.py:1"], ("report", "core"): ["report/y.py:2"]}
    bad = g.violations(edges)
    assert "upward, and the two import each other" in bad["core -> report"]
    assert g.mutual_pairs(edges) == ["core <-> report"]


RECORD_HOMES = (
    "closedloop.stages.task",
    "closedloop.stages.train",
    "closedloop.stages.train.stage",
    "closedloop.stages.train.outcomes",
    "closedloop.stages.train.heldout",
    "closedloop.stages.export.bundle",
    "closedloop.stages.audit.report",
)
TRAIN_RECORDS = (
    "closedloop.stages.train.stage",
    "closedloop.stages.train.outcomes",
    "closedloop.stages.train.heldout",
)


def test_readers_take_the_records_from_closedloop_artifacts() -> None:
    """The records a stage writes (task spec, evaluation report, phase outcomes, the held-out split,
    export and audit records) are read back from ``closedloop.artifacts`` (the held-out rows selected
    with ``closedloop.models.heldout``): no package outside the stages imports the stage modules that
    write them, and no other stage imports the train stage's records."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        for line, mod in _imports(path):
            outside = not module.startswith("closedloop.stages") and mod in RECORD_HOMES
            other_stage = not module.startswith("closedloop.stages.train") and mod in TRAIN_RECORDS
            if outside or other_stage:
                offenders.append(f"{path.relative_to(SRC)}:{line} imports {mod}")
    assert not offenders, "records read from the stage that writes them:\n" + "\n".join(offenders)
