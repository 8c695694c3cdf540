"""The export stage's artifact (the exported model folder and its typed record) lives below the stages,
in :mod:`closedloop.artifacts.export`, so everything that reads a run gets it back typed; it is named
here too, where the export steps have always found it."""

from __future__ import annotations

from closedloop.artifacts.export import FILES, METADATA_FILE, ExportBundle, ExportRecord

__all__ = ["FILES", "METADATA_FILE", "ExportBundle", "ExportRecord"]
