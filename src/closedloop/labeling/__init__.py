"""The flywheel's labeling half: a keyboard-first labeling page for a review queue, an append-only
``labels.csv`` safe with several labelers, export to the layout ``closedloop retrain --add-labeled``
reads, and a Label Studio round trip. See docs/labeling.md.

FastAPI and uvicorn are imported only when the page is created or served.
"""

from closedloop.labeling.app import create_app
from closedloop.labeling.export import ExportResult, export_labels
from closedloop.labeling.labelstudio import (
    FromLabelStudioResult,
    ToLabelStudioResult,
    from_label_studio,
    labeling_config,
    to_label_studio,
)
from closedloop.labeling.queue import LabelQueue, QueueItem, load_queue
from closedloop.labeling.server import background, serve
from closedloop.labeling.store import LabelRow, LabelsFileError, LabelStore

__all__ = [
    "ExportResult",
    "FromLabelStudioResult",
    "LabelQueue",
    "LabelRow",
    "LabelStore",
    "LabelsFileError",
    "QueueItem",
    "ToLabelStudioResult",
    "background",
    "create_app",
    "export_labels",
    "from_label_studio",
    "labeling_config",
    "load_queue",
    "serve",
    "to_label_studio",
]
