"""Finding and summarizing run directories: the rows of ``closedloop runs``."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from closedloop.core.errors import RunDirError
from closedloop.core.run_reader import RunDir

MARKERS = ("manifest.json", "config.yaml")


class RunRow(BaseModel):
    """One line of the runs table."""

    model_config = ConfigDict(extra="forbid")

    name: str
    run_dir: str
    time: str
    status: str
    metric: str | None = None
    value: float | None = None
    ci95: tuple[float, float] | None = None
    beats_baseline: bool | None = None
    blessed: bool | None = None
    next_step: str | None = None


def is_run_dir(path: Path) -> bool:
    return all((Path(path) / m).is_file() for m in MARKERS)


def require_run_dir(path: str | Path) -> Path:
    """``path`` if it is a run directory, else a :class:`RunDirError` saying what is missing."""
    p = Path(path)
    if not p.exists():
        raise RunDirError(f"{p}: no such directory")
    if not p.is_dir():
        raise RunDirError(f"{p}: not a directory; expected a closedloop run directory")
    missing = [m for m in MARKERS if not (p / m).is_file()]
    if missing:
        raise RunDirError(
            f"{p}: not a closedloop run directory (no {', '.join(missing)}); "
            "run directories look like runs/<name>/<timestamp>-<hash>/"
        )
    return p


def find_runs(root: str | Path) -> list[Path]:
    """Run directories under ``root`` (``root`` itself, ``root/<run>`` or ``root/<name>/<run>``)."""
    root = Path(root)
    if not root.is_dir():
        raise RunDirError(f"{root}: no such runs directory")
    if is_run_dir(root):
        return [root]
    found = [p for p in root.glob("*") if is_run_dir(p)] + [p for p in root.glob("*/*") if is_run_dir(p)]
    return sorted(set(found), key=lambda p: (p.name, str(p)))


def _time(run_dir: Path) -> str:
    stamp = run_dir.name.split("-")[:2]
    try:
        return _dt.datetime.strptime("-".join(stamp), "%Y%m%d-%H%M%S").strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return _dt.datetime.fromtimestamp((run_dir / "manifest.json").stat().st_mtime).strftime(
            "%Y-%m-%d %H:%M:%S"
        )


def run_row(run_dir: Path) -> RunRow:
    """Summarize one run (a run still going or killed has no summary.json: its manifest's status)."""
    from closedloop.report.decision import decide
    from closedloop.report.evidence import gather

    manifest = RunDir(run_dir).manifest_record
    row = RunRow(
        name=manifest.name or run_dir.parent.name,
        run_dir=str(run_dir),
        time=_time(run_dir),
        status=manifest.status,
    )
    if not (run_dir / "summary.json").is_file():
        row.status = "running" if row.status == "running" else f"{row.status} (no summary)"
        return row
    try:
        ev = gather(run_dir)
    except RunDirError as exc:  # one run of an older layout must not hide the others
        row.status, row.next_step = "unreadable", str(exc).split(": ", 1)[-1][:160]
        return row
    row.status = ev.status
    m = ev.primary_metric
    if m and m in ev.test:
        row.metric, row.value, row.ci95 = m, ev.test[m].value, ev.test[m].ci95
    row.beats_baseline = ev.gate.significant if ev.gate else None
    row.blessed = ev.shipped.blessed if ev.shipped else None
    row.next_step = decide(ev).next_step.title
    return row


def _yn(v: bool | None) -> str:
    return "-" if v is None else ("yes" if v else "no")


def format_table(rows: list[RunRow]) -> str:
    """A plain-text table for the terminal."""
    head = ["name", "time", "status", "test metric [95% CI]", "beats baseline", "blessed", "next step", "run"]
    lines = []
    for r in rows:
        metric = (
            f"{r.metric} {r.value:.4f} [{r.ci95[0]:.4f}, {r.ci95[1]:.4f}]"
            if r.metric and r.value is not None and r.ci95
            else (f"{r.metric} {r.value:.4f}" if r.metric and r.value is not None else "-")
        )
        lines.append(
            [
                r.name,
                r.time,
                r.status,
                metric,
                _yn(r.beats_baseline),
                _yn(r.blessed),
                r.next_step or "-",
                r.run_dir,
            ]
        )
    widths = [max(len(h), *(len(x[i]) for x in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*x) for x in lines]
    )
