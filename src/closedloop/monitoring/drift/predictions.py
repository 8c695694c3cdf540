"""Reading calibrated probabilities in the package convention: predicted classes and confidences
(shared by the prediction-drift tests, the label-free estimate and the review queue)."""

from __future__ import annotations

import numpy as np


def prob_columns(proba: np.ndarray, problem_type: str) -> np.ndarray:
    """The informative probability columns (binary: P(positive) only)."""
    return proba[:, 1:2] if problem_type == "binary" else proba


def predicted_classes(proba: np.ndarray, problem_type: str, threshold: float) -> np.ndarray:
    if problem_type == "binary":
        return (proba[:, 1] >= threshold).astype(int)
    return proba.argmax(axis=1)


def confidences(proba: np.ndarray, problem_type: str, threshold: float) -> np.ndarray:
    """Probability of the predicted class (binary: of the side of the threshold taken)."""
    if problem_type == "binary":
        return np.where(proba[:, 1] >= threshold, proba[:, 1], proba[:, 0])
    if problem_type == "multilabel":
        return np.maximum(proba, 1 - proba).mean(axis=1)
    return proba.max(axis=1)
