"""Python's answer for a web folder: the same ``spec.json`` and ``model.onnx`` the page reads, run by
onnxruntime (the reference the page is tested against, and what a script can use offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from closedloop.artifacts.webpage import WebSpec


class SpecPredictor:
    """Calibrated probabilities and decisions from a web folder, one thread like the page."""

    def __init__(self, folder: str | Path) -> None:
        import onnxruntime as ort

        self.folder = Path(folder)
        self.spec = WebSpec.load(self.folder)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(self.folder / self.spec.model.file), opts, providers=["CPUExecutionProvider"]
        )

    def logits(self, x: np.ndarray) -> np.ndarray:
        """One input at a time, as the page runs them: a dynamically quantized int8 model (table
        models) quantizes its activations with the range of the whole batch, so its answer for a row
        depends on the other rows sent with it."""
        arr = np.ascontiguousarray(x, dtype=np.float32)
        outs = [
            np.asarray(self.session.run(None, {self.spec.input.name: arr[i : i + 1]})[0])
            for i in range(len(arr))
        ]
        return np.concatenate(outs).reshape(len(arr), -1) if outs else np.zeros((0, 1), np.float32)

    def proba(self, x: np.ndarray) -> np.ndarray:
        from closedloop.serving.predictor import _logits_to_proba

        return _logits_to_proba(self.logits(x), self.spec.problem_type, self.spec.temperature)

    def labels(self, proba: np.ndarray) -> list[Any]:
        """The decision rule of ``closedloop serve`` (serving.model.decisions) at the spec's threshold."""
        s = self.spec
        if s.problem_type == "regression":
            return proba.reshape(-1).tolist()
        thr = 0.5 if s.threshold is None else s.threshold
        names = s.class_names
        if s.problem_type == "multilabel":
            return [[names[j] for j in np.flatnonzero(row >= thr)] for row in proba]
        idx = (proba[:, 1] >= thr).astype(int) if s.problem_type == "binary" else proba.argmax(axis=1)
        return [names[int(i)] if names else int(i) for i in idx]
