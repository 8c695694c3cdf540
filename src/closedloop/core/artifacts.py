"""Typed artifacts: the values stages pass to each other, each knowing its on-disk layout.

An artifact is saved by the pipeline into ``stages/NN_<stage>/artifacts/<name>/`` and loaded back by
the type declared on the consuming stage's ``Inputs``. Two bases cover most needs:

* :class:`JsonArtifact` - a pydantic model saved as ``artifact.json`` (reports, specs).
* :class:`Artifact` - anything else; implement :meth:`Artifact.save` and :meth:`Artifact.load`.

Example:
    >>> from closedloop.core.artifacts import JsonArtifact
    >>> class Note(JsonArtifact):
    ...     text: str
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> Note(text="hi").save(d)
    >>> Note.load(d).text
    'hi'
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict

from closedloop.core.io import read_json, to_json, write_text_atomic


class Artifact(ABC):
    """A value that can be written to and read from a directory."""

    #: Bump when the on-disk layout changes.
    layout_version: ClassVar[str] = "1"
    #: The file that holds the record (named in the error when an older layout cannot be read).
    record_file: ClassVar[str] = ""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write this artifact into ``directory`` (which exists and is empty)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path) -> Self:
        """Read an artifact written by :meth:`save`."""

    def files(self, directory: Path) -> dict[str, str]:
        """Files a person may want to open (name -> relative path); shown in ``summary.json``."""
        return {}


class JsonArtifact(BaseModel, Artifact):
    """An artifact that is a pydantic model, stored as ``artifact.json``.

    Layout: ``<dir>/artifact.json``.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    record_file: ClassVar[str] = "artifact.json"

    def save(self, directory: Path) -> None:
        write_text_atomic(Path(directory) / "artifact.json", to_json(self.model_dump(mode="json")))

    @classmethod
    def load(cls, directory: Path) -> Self:
        return cls.model_validate(read_json(Path(directory) / "artifact.json"))

    def files(self, directory: Path) -> dict[str, str]:
        return {}


def artifact_type_name(tp: Any) -> str:
    return getattr(tp, "__qualname__", None) or repr(tp)
