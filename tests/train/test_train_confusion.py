"""The deployed model's test confusion matrix: at the shipped threshold for a binary task, at the argmax
otherwise, none where a row may hold several labels or a number."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from closedloop.artifacts.figures import Confusion
from closedloop.stages.train.phases.evaluate import confusion_on_test


def test_a_binary_matrix_is_taken_at_the_shipped_threshold() -> None:
    task = SimpleNamespace(problem_type="binary", label_names=["healthy", "sick"])
    y = np.array([0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.35, 0.3, 0.6, 0.9])
    P = np.stack([1 - p1, p1], axis=1)
    at_half = Confusion.model_validate(confusion_on_test(y, P, task, None))
    assert at_half.counts == [[2, 0], [1, 2]] and at_half.decided_at == "shipped threshold 0.5"
    low = Confusion.model_validate(confusion_on_test(y, P, task, 0.25))
    assert low.counts == [[1, 1], [0, 3]] and low.decided_at == "shipped threshold 0.25" and low.n == 5


def test_several_classes_use_the_argmax_and_other_tasks_have_none() -> None:
    task = SimpleNamespace(problem_type="multiclass", label_names=["a", "b", "c"])
    y = np.array([0, 1, 2, 2])
    P = np.eye(3)[[0, 2, 2, 0]] * 0.8 + 0.2 / 3
    c = Confusion.model_validate(confusion_on_test(y, P, task, None))
    assert c.counts == [[1, 0, 0], [0, 0, 1], [1, 0, 1]] and c.labels == ["a", "b", "c"]
    assert c.errors_by_distance() == {1: 1, 2: 1}
    for problem in ("multilabel", "regression"):
        assert confusion_on_test(y, P, SimpleNamespace(problem_type=problem, label_names=[]), None) is None
