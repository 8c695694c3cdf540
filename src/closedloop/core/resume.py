"""What ``--resume`` refuses: continuing a run whose config or code changed since it started.

A resumed run must end where the uninterrupted run would have ended (docs/training.md). A run whose
first stages came from one config or code version and whose last stages come from another matches
neither, so the resume is refused, naming what changed; a new run costs little because the cross-run
cache reuses every finished stage whose fingerprint did not change.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

CODE_DIGEST = "code_digest"
"""Key of ``env.json``: the digest of the closedloop source that started the run."""


def code_digest() -> str:
    """sha256 over the closedloop package's Python sources (names and contents): changes with any
    edit, committed or not, unlike a git sha."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def config_changes(old: Any, new: Any, where: str = "") -> list[str]:
    """Dotted paths whose values differ between two resolved configs, e.g. ``stages[3].params.n_trials: 3 -> 5``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in list(old) + [k for k in new if k not in old]:
            path = f"{where}.{k}" if where else str(k)
            if k not in new:
                out.append(f"{path}: removed (was {old[k]!r})")
            elif k not in old:
                out.append(f"{path}: added ({new[k]!r})")
            else:
                out.extend(config_changes(old[k], new[k], path))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            c
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for c in config_changes(a, b, f"{where}[{i}]")
        ]
    return [] if old == new else [f"{where}: {old!r} -> {new!r}"]


def resume_refusal(
    run_dir: Path, old_config: dict[str, Any] | None, new_config: dict[str, Any], old_env: dict[str, Any]
) -> str | None:
    """Why ``run_dir`` cannot be resumed with this config and code (None: it can)."""
    reasons = []
    if old_config is not None:
        changed = config_changes(old_config, new_config)
        if changed:
            shown = "; ".join(changed[:5]) + (f"; and {len(changed) - 5} more" if len(changed) > 5 else "")
            reasons.append(f"the config changed since the run started ({shown})")
    before = old_env.get(CODE_DIGEST)
    if before is not None and before != code_digest():
        ver = (old_env.get("packages") or {}).get("closedloop")
        reasons.append(
            f"the closedloop code changed since the run started (source digest {str(before)[:12]} -> "
            f"{code_digest()[:12]}{f', started with version {ver}' if ver else ''})"
        )
    if not reasons:
        return None
    return (
        f"--resume {run_dir}: refused, " + " and ".join(reasons) + ". A resumed run must end identical "
        "to the uninterrupted run, which a mix of two configs or code versions cannot. Start a new run "
        "(finished stages whose fingerprint did not change are reused from the cache), or restore the "
        "config/code the run started with."
    )
