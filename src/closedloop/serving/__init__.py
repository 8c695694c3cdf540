"""Serving exported models with numpy and onnxruntime only (no torch, no training code).

``predictor.py`` is self-contained: copy it next to an export folder to serve without closedloop.
"""

from closedloop.serving.predictor import Predictor, PredictorError, load_metadata

__all__ = ["Predictor", "PredictorError", "load_metadata"]
