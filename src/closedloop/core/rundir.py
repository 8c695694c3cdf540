"""The run directory: layout, ownership checks and environment capture.

Layout::

    runs/<name>/<timestamp>-<fp8>/
      config.yaml  env.json  manifest.json  summary.json  report.html
      test_ledger.jsonl  validation_ledger.jsonl
      stages/01_data/ 02_task/ ...      each: stage.json, artifacts/<name>/, figures/, log.txt
      stages/NN_<name>.tmp/             a stage still running or crashed (never looks complete)
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from closedloop.core.errors import RunDirError
from closedloop.core.io import read_json
from closedloop.core.resume import CODE_DIGEST, code_digest

MANIFEST = "manifest.json"


def new_run_dir(runs_dir: Path, name: str, fingerprint: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(runs_dir) / name
    candidate = base / f"{stamp}-{fingerprint[:8]}"
    i = 1
    while candidate.exists():
        candidate = base / f"{stamp}-{fingerprint[:8]}-{i}"
        i += 1
    candidate.mkdir(parents=True)
    return candidate


def claim_out_dir(out: Path, fingerprint: str) -> Path:
    """Use ``--out DIR``: it may be new or empty; a directory holding something else is refused."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise RunDirError(f"--out {out}: exists and is not a directory")
        if any(out.iterdir()):
            manifest = out / MANIFEST
            if manifest.is_file():
                try:
                    other = read_json(manifest)
                except Exception:  # corrupted manifest: still not ours to overwrite
                    other = {}
                raise RunDirError(
                    f"--out {out}: already holds run {other.get('run_id', '?')} of pipeline "
                    f"{other.get('name', '?')!r} (fingerprint {str(other.get('pipeline_fingerprint', '?'))[:8]}); "
                    f"this pipeline's fingerprint is {fingerprint[:8]}. Use --resume {out} to continue that run, "
                    "or choose an empty --out directory."
                )
            raise RunDirError(
                f"--out {out}: exists, is not empty and is not a closedloop run; choose an empty directory"
            )
    out.mkdir(parents=True, exist_ok=True)
    return out


def stage_dirname(index: int, name: str) -> str:
    return f"{index:02d}_{name}"


def git_sha(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(seed: int) -> dict[str, Any]:
    """Versions, platform, seed and git sha: enough to say what produced a run."""
    from importlib import metadata

    versions = {}
    for pkg in (
        "closedloop",
        "numpy",
        "scipy",
        "pandas",
        "scikit-learn",
        "torch",
        "torchvision",
        "onnx",
        "onnxruntime",
        "cleanlab",
        "optuna",
        "pydantic",
        "medmnist",
    ):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": __import__("os").cpu_count(),
        "argv": sys.argv,
        "seed": seed,
        "git_sha": git_sha(),
        CODE_DIGEST: code_digest(),
        "packages": versions,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
