"""A served model: a run directory's exported ONNX model with its name, version and input schema.

Loading never imports torch: the run directory is read as files (manifest.json, the export stage's
``predictor.json``) and inference goes through :class:`closedloop.serving.predictor.Predictor`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.core.errors import ClosedLoopError
from closedloop.core.run_reader import RunDir
from closedloop.serving.predictor import METADATA_FILE, Predictor, PredictorError


class ServeError(ClosedLoopError):
    """The service cannot start with what it was given (run directory, model, options)."""


def find_export_dir(run_dir: Path) -> Path:
    """The export stage's folder in ``run_dir`` (or ``run_dir`` itself when it holds predictor.json,
    as an ``adapt`` output folder does); the run directory's own reader finds it."""
    if (run_dir / METADATA_FILE).is_file():
        return run_dir
    found = RunDir(run_dir).artifact_dir("ExportBundle")
    if found is None or not (found / METADATA_FILE).is_file():
        hint = (
            "it has no stages/ folder: is it a closedloop run directory?"
            if not (run_dir / "stages").is_dir()
            else "run the export stage first: closedloop run CONFIG --resume RUN_DIR (or --only export)"
        )
        raise ServeError(f"{run_dir}: no exported model (an export stage's {METADATA_FILE}); {hint}")
    return found


def _pipeline_name(run_dir: Path) -> str:
    for name in ("manifest.json", "summary.json"):
        path = run_dir / name
        if path.is_file():
            try:
                value = json.loads(path.read_text(encoding="utf-8")).get("name")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                continue
            if isinstance(value, str) and value:
                return value
    return run_dir.name


@dataclass(frozen=True)
class ServedModel:
    """One loaded model and what the service says about it (OIP name/version, log fields)."""

    predictor: Predictor
    name: str
    version: str
    run_dir: Path
    export_dir: Path

    @classmethod
    def load(cls, run_dir: str | Path, variant: str | None = None, name: str | None = None) -> ServedModel:
        """Load the exported model of ``run_dir``; raises :class:`ServeError` with a one-line reason."""
        run_dir = Path(run_dir).expanduser().resolve()
        if not run_dir.is_dir():
            raise ServeError(f"{run_dir}: no such run directory")
        export_dir = find_export_dir(run_dir)
        try:
            predictor = Predictor(export_dir, variant=variant)
        except PredictorError as exc:
            raise ServeError(f"cannot serve {run_dir}: {exc}") from None
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise ServeError(
                f"cannot serve {run_dir}: {export_dir / METADATA_FILE} is malformed ({type(exc).__name__}: {exc})"
            ) from None
        return cls(
            predictor=predictor,
            name=name or _pipeline_name(run_dir),
            version=run_dir.name,
            run_dir=run_dir,
            export_dir=export_dir,
        )

    # -- what clients see ---------------------------------------------------------------------------
    @property
    def input_name(self) -> str:
        return str(self.predictor.meta["input"].get("name") or "x")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.predictor.input_shape

    @property
    def input_kind(self) -> str:
        return self.predictor.input_kind

    @property
    def label_names(self) -> list[str]:
        return self.predictor.label_names

    @property
    def problem_type(self) -> str:
        return self.predictor.problem_type

    @property
    def variant(self) -> str:
        return self.predictor.variant

    def schema(self) -> dict[str, Any]:
        """What must match between a champion and its challenger for both to take the same requests."""
        inp = self.predictor.meta["input"]
        return {
            "input kind": self.input_kind,
            "input shape": list(self.input_shape),
            "feature names": inp.get("feature_names"),
            "problem type": self.problem_type,
            "class names": self.label_names,
        }

    def check_compatible(self, other: ServedModel, role: str) -> None:
        """Refuse a challenger whose input schema (or classes) differ from this champion's."""
        mine, theirs = self.schema(), other.schema()
        diffs = [f"{k}: champion {mine[k]!r}, {role} {theirs[k]!r}" for k in mine if mine[k] != theirs[k]]
        if diffs:
            raise ServeError(
                f"--{role} {other.run_dir}: its input schema differs from the champion's "
                f"({self.run_dir}); both must take the same requests. " + "; ".join(diffs)
            )

    # -- inference ------------------------------------------------------------------------------------
    def predict(self, x: np.ndarray) -> tuple[np.ndarray, list[Any], float]:
        """Calibrated probabilities, decisions (class names) and latency in ms for a batch already
        checked against the input contract (``Service.check_array``)."""
        t0 = time.perf_counter()
        proba = self.predictor.proba_of_checked(x)
        labels = decisions(self.predictor, proba)
        return proba, labels, (time.perf_counter() - t0) * 1000.0

    def warm_up(self) -> None:
        """One inference on zeros, so the first request does not pay onnxruntime's lazy setup."""
        self.predict(np.zeros((1, *self.input_shape), np.float32))


def decisions(p: Predictor, proba: np.ndarray) -> list[Any]:
    """The predictor's decision rule (task threshold for binary/multilabel) applied to ``proba``."""
    if p.problem_type == "regression":
        return proba.reshape(-1).tolist()
    thr = 0.5 if p.threshold is None else float(p.threshold)
    names = p.label_names
    if p.problem_type == "binary":
        idx = (proba[:, 1] >= thr).astype(np.int64)
    elif p.problem_type == "multilabel":
        return [[names[j] if names else int(j) for j in np.flatnonzero(row >= thr)] for row in proba]
    else:
        idx = proba.argmax(axis=1)
    return [names[int(i)] if names else int(i) for i in idx]
