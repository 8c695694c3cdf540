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


def _convert(model: Any, n_features: int, input_name: str) -> Any:
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    booster = model.booster_ if hasattr(model, "booster_") else model
    return onnxmltools.convert_lightgbm(
        float32_thresholds(booster),
        initial_types=[(input_name, FloatTensorType([None, int(n_features)]))],
        target_opset=ONNX_OPSET,
        zipmap=False,
    )


def lightgbm_to_onnx(model: Any, n_features: int) -> bytes:
    """A LightGBM classifier (``LGBMClassifier`` or ``Booster``) -> ONNX bytes: input ``input``
    float32 (N, n_features) with NaN for missing; outputs ``label`` and ``probabilities`` (N, K)
    (``zipmap=False``: a plain tensor, not a list of dicts)."""
    return _convert(model, n_features, "input").SerializeToString()


def logits_onnx(
    booster: Any,
    n_features: int,
    head_weight: np.ndarray,
    head_bias: np.ndarray,
    *,
    input_name: str = "x",
    output_name: str = "logits",
    opset: int = 17,
) -> bytes:
    """A tree family's network as ONNX (:class:`closedloop.models.families.lgbm.TreeEnsemble`):
    ``logits = raw @ head_weight.T + head_bias``, where ``raw`` is the booster's raw score (binary and
    regression: (N, 1); multi-class: (N, K)), the same as the module computes. The converter's tree
    node gives probabilities; its ``post_transform`` is set to NONE, which leaves the raw scores
    (binary: [-raw, raw], of which the second column is kept). The ``ai.onnx`` domain is declared at
    ``opset`` (the graph's Slice/MatMul/Add mean the same from 13 on); the trees stay in ``ai.onnx.ml``.
    """
    import onnx
    from onnx import helper, numpy_helper

    m = _convert(booster, n_features, input_name)
    g = m.graph
    tree = next(n for n in g.node if n.op_type.startswith("TreeEnsemble"))
    for a in tree.attribute:
        if a.name == "post_transform":
            a.s = b"NONE"
    raw = tree.output[1] if tree.op_type == "TreeEnsembleClassifier" else tree.output[0]
    w = np.asarray(head_weight, np.float32)
    nodes = [tree]
    inits = [
        numpy_helper.from_array(w.T.copy(), "head_weight_t"),
        numpy_helper.from_array(np.asarray(head_bias, np.float32).reshape(-1), "head_bias"),
    ]
    binary = tree.op_type == "TreeEnsembleClassifier" and w.shape[1] == 1
    if binary:  # [-raw, raw] -> raw
        inits += [
            numpy_helper.from_array(np.array(v, np.int64), n)
            for v, n in (([1], "s0"), ([2], "s1"), ([1], "ax"))
        ]
        nodes.append(helper.make_node("Slice", [raw, "s0", "s1", "ax"], ["raw_score"]))
        raw = "raw_score"
    nodes += [
        helper.make_node("MatMul", [raw, "head_weight_t"], ["head_mm"]),
        helper.make_node("Add", ["head_mm", "head_bias"], [output_name]),
    ]
    out = helper.make_tensor_value_info(output_name, onnx.TensorProto.FLOAT, [None, int(w.shape[0])])
    graph = helper.make_graph(nodes, "closedloop_trees", list(g.input), [out], initializer=inits)
    ml = next((o.version for o in m.opset_import if o.domain == "ai.onnx.ml"), 1)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", int(opset)), helper.make_opsetid("ai.onnx.ml", ml)]
    )
    model.ir_version = min(model.ir_version, 9)
    return model.SerializeToString()
