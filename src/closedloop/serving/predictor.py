"""A standalone predictor for an exported closedloop model: needs only numpy and onnxruntime.

This file imports nothing from closedloop (and never torch), so it can be copied next to the model
and used on its own::

    from predictor import Predictor          # or: from closedloop.serving import Predictor
    p = Predictor("exported/")                # reads predictor.json and the ONNX file it names
    p.predict_proba(images_uint8)             # (N, H, W, C) raw pixels 0..255, or (N, F) raw features
    p.predict_labels(images_uint8)            # class names, using the validation-chosen threshold

Tables may be given by name: a list of objects keyed by feature, a pandas DataFrame, or rows in column
order, with a categorical feature as its category name (or code) and None for a missing value. A name
the model never saw is a missing value and is listed in ``p.unseen_categories`` after the call::

    p.predict_proba([{"age": 61, "city": "Oslo"}, {"age": None, "city": "Atlantis"}])
    p.unseen_categories                       # [{"index": 1, "feature": "city", "value": "Atlantis"}]

Command line: ``python predictor.py MODEL_DIR INPUT.npy|INPUT.json [--variant int8]`` prints JSON
predictions (a .json input: a list of such rows).

The ONNX graph contains the input normalization; this module only checks the input contract
(shape, dtype), applies the calibrated temperature and the link function, and turns probabilities
into decisions with the threshold stored in the metadata.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

METADATA_FILE = "predictor.json"
FORMAT_VERSION = 1
PER_BATCH_OP = b"DynamicQuantizeLinear"
"""The op of a dynamically quantized int8 model: it scales activations by the range of the whole
input tensor, so with several rows in one call a row's answer depends on its batch-mates."""


def scales_per_batch(path: str | os.PathLike[str]) -> bool:
    """Whether the ONNX file holds :data:`PER_BATCH_OP` (the op type is stored as plain text in the
    protobuf; a false hit would only make the model slower, never change an answer)."""
    return PER_BATCH_OP in Path(path).read_bytes()


class OneRowAtATime:
    """An onnxruntime session that runs each row of a batch alone, so a model whose activations are
    quantized per call (:func:`scales_per_batch`) answers a row the same in any batch. The export
    stage wraps its int8 session the same way (``closedloop.stages.export.onnx_export``)."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def get_inputs(self) -> Any:
        return self.session.get_inputs()

    def get_outputs(self) -> Any:
        return self.session.get_outputs()

    def run(self, output_names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        (name, x), *others = feeds.items()
        if others:
            raise ValueError("one-row-at-a-time runs need a model with exactly one input")
        if len(x) <= 1:
            return self.session.run(output_names, feeds)
        rows = [self.session.run(output_names, {name: x[i : i + 1]}) for i in range(len(x))]
        return [np.concatenate([r[k] for r in rows]) for k in range(len(rows[0]))]


class PredictorError(ValueError):
    """The model files or the input do not follow the predictor's contract."""


def feature_mismatch(row: dict[str, Any], names: list[str]) -> str | None:
    """What a keyed row lacks or has too many of, naming only what is wrong; None when it matches.

    >>> feature_mismatch({"age": 3, "zip": 1}, ["age", "city"])
    "missing feature(s) ['city']; unknown feature(s) ['zip']"
    """
    missing, unknown = [n for n in names if n not in row], [k for k in row if k not in names]
    parts = [
        f"{what} feature(s) {keys}" for what, keys in (("missing", missing), ("unknown", unknown)) if keys
    ]
    return "; ".join(parts) or None


