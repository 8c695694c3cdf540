"""Serving exported models with numpy and onnxruntime only (no torch, no training code).

``predictor.py`` is self-contained: copy it next to an export folder to serve without closedloop.
``create_app`` (FastAPI) and the ``serve`` command are in ``app.py`` / ``cli.py``; see docs/serving.md.
"""

from typing import Any

from closedloop.serving.predictor import Predictor, PredictorError, load_metadata

__all__ = ["Predictor", "PredictorError", "create_app", "load_metadata"]


def __getattr__(name: str) -> Any:  # lazy: the web stack is imported only when an app is built
    if name == "create_app":
        from closedloop.serving.app import create_app

        return create_app
    raise AttributeError(name)
