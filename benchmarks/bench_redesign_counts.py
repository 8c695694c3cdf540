"""The counts issue #22 names, for this checkout and for an earlier commit, side by side.

* string-keyed reads (``x.get("k")`` and ``x["k"]``) in the modules that read a run's artifacts back
  outside the stage that made them (report/evidence.py, report/compare.py, tracking/run.py,
  monitoring/compare.py, the former serving/compare.py): an upper bound on keyed JSON reads, since
  a few of them read summary.json or a model's metadata rather than an artifact;
* copies of "find this artifact in a run directory": functions outside ``core/run_reader.py`` that walk
  the manifest's per-stage ``artifacts`` themselves, or glob ``stages/*/artifacts``;
* the package graph against docs/architecture.md's layer table (``benchmarks/package_graph.py``);
* the modules that read a stage's record from the stage module that writes it (outside the stages), and
  the modules outside the train stage that read its held-out helper (the split is a typed record now);
* "one place" per extension, read from the source: second tables a new plug-in would have to be added
  to (a family-ladder table in the train stage, a table of drift-test names in the live monitor, a
  private strategy dict outside the Registry), validate-time checks of ``family``/``tune_knobs``, public
  batteries, and the files that name a built-in optimizer knob (``weight_decay``);
* session 10: the engine's reads of a built-in knob's HParams field by name (``hp.lr``, ...) and
  whether the optimizer is built from the knobs' declared options;
* session 9: keyed reads in the second group of readers (web/build.py, report/html.py, report/runs.py),
  whether ExportRecord's distillation part is still a dict, the training loops (functions calling
  ``.backward()`` in a loop), and the engine lines that apply a knob by name (the l1 penalty, label
  smoothing) against the engine calling each knob's hooks generically.

    python benchmarks/bench_redesign_counts.py [--before REF]    # default REF: 14c91fc (before #22 step 2)
    python benchmarks/bench_redesign_counts.py --before 3088123  # session 9's start
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READERS = (
    "report/evidence.py",
    "report/compare.py",
    "tracking/run.py",
    "monitoring/compare.py",
    "serving/compare.py",
)
SECOND_READERS = ("web/build.py", "report/html.py", "report/runs.py")
"""Readers of a finished run counted from session 9 on (not in the line above, so it stays comparable)."""
HOOKED_KNOBS = ("l1", "label_smoothing")
BUILT_IN_KNOBS = ("lr", "weight_decay", "dropout", "l1", "epochs", "strength", "label_smoothing", "mixup")
"""The built-in network knobs (session 10: the engine's reads of their HParams fields are counted)."""
"""Built-in knobs whose effect the engine had written out by name (now each knob's own hook)."""
LOOKUP_HOME = "core/run_reader.py"
PRODUCERS = ("core/commit.py", "core/records.py", "core/cache.py", "core/pipeline.py", "core/rundir.py")


def keyed_reads(path: Path) -> int:
    """``.get("k")`` calls and ``["k"]`` subscripts read (not assigned) with a string constant key."""
    n = 0
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ) or (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            n += 1
    return n


def training_loops(src: Path) -> list[str]:
    """Functions that call ``.backward()`` inside a loop (a training loop each), as ``file:function``."""
    out = []
    for path in sorted(src.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            inner = [n for n in ast.walk(fn) if isinstance(n, ast.FunctionDef) and n is not fn]
            for loop in (n for n in ast.walk(fn) if isinstance(n, ast.For | ast.While)):
                if any(loop in set(ast.walk(f)) for f in inner):
                    continue  # counted with the nested function that holds it
                calls = [
                    c
                    for c in ast.walk(loop)
                    if isinstance(c, ast.Call)
                    and isinstance(c.func, ast.Attribute)
                    and c.func.attr == "backward"
                ]
                if calls:
                    out.append(f"{path.relative_to(src)}:{fn.name}")
                    break
    return out


def knob_lines_in_engine(src: Path) -> int:
    """Lines of the training engine that read a built-in knob by its field to apply its effect."""
    text = _text(src / "stages/train/engine.py")
    pattern = re.compile(r"\bhp\.(" + "|".join(HOOKED_KNOBS) + r")\b")
    return sum(1 for line in text.splitlines() if pattern.search(line))


def knob_reads_in_engine(src: Path) -> dict[str, int]:
    """The training engine's reads of a built-in knob's HParams field (``hp.<knob>``), per knob."""
    found = [
        node.attr
        for node in ast.walk(ast.parse(_text(src / "stages/train/engine.py")))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "hp"
    ]
    return {k: found.count(k) for k in BUILT_IN_KNOBS if k in found}


def lookup_copies(src: Path) -> list[str]:
    """Functions that find artifacts in a run directory themselves (manifest walk or folder glob)."""
    out = []
    for path in sorted(src.rglob("*.py")):
        rel = str(path.relative_to(src))
        if rel == LOOKUP_HOME or rel in PRODUCERS:
            continue
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, ast.FunctionDef):
                continue
            text = ast.unparse(fn)
            walks_manifest = "'artifacts'" in text and "'stages'" in text and "'type'" in text
            globs = "stages/*/artifacts" in text and ".glob(" in text
            if walks_manifest or globs:
                out.append(f"{rel}:{fn.name}")
    return out


def graph_line(root: Path) -> str:
    spec = importlib.util.spec_from_file_location(
        "package_graph_counts", ROOT / "benchmarks" / "package_graph.py"
    )
    assert spec is not None and spec.loader is not None
    g = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(g)
    layers = g.layers_from_doc(root / "docs" / "architecture.md")
    g.LAYERS[:] = layers
    edges = g.package_edges(root / "src" / "closedloop")
    bad = g.violations(edges)
    return (
        f"arrows {len(edges)}, against architecture.md's layers {len(bad)} ({sorted(bad)}), "
        f"package pairs importing each other {len(g.mutual_pairs(edges))} {g.mutual_pairs(edges)}"
    )


def core_imports(src: Path, packages: tuple[str, ...]) -> int:
    spec = importlib.util.spec_from_file_location(
        "package_graph_core", ROOT / "benchmarks" / "package_graph.py"
    )
    assert spec is not None and spec.loader is not None
    g = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(g)
    n = 0
    for path in (src / "core").rglob("*.py"):
        for _, mod in g.imports_of(path, g.module_name(path, src)):
            if any(mod.startswith(f"closedloop.{p}") for p in packages):
                n += 1
    return n


def _text(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def one_place(src: Path) -> dict[str, object]:
    """Second tables and validate-time checks, found in the source text (not assumed)."""
    train_cfg = _text(src / "stages/train/config.py")
    live = _text(src / "monitoring/live.py") + _text(src / "serving/live.py")
    selection = _text(src / "monitoring/selection.py") + _text(src / "stages/monitor/selection.py")
    heldout = sorted(
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if "stages.train.heldout import" in p.read_text()
        and not str(p.relative_to(src)).startswith("stages/train")
    )
    record_import = re.compile(
        r"from closedloop\.stages\.(task|train|train\.stage|train\.outcomes|export\.bundle|audit\.report) import .*"
        r"\b(TaskSpec|EvaluationReport|ExportBundle|AuditReport|HeldOut|\w+Outcome|Reference|HumanComparison)\b"
    )
    records = sorted(
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if not str(p.relative_to(src)).startswith("stages/") and record_import.search(p.read_text())
    )
    knob_files = sorted(
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if '"weight_decay"' in p.read_text() or "weight_decay:" in p.read_text()
    )
    return {
        "family-ladder tables in the train stage": int("LADDERS" in train_cfg),
        "drift-test name tables in the live monitor": int("LIVE_SKIPS" in live),
        "strategy dicts outside the Registry": int("STRATEGIES: dict" in selection),
        "family/tune_knobs checked at validate": '"tune_knobs"' in train_cfg
        and "MODELS.resolve" in train_cfg,
        "public plug-in batteries": sum(
            (src / f).is_file()
            for f in (
                "monitoring/drift/checks.py",
                "models/checks.py",
                "stages/audit/checks.py",
                "stages/train/knob_checks.py",
                "monitoring/selection_checks.py",
            )
        ),
        "files naming the weight_decay knob": f"{len(knob_files)} {knob_files}",
        "modules outside the train stage reading its held-out helper": f"{len(heldout)} {heldout}",
        "modules outside the stages importing a stage module for a record type": f"{len(records)} {records}",
    }


def report(root: Path, label: str) -> None:
    src = root / "src" / "closedloop"
    reads = {r: keyed_reads(src / r) for r in READERS if (src / r).is_file()}
    copies = lookup_copies(src)
    print(f"[{label}] string-keyed reads in artifact readers: {sum(reads.values())} {reads}")
    print(f"[{label}] copies of the artifact lookup outside core/run_reader.py: {len(copies)} {copies}")
    print(f"[{label}] one run-directory reader in core: {(src / LOOKUP_HOME).is_file()}")
    print(
        f"[{label}] core import lines naming report or tracking: {core_imports(src, ('report', 'tracking'))}"
    )
    print(f"[{label}] package graph: {graph_line(root)}")
    for what, value in one_place(src).items():
        print(f"[{label}] {what}: {value}")
    second = {r: keyed_reads(src / r) for r in SECOND_READERS if (src / r).is_file()}
    export_record = _text(src / "artifacts/export.py")
    untyped = "distillation: dict[str, Any]" in export_record
    print(
        f"[{label}] string-keyed reads in web/build.py, report/html.py, report/runs.py: {sum(second.values())} {second}"
    )
    print(f"[{label}] ExportRecord's distillation part is a dict read by key: {untyped}")
    loops = training_loops(src)
    print(f"[{label}] training loops (functions calling .backward() in a loop): {len(loops)} {loops}")
    engine = _text(src / "stages/train/engine.py")
    generic = "loss_hooks(" in engine and "target_hooks(" in engine
    print(
        f"[{label}] engine lines applying a knob by name ({', '.join(HOOKED_KNOBS)}): {knob_lines_in_engine(src)}; "
        f"engine calls every knob's hooks generically: {generic}; files to touch to add a knob with a new "
        f"effect: {1 if generic else 2} ({'its class' if generic else 'knobs.py + an HParams field and engine code'})"
    )
    reads = knob_reads_in_engine(src)
    options = "K.optimizer_options(" in engine
    print(
        f"[{label}] engine reads of a built-in knob's HParams field (hp.<knob>): {sum(reads.values())} {reads}; "
        f"optimizer built from the knobs' declared options: {options}; files to touch to add an optimizer "
        f"knob: {1 if options else 3} ({'its class' if options else 'knobs.py + an HParams field + engine code'})"
    )


def checkout(ref: str, into: Path) -> Path:
    data = subprocess.run(
        ["git", "archive", ref, "src", "docs"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default="14c91fc", help="git ref to count for comparison")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report(checkout(a.before, Path(tmp)), f"before {a.before}")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    report(ROOT, f"now {head.stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
