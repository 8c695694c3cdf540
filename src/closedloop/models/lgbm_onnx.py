"""LightGBM -> ONNX with probability parity (a building block of the tree family, issue #25).

LightGBM stores split thresholds as doubles; ONNX's TreeEnsemble stores them as float32, rounded to
nearest. A float32 input lying between the double threshold and its float32 rounding then takes the
other branch: on breast_cancer that moved a test probability by 1.6e-5. For float32 inputs
``x <= t`` holds exactly when ``x <= floor32(t)`` (the largest float32 not above ``t``), so the
thresholds are replaced by that value *in the booster* before conversion: the native model's
predictions on float32 inputs do not change, and the ONNX model then takes the same branches
(parity 8.7e-8 on the same rows; ``benchmarks/bench_trees_choice.py``).

Needs the optional extra ``closedloop[trees]`` (lightgbm, onnxmltools); imported lazily.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

ONNX_OPSET = 15
"""onnxmltools 1.16's LightGBM converter: an int (a per-domain dict fails), at most 15."""


def floor32(values: np.ndarray) -> np.ndarray:
    """The largest float32 not above each double (as doubles, exactly representable)."""
    v = np.asarray(values, np.float64)
    f = v.astype(np.float32)
    f = np.where(f.astype(np.float64) > v, np.nextafter(f, np.float32(-np.inf)), f)
    return f.astype(np.float64)


def float32_thresholds(booster: Any) -> Any:
    """A copy of a LightGBM ``Booster`` whose numeric split thresholds are :func:`floor32` of the
    originals (categorical splits store small integer indices there, which floor32 keeps)."""
    import lightgbm as lgb

    text = booster.model_to_string()

    def fix(m: re.Match[str]) -> str:
        vals = floor32(np.array([float(v) for v in m.group(1).split()]))
        return "threshold=" + " ".join(repr(float(v)) for v in vals)

    text = re.sub(r"(?m)^threshold=([^\n]*)", fix, text)  # not cat_threshold= (bitsets)
    text = re.sub(r"tree_sizes=[^\n]*\n", "", text)  # byte offsets of the old text; optional when absent
    return lgb.Booster(model_str=text)


def lightgbm_to_onnx(model: Any, n_features: int) -> bytes:
    """A LightGBM classifier (``LGBMClassifier`` or ``Booster``) -> ONNX bytes: input ``input``
    float32 (N, n_features) with NaN for missing; outputs ``label`` and ``probabilities`` (N, K)
    (``zipmap=False``: a plain tensor, not a list of dicts)."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    booster = model.booster_ if hasattr(model, "booster_") else model
    onx = onnxmltools.convert_lightgbm(
        float32_thresholds(booster),
        initial_types=[("input", FloatTensorType([None, int(n_features)]))],
        target_opset=ONNX_OPSET,
        zipmap=False,
    )
    return onx.SerializeToString()
