"""The page reads what the monitor writes, and its export is what retrain reads (imports torch: slow)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from closedloop.labeling import LabelStore, export_labels, load_queue

pytestmark = pytest.mark.slow


def test_monitor_queue_to_labels_to_retrain_input(tmp_path: Path) -> None:
    from closedloop.monitoring.flywheel import export_queue
    from closedloop.stages.monitor.retrain import read_labeled

    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, size=(30, 28, 28, 1), dtype=np.uint8)
    keep = np.arange(1000, 1030)  # production row ids, as the monitor keeps them
    proba = rng.dirichlet(np.ones(3), size=30)
    pred = proba.argmax(axis=1)
    names = ["normal", "benign", "malignant"]
    queue = pd.DataFrame(
        {
            "id": keep[:8],
            "entropy": 0.5,
            "predicted": [names[c] for c in pred[:8]],
            "confidence": proba[np.arange(8), pred[:8]],
            "priority": np.linspace(1, 0, 8),
            "reason": ["uncertain", "drifted"] * 4,
        }
    )
    info = SimpleNamespace(kind="images", problem_type="multiclass", label_names=names, threshold=0.5)
    export_queue(queue, raw, keep, SimpleNamespace(info=info), tmp_path / "q", proba=proba)

    q = load_queue(tmp_path / "q")
    assert q.classes == names and q.ids == [str(i) for i in range(1000, 1008)]
    top = q.items[3].top
    assert [t.name for t in top] == [names[c] for c in np.argsort(-proba[3])]
    assert top[0].p == pytest.approx(proba[3].max(), abs=1e-6) and q.items[3].reason == "drifted"

    store = LabelStore(tmp_path / "q" / "labels.csv", q.ids, q.classes)
    store.append("1000", ["benign"], "labeled", "ada")
    store.append("1001", ["malignant"], "labeled", "ada")
    store.append("1002", [], "skipped", "ada")
    res = export_labels(tmp_path / "q", tmp_path / "out")

    bundle = SimpleNamespace(
        meta=SimpleNamespace(label_names=names),
        kind="images",
        image_shape=(28, 28, 1),
        train=SimpleNamespace(y=np.zeros(1, dtype=np.int64)),
    )
    X, y, n = read_labeled(res.add_labeled, bundle)  # exactly what 'retrain --add-labeled' does
    assert n == 2 and sorted(y.tolist()) == [1, 2]
    np.testing.assert_array_equal(X[y == 1][0], raw[0])  # the pixels survive the round trip


def test_old_queue_without_probabilities_still_loads(tmp_path: Path) -> None:
    from closedloop.monitoring.flywheel import export_queue

    raw = np.zeros((5, 8, 8, 1), dtype=np.uint8)
    queue = pd.DataFrame(
        {"id": [0, 1], "predicted": ["a", "b"], "confidence": [0.6, 0.7], "reason": "uncertain"}
    )
    info = SimpleNamespace(kind="images", problem_type="binary", label_names=["a", "b"], threshold=0.5)
    export_queue(queue, raw, None, SimpleNamespace(info=info), tmp_path / "q")  # no proba: as before
    q = load_queue(tmp_path / "q")
    assert q.classes == ["a", "b"] and q.items[1].predicted == ["b"] and q.items[1].top == []
