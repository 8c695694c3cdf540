"""The standard artifacts: the typed records one stage writes and everything else reads back.

The idea is TFX's ``standard_artifacts``: the record types live below the stages, so the report,
compare, the tracker, serving and the monitor read a finished run as these types
(``RunDir(path).artifact(TaskSpec)``, :mod:`closedloop.core.run_reader`) instead of JSON by key, and the
statistics that fill them (``stats.gate``, ``stats.selection``) never import a stage. Only pydantic
and core are imported here, so a torch-free server can read them.

* :mod:`.task` - :class:`TaskSpec` and its sections (``task`` stage);
* :mod:`.figures` - a figure with its interval, per-day business framing;
* :mod:`.gate` - the test gate's decision; :mod:`.selection` - the selection bias on validation;
* :mod:`.training` - each train phase's outcome, the family choice, tree importance, the label review;
* :mod:`.evaluation` - :class:`EvaluationReport` (``train`` stage);
* :mod:`.export` - :class:`ExportBundle` and its :class:`ExportRecord` (``measurements.json``);
* :mod:`.webpage` - :class:`WebSpec`, the export-web folder's input contract (``spec.json``).
"""

from __future__ import annotations
