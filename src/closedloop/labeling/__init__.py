"""The flywheel's labeling half: a keyboard-first labeling page for a review queue (blind on demand),
an append-only ``labels.csv`` safe with several labelers, the measured human level
(``closedloop human-baseline``), agreement and consensus between annotators, export to the layout
``closedloop retrain --add-labeled`` reads, and a Label Studio round trip. See docs/labeling.md.

FastAPI and uvicorn are imported only when the page is created or served.
"""

from closedloop.labeling.agreement import AgreementReport, agreement_report, write_agreement
from closedloop.labeling.app import create_app
from closedloop.labeling.assign import assign_items
from closedloop.labeling.blind import make_blind_queue
from closedloop.labeling.consensus import Consensus, consensus, queue_consensus
from closedloop.labeling.export import ExportResult, export_labels
from closedloop.labeling.human import create_human_baseline, score_human_baseline
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
    "AgreementReport",
    "Consensus",
    "ExportResult",
    "FromLabelStudioResult",
    "LabelQueue",
    "LabelRow",
    "LabelStore",
    "LabelsFileError",
    "QueueItem",
    "ToLabelStudioResult",
    "agreement_report",
    "assign_items",
    "background",
    "consensus",
    "create_app",
    "create_human_baseline",
    "export_labels",
    "from_label_studio",
    "labeling_config",
    "load_queue",
    "make_blind_queue",
    "queue_consensus",
    "score_human_baseline",
    "serve",
    "to_label_studio",
    "write_agreement",
]
