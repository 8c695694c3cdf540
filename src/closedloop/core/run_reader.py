"""Reading a finished run directory: the one place that knows where an artifact of a given type is.

``manifest.json`` lists each stage's artifacts with their class path and layout version; everything that
reads a run back (the report, compare, the tracker, serving, labeling) asks :class:`RunDir` instead of
walking the manifest itself.

Example:
    >>> import tempfile, pathlib, json
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "manifest.json").write_text(json.dumps({"stages": [{"name": "task", "status": "ok",
    ...     "artifacts": {"task": {"path": "stages/02_task/artifacts/task", "type": "m:TaskSpec"}}}]}))
    >>> [str(p.relative_to(d)) for p in RunDir(d).artifact_dirs("TaskSpec")]
    ['stages/02_task/artifacts/task']
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from closedloop.core.errors import RunDirError
from closedloop.core.io import read_json
from closedloop.core.rundir import MANIFEST

A = TypeVar("A")


def _type_name(kind: type | str) -> str:
    return kind if isinstance(kind, str) else kind.__qualname__


class ManifestStage(BaseModel):
    """One stage's entry in ``manifest.json`` (``core.records.StageRecord`` writes it)."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    kind: str = ""
    status: str = "pending"
    """``pending``, ``ok``, ``failed`` or ``skipped``."""
    error: str | None = None
    dir: str = ""
    artifacts: dict[str, dict[str, Any]] = Field(default_factory=dict)


class RunManifest(BaseModel):
    """``manifest.json``: the run's name and status and each stage's entry."""

    model_config = ConfigDict(extra="allow")

    run_id: str = ""
    name: str = ""
    status: str = "?"
    stages: list[ManifestStage] = Field(default_factory=list)


class RunDir:
    """A run directory opened for reading; nothing is read until asked."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """``manifest.json`` (empty when the run has none: the lookups then find nothing)."""
        f = self.path / MANIFEST
        return read_json(f) if f.is_file() else {}

    @cached_property
    def manifest_record(self) -> RunManifest:
        """``manifest.json`` as its typed record (empty when the run has none)."""
        return RunManifest.model_validate(self.manifest)

    def has_manifest(self) -> bool:
        return (self.path / MANIFEST).is_file()

    def _records(self, kind: type | str) -> list[tuple[str, dict[str, Any]]]:
        suffix = ":" + _type_name(kind)
        return [
            (str(st.get("name", "?")), info)
            for st in self.manifest.get("stages", [])
            if st.get("status") == "ok"
            for info in (st.get("artifacts") or {}).values()
            if str(info.get("type", "")).endswith(suffix)
        ]

    def artifact_dirs(self, kind: type | str) -> list[Path]:
        """Folders of every finished artifact of this type (a class, or its name), in stage order."""
        return [self.path / info["path"] for _, info in self._records(kind)]

    def artifact_dir(self, kind: type | str, *, first: bool = False) -> Path | None:
        """The last finished artifact of this type (the one a later stage would have used), or None;
        ``first=True``: the earliest (e.g. the loaded data, not the audit's cleaned copy)."""
        dirs = self.artifact_dirs(kind)
        return (dirs[0] if first else dirs[-1]) if dirs else None

    def require_dir(self, kind: type | str) -> Path:
        """Like :meth:`artifact_dir`, but a missing one is a :class:`RunDirError` saying what to do."""
        if not self.has_manifest():
            raise RunDirError(
                f"{self.path}: no {MANIFEST}; expected a closedloop run directory (runs/<name>/<run>)"
            )
        found = self.artifact_dir(kind)
        if found is None:
            raise RunDirError(
                f"{self.path}: the run has no finished {_type_name(kind)} artifact; run the stage that "
                f"makes it: closedloop run {self.path / 'config.yaml'} --resume {self.path}"
            )
        return found

    def artifacts(self, kind: type[A]) -> list[A]:
        """Every finished artifact of this type, loaded, in stage order (each read as :meth:`artifact`)."""
        return [self._load(kind, stage, info) for stage, info in self._records(kind)]

    def artifact(self, kind: type[A]) -> A:
        """The last finished artifact of this type, loaded as that type.

        An artifact written in an older layout (``layout_version`` in the manifest, or none recorded)
        that no longer loads is a :class:`RunDirError` naming the folder, both versions and what to do.
        """
        self.require_dir(kind)
        stage, info = self._records(kind)[-1]
        return self._load(kind, stage, info)

    def _load(self, kind: type[A], stage: str, info: dict[str, Any]) -> A:
        directory = self.path / info["path"]
        written = str(info.get("layout", "1"))
        current = str(getattr(kind, "layout_version", "1"))
        try:
            return kind.load(directory)  # type: ignore[attr-defined,no-any-return]
        except (ValidationError, KeyError, TypeError, ValueError, FileNotFoundError) as exc:
            if written != current:
                why = f"it was written in layout version {written}; this closedloop reads version {current}"
            else:
                why = f"it does not match layout version {current} ({type(exc).__name__}: {str(exc)[:200]})"
            name = str(getattr(kind, "record_file", ""))  # the file that holds the record, if one does
            where = directory / name if name else directory
            raise RunDirError(
                f"{where}: cannot read this {_type_name(kind)} artifact (stage {stage!r}): {why}. "
                f"Re-run that stage with this version: closedloop run {self.path / 'config.yaml'} "
                f"--out NEW_DIR (or use the closedloop version that wrote it)"
            ) from None
