"""The adapted model as a folder the server loads: ``closedloop serve CHAMPION --shadow OUT`` (or
``--canary OUT``) serves it next to the champion, and ``closedloop compare-live`` judges it on
feedback with the same rule (:func:`closedloop.stats.promotion.decide_promotion`).

The folder holds ``model_fp32.onnx`` (the champion's network with the challenger written into its
head, preprocessing in the graph, exported like the export stage does) and ``predictor.json`` in
the export stage's format, with the challenger's threshold, so every served ``decision`` states the
adapted operating point. Its version (what the request log and ``compare-live`` call it) is the
folder's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from closedloop.core.io import to_json, write_text_atomic

METADATA_FILE = "predictor.json"  # the export stage's and the server's name (closedloop.serving.predictor)
ONNX_FILE = "model_fp32.onnx"


def write_servable(
    adapted: Any, out_dir: Path, *, positive_class: Any = None, adapted_from: str = ""
) -> Path:
    """Export ``adapted`` (a :class:`~closedloop.models.trained.TrainedModel`) to ``out_dir``."""
    import torch

    from closedloop.stages.export.onnx_export import export_onnx

    pre = adapted.preprocessing
    out_dir = Path(out_dir)
    example = torch.from_numpy(np.zeros((2, *pre.input_shape), np.float32))
    export_onnx(adapted.raw_module(), example, out_dir / ONNX_FILE)
    meta = {
        "format_version": 1,
        "problem_type": adapted.problem_type,
        "label_names": adapted.label_names,
        "positive_class": positive_class,
        "temperature": adapted.temperature,
        "threshold": adapted.threshold,
        "threads": 1,
        "shipped": "fp32",
        "models": {
            "fp32": {"file": ONNX_FILE, "temperature": adapted.temperature, "threshold": adapted.threshold}
        },
        "input": pre.input_contract(),
        "output": "logits; proba = "
        + ("softmax" if adapted.problem_type in ("multiclass", "ordinal") else "sigmoid")
        + "(logits / temperature)",
        "adapted_from": adapted_from,
        "rejected": {},
    }
    write_text_atomic(out_dir / METADATA_FILE, to_json(meta))
    return out_dir
