"""Small review queues in the format ``closedloop monitor --review`` writes (see flywheel.export_queue)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

CLASSES = ["cat", "dog", "fox"]


def make_queue(
    root: Path,
    n: int = 24,
    classes: list[str] | None = None,
    kind: str = "images",
    multilabel: bool = False,
    seed: int = 0,
) -> Path:
    """A queue folder with ``n`` items: 28x28 PNGs (or table rows), probabilities and reasons."""
    from PIL import Image

    classes = classes or CLASSES
    rng = np.random.default_rng(seed)
    qdir = root / "queue"
    qdir.mkdir(parents=True)
    proba = rng.dirichlet(np.ones(len(classes)), size=n) if not multilabel else rng.random((n, len(classes)))
    ids = np.arange(100, 100 + n)
    df = pd.DataFrame({"id": ids})
    pred = proba.argmax(axis=1)
    if not multilabel:
        df["predicted"] = [classes[c] for c in pred]
        df["confidence"] = proba[np.arange(n), pred].round(4)
    df["priority"] = np.linspace(1, 0.5, n).round(4)
    df["reason"] = [["uncertain", "drifted", "disagreement"][i % 3] for i in range(n)]
    for c, name in enumerate(classes):
        df[f"p_{name}"] = proba[:, c].round(6)
    if kind == "images":
        (qdir / "images").mkdir()
        files = []
        for i in ids:
            arr = rng.integers(0, 255, size=(28, 28), dtype=np.uint8)
            name = f"images/{int(i):07d}.png"
            Image.fromarray(arr).save(qdir / name)
            files.append(name)
        df["file"] = files
    else:
        rows = pd.DataFrame({"id": ids, "age": rng.integers(20, 90, n), "bmi": rng.normal(25, 4, n).round(1)})
        rows["smoker"] = rng.choice(["yes", "no"], n)
        rows.to_csv(qdir / "rows.csv", index=False)
    df.to_csv(qdir / "queue.csv", index=False)
    meta = {
        "kind": kind,
        "problem_type": "multilabel" if multilabel else "multiclass",
        "label_names": classes,
        "threshold": 0.5,
    }
    (qdir / "queue.json").write_text(json.dumps(meta))
    return qdir