def _logits_to_proba(logits: np.ndarray, problem_type: str, temperature: float) -> np.ndarray:
    # Same convention as closedloop.models.trained.logits_to_proba (kept in sync by a test).
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    if problem_type == "regression":
        return np.asarray(logits, dtype=np.float64).reshape(len(z), -1)
    if problem_type == "binary":
        p = 1.0 / (1.0 + np.exp(-z.reshape(-1)))
        return np.stack([1 - p, p], axis=1)
    if problem_type == "multilabel":
        return 1.0 / (1.0 + np.exp(-z))
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def load_metadata(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``predictor.json`` in ``directory``."""
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise PredictorError(
            f"{path}: predictor metadata not found (expected the export stage's {METADATA_FILE})"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PredictorError(f"{path}: not valid JSON ({exc})") from None
    missing = [k for k in ("problem_type", "input", "models", "temperature") if k not in meta]
    if missing:
        raise PredictorError(f"{path}: missing key(s) {missing}")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise PredictorError(
            f"{path}: format_version {meta['format_version']} is newer than this predictor ({FORMAT_VERSION})"
        )
    return meta


class Predictor:
    """Run an exported model on raw inputs and return calibrated probabilities and decisions.

    Args:
        directory: folder holding ``predictor.json`` and the ONNX files it names.
        variant: which model file to run (``fp32``, ``int8``, ``student``...); default: the shipped one.
        threads: intra-op threads for onnxruntime (default: the value recorded at export).
    """

    def __init__(
        self, directory: str | os.PathLike[str], variant: str | None = None, threads: int | None = None
    ) -> None:
        import onnxruntime as ort

        self.directory = Path(directory)
        self.meta = load_metadata(self.directory)
        models = self.meta["models"]
        self.variant = variant or self.meta.get("shipped") or next(iter(models))
        if self.variant not in models:
            raise PredictorError(
                f"variant {self.variant!r} not in {self.directory / METADATA_FILE}; have {sorted(models)}"
            )
        entry = models[self.variant]
        entry = entry if isinstance(entry, dict) else {"file": entry}
        path = self.directory / entry["file"]
        if not path.is_file():
            raise PredictorError(f"{path}: model file not found")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or self.meta.get("threads") or 1)
        opts.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise PredictorError(
                f"{path}: cannot load the ONNX model ({type(exc).__name__}: {exc})"
            ) from None
        self.one_row_at_a_time = scales_per_batch(path)
        """A dynamically quantized model runs row by row: a row's answer never depends on the other
        rows of the call (or, served with dynamic batching, on other clients' rows)."""
        self.session: Any = OneRowAtATime(session) if self.one_row_at_a_time else session
        self.input_name = self.session.get_inputs()[0].name
        inp = self.meta["input"]
        self.input_shape = tuple(int(d) for d in inp["shape"])
        self.input_kind = inp.get("kind", "images")
        self.problem_type = self.meta["problem_type"]
        # A variant (e.g. a distilled student) may carry its own calibration.
        self.temperature = float(entry.get("temperature", self.meta.get("temperature", 1.0)))
        self.threshold = entry.get("threshold", self.meta.get("threshold"))
        self.label_names = list(self.meta.get("label_names") or [])
        self.feature_names = list(inp.get("feature_names") or [])
        self.categories = {
            f: {str(n): i for i, n in enumerate(v)} for f, v in (inp.get("categories") or {}).items()
        }
        self.category_values: dict[str, dict[float, int]] = {}
        """Categorical features whose category names are all numbers: value -> code. In rows keyed by
        feature name (and a DataFrame) a number there is the category, not its code (stage 3 is not
        code 3, stage 4)."""
        for f, by_name in self.categories.items():
            with contextlib.suppress(ValueError):
                self.category_values[f] = {float(n): code for n, code in by_name.items()}
        self.unseen_categories: list[dict[str, Any]] = []
        """Category names the last call's rows held that the model never saw (answered as missing)."""

    # -- table rows by name -----------------------------------------------------------------------
    def encode_rows(self, x: Any) -> Any:
        """Table rows by name (objects keyed by feature, a DataFrame, or rows with category names) as a
        float32 array in column order; numeric arrays are returned unchanged. Records unseen names."""
        self.unseen_categories = []
        names = self.feature_names
        if self.input_kind == "images" or not names:
            return x
        if hasattr(x, "columns") and hasattr(x, "to_dict"):  # a pandas DataFrame, without importing pandas
            x = x.to_dict("records")
        keyed = isinstance(x, list | tuple) and bool(x) and all(isinstance(r, dict) for r in x)
        if keyed:
            rows = []
            for i, r in enumerate(x):
                if wrong := feature_mismatch(r, names):
                    raise PredictorError(f"row {i}: {wrong}; expected {names}")
                rows.append([r[n] for n in names])
        else:
            arr = np.asarray(x, dtype=object) if isinstance(x, list | tuple) else x
            if not isinstance(arr, np.ndarray) or arr.dtype != object or arr.ndim != 2:
                return x
            if arr.shape[1] != len(names):
                raise PredictorError(f"rows have {arr.shape[1]} values; expected {len(names)}: {names}")
            rows = arr.tolist()
        out = np.empty((len(rows), len(names)), np.float32)
        for i, row in enumerate(rows):
            out[i] = [self._value(i, f, v, keyed) for f, v in zip(names, row, strict=True)]
        return out

    def _value(self, i: int, feature: str, v: Any, keyed: bool = False) -> float:
        if v is None:
            return float("nan")
        if isinstance(v, bool | np.bool_) and feature in self.categories:
            v = str(bool(v))  # a bool column's categories are named "False"/"True" (the tabular source)
        by_value = self.category_values.get(feature) if keyed else None
        number = isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
        if by_value is not None and number and v == v:  # a numeric category by its value (NaN: missing)
            code = by_value.get(float(v))
            if code is None:
                self.unseen_categories.append({"index": i, "feature": feature, "value": v})
                return float("nan")
            return float(code)
        if isinstance(v, str) and feature in self.categories:
            code = self.categories[feature].get(v)
            if code is None and by_value is not None:  # "3.0" names the category 3
                try:
                    code = by_value.get(float(v))
                except ValueError:
                    code = None
            if code is None:
                self.unseen_categories.append({"index": i, "feature": feature, "value": v})
                return float("nan")
            return float(code)
        if isinstance(v, str | bool):
            raise PredictorError(
                f"row {i}: feature {feature!r} is {v!r}, not a number"
                + (
                    " (a categorical feature takes its category name or code)"
                    if feature in self.categories
                    else ""
                )
            )
        try:
            return float(v)
        except (TypeError, ValueError):
            raise PredictorError(f"row {i}: feature {feature!r} is {v!r}, not a number") from None

    # -- input contract ---------------------------------------------------------------------------
    def check_input(self, x: Any) -> np.ndarray:
        """Return ``x`` as a float32 array ``(N, *input_shape)`` or raise :class:`PredictorError`."""
        arr = np.asarray(self.encode_rows(x))
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise PredictorError(
                f"input dtype {arr.dtype} is not numeric; expected {self.meta['input'].get('accepts', 'uint8 or float32')}"
            )
        if np.issubdtype(arr.dtype, np.complexfloating):
            raise PredictorError(f"input dtype {arr.dtype} is complex; expected real pixel/feature values")
        want = self.input_shape
        if arr.shape == want:
            raise PredictorError(
                f"input shape {arr.shape} is one sample without a batch axis; expected (N, {', '.join(map(str, want))}) "
                "- use x[None]"
            )
        if arr.ndim != len(want) + 1 or tuple(arr.shape[1:]) != want:
            raise PredictorError(
                f"input shape {tuple(arr.shape)} does not match the model: expected (N, {', '.join(map(str, want))})"
                + (" with channels last (N, H, W, C)" if self.input_kind == "images" else "")
            )
        if self.input_kind == "images" and np.issubdtype(arr.dtype, np.floating):
            finite = arr[np.isfinite(arr)]
            if finite.size != arr.size:
                raise PredictorError("image input contains NaN or infinite values")
            if finite.size and (finite.min() < 0 or finite.max() > 255):
                raise PredictorError(
                    f"image values range {finite.min():.3g}..{finite.max():.3g}; expected raw pixels in 0..255 "
                    "(do not normalize: the model does)"
                )
        return np.ascontiguousarray(arr, dtype=np.float32)

    # -- inference --------------------------------------------------------------------------------
    def predict_logits(self, x: Any, batch_size: int = 256) -> np.ndarray:
        return self._run(self.check_input(x), batch_size)

    def proba_of_checked(self, arr: np.ndarray) -> np.ndarray:
        """:meth:`predict_proba` for an input already checked against the contract (a server that
        validated the request itself skips the second check); ``arr`` is converted to float32."""
        logits = self._run(np.ascontiguousarray(arr, dtype=np.float32), 256)
        return _logits_to_proba(logits, self.problem_type, self.temperature)

    def _run(self, arr: np.ndarray, batch_size: int) -> np.ndarray:
        outs = [
            self.session.run(None, {self.input_name: arr[i : i + batch_size]})[0]
            for i in range(0, len(arr), batch_size)
        ]
        if not outs:
            return np.zeros((0, 1), np.float32)
        return np.concatenate(outs).reshape(len(arr), -1)

    def predict_proba(self, x: Any) -> np.ndarray:
        """Calibrated probabilities (binary: ``(N, 2)``; multiclass: ``(N, K)``; multilabel: ``(N, L)``)."""
        return _logits_to_proba(self.predict_logits(x), self.problem_type, self.temperature)

    def predict(self, x: Any) -> np.ndarray:
        """Decisions: class indices (binary uses the validation-chosen threshold), 0/1 per label, or values."""
        proba = self.predict_proba(x)
        if self.problem_type == "regression":
            return proba.reshape(-1)
        if self.problem_type == "binary":
            thr = 0.5 if self.threshold is None else float(self.threshold)
            return (proba[:, 1] >= thr).astype(np.int64)
        if self.problem_type == "multilabel":
            thr = 0.5 if self.threshold is None else float(self.threshold)
            return (proba >= thr).astype(np.int64)
        return proba.argmax(axis=1).astype(np.int64)

    def predict_labels(self, x: Any) -> list[Any]:
        """Class names for each sample (lists of names for multi-label)."""
        pred = self.predict(x)
        names = self.label_names
        if self.problem_type == "regression" or not names:
            return pred.tolist()
        if self.problem_type == "multilabel":
            return [[names[j] for j in np.flatnonzero(row)] for row in pred]
        return [names[int(i)] for i in pred]


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(
        description="Predict with an exported closedloop model (numpy + onnxruntime)."
    )
    ap.add_argument("model_dir")
    ap.add_argument(
        "input_npy", help="a .npy file with raw inputs (N, H, W, C) or (N, F), or a .json list of table rows"
    )
    ap.add_argument("--variant", default=None)
    args = ap.parse_args(argv)
    try:
        p = Predictor(args.model_dir, variant=args.variant)
        if str(args.input_npy).endswith(".json"):
            x = json.loads(Path(args.input_npy).read_text())
        else:
            x = np.load(args.input_npy, allow_pickle=False)
        out = {"variant": p.variant, "proba": p.predict_proba(x).tolist(), "labels": p.predict_labels(x)}
        if p.unseen_categories:
            out["unseen_categories"] = p.unseen_categories
    except (PredictorError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
