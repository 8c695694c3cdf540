"""Do ONNX Runtime outputs match PyTorch? ``|ort - torch| <= atol + rtol * |torch|`` elementwise."""

from __future__ import annotations

import numpy as np

from closedloop.artifacts.export import ParityResult
from closedloop.stages.export.errors import ParityError


def compare_outputs(
    ref: np.ndarray, got: np.ndarray, rtol: float = 1e-3, atol: float = 1e-5, top: int = 5
) -> ParityResult:
    ref = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    got = np.asarray(got, dtype=np.float64).reshape(len(got), -1)
    if ref.shape != got.shape:
        raise ParityError(f"output shapes differ: torch {ref.shape} vs onnxruntime {got.shape}")
    diff = np.abs(got - ref)
    bad = diff > atol + rtol * np.abs(ref)
    rel = diff / np.maximum(np.abs(ref), 1e-12)
    order = np.argsort(diff, axis=None)[::-1][:top]
    worst = []
    for flat in order:
        i, j = np.unravel_index(flat, diff.shape)
        worst.append(
            {
                "sample": int(i),
                "output": int(j),
                "torch": float(ref[i, j]),
                "onnx": float(got[i, j]),
                "abs_diff": float(diff[i, j]),
            }
        )
    return ParityResult(
        n=len(ref),
        max_abs_diff=float(diff.max(initial=0.0)),
        max_rel_diff=float(rel.max(initial=0.0)),
        n_violations=int(bad.sum()),
        passed=not bool(bad.any()),
        worst=worst,
    )


def require_parity(result: ParityResult, what: str, rtol: float, atol: float) -> None:
    """Raise :class:`ParityError` listing the largest differences when ``result`` failed."""
    if result.passed:
        return
    rows = "; ".join(
        f"sample {w['sample']} out {w['output']}: torch {w['torch']:.6g} vs onnx {w['onnx']:.6g} (|d|={w['abs_diff']:.3g})"
        for w in result.worst
    )
    raise ParityError(
        f"{what}: onnxruntime differs from PyTorch on {result.n_violations} value(s) of {result.n} samples "
        f"beyond rtol={rtol:g}/atol={atol:g} (max |diff| {result.max_abs_diff:.3g}). Largest: {rows}"
    )
