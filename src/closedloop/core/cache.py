"""Content-addressed reuse of finished stages.

A stage's fingerprint is its class path, version and config, the run seed and the content hashes of
its input artifacts. A finished stage with the same fingerprint is reused: from this run directory
(``--resume``) or copied from an earlier run of the same pipeline name (the cross-run cache).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from closedloop.core.io import canonical_json, read_json, sha256_text
from closedloop.core.records import StageRecord
from closedloop.core.rundir import MANIFEST
from closedloop.core.stage import Stage

log = logging.getLogger("closedloop")


def class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def stage_spec_fingerprint(stage: Stage) -> dict[str, Any]:
    return {
        "class": class_path(type(stage)),
        "version": type(stage).version,
        "config": stage.config.model_dump(mode="json"),
    } | ({"inputs_from": dict(sorted(stage.inputs_from.items()))} if stage.inputs_from else {})


def stage_fingerprint(stage: Stage, seed: int, input_hashes: dict[str, str]) -> str:
    """The cache key of one stage run: what it is, how it is configured, and what it reads."""
    return sha256_text(
        canonical_json(
            {
                **stage_spec_fingerprint(stage),
                "seed": seed,
                "inputs": dict(sorted(input_hashes.items())),
                "extra": stage.cache_key(),
            }
        )
    )


def reuse_stage(
    rec: StageRecord, final_dir: Path, prev: dict[str, Any] | None, *, cache: bool, pipeline_runs: Path
) -> bool:
    """Reuse a finished stage: from this run (resume) or from an earlier run with the same fingerprint."""
    if (
        final_dir.is_dir()
        and prev
        and prev.get("status") == "ok"
        and prev.get("fingerprint") == rec.fingerprint
    ):
        rec.cached, rec.seconds, rec.artifacts = True, prev.get("seconds", 0.0), prev.get("artifacts", {})
        rec.timings = prev.get("timings", {})
        return True
    if final_dir.exists():
        shutil.rmtree(final_dir)  # stale result of a different fingerprint: never mix it with the new one
    if not cache:
        return False
    source = find_cached(pipeline_runs, rec.name, rec.fingerprint, exclude=final_dir.parent.parent)
    if source is None:
        return False
    src_dir, src_rec = source
    tmp = final_dir.with_name(final_dir.name + ".copy")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src_dir, tmp)
    tmp.rename(final_dir)
    rec.cached, rec.seconds, rec.artifacts = (
        True,
        src_rec.get("seconds", 0.0),
        src_rec.get("artifacts", {}),
    )
    rec.timings = src_rec.get("timings", {})
    log.info("stage %s: cache hit (fingerprint %s)", rec.name, rec.fingerprint[:8])
    return True


def find_cached(
    pipeline_runs: Path, stage_name: str, fingerprint: str, exclude: Path
) -> tuple[Path, dict] | None:
    """The newest finished stage with this name and fingerprint in another run of the pipeline."""
    if not pipeline_runs.is_dir():
        return None
    for manifest in sorted(pipeline_runs.glob(f"*/{MANIFEST}"), reverse=True):
        if manifest.parent.resolve() == Path(exclude).resolve():
            continue
        try:
            data = read_json(manifest)
        except Exception:
            continue
        for r in data.get("stages", []):
            if (
                r.get("name") == stage_name
                and r.get("fingerprint") == fingerprint
                and r.get("status") == "ok"
            ):
                d = manifest.parent / r["dir"]
                if d.is_dir():
                    return d, r
    return None
