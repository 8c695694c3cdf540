"""Shared helpers of the audit benchmarks (not a benchmark itself): dataset bundles and a runner."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.core.stage import RunContext
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.stages.audit import AuditDataset
from closedloop.stages.task import DefineTaskConfig, build_task_spec

ROOT = Path(__file__).resolve().parents[1]
MEDMNIST = ROOT.parent / "shared" / "data" / "medmnist"
if not MEDMNIST.is_dir():  # a worktree elsewhere (/work/wt/NAME): the machine's shared copy
    MEDMNIST = Path("/work/shared/data/medmnist")


def digits_bundle(seed: int = 0) -> DatasetBundle:
    """sklearn digits as uint8 (N, 8, 8, 1) images (0..16 scaled to 0..255), 60/20/20 stratified splits."""
    try:  # the data developer's source, when it exists
        from closedloop.data.sources.sklearn import SklearnSource  # type: ignore[import-not-found]

        return SklearnSource({"name": "digits"}).load(seed)
    except Exception:
        pass
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    imgs = np.round(X * 255.0 / 16.0).astype(np.uint8).reshape(-1, 8, 8, 1)
    idx = np.arange(len(y))
    tr, rest = train_test_split(idx, test_size=0.4, stratify=y, random_state=seed)
    va, te = train_test_split(rest, test_size=0.5, stratify=y[rest], random_state=seed)
    meta = DatasetMeta(
        name="digits",
        source="sklearn",
        kind="images",
        label_names=[str(i) for i in range(10)],
        n_channels=1,
        split_origin="seeded_stratified",
    )
    return DatasetBundle(
        meta=meta, splits={k: Split(X=imgs[i], y=y[i]) for k, i in (("train", tr), ("val", va), ("test", te))}
    )


def pneumonia_bundle() -> DatasetBundle:
    """PneumoniaMNIST-28 from the shared npz (train/val/test as released), through the library's source."""
    from closedloop.data.sources.medmnist_npz import MedMNISTSource

    return MedMNISTSource({"flag": "pneumoniamnist", "root": str(MEDMNIST), "download": False}).load(0)


def run_audit(
    data: DatasetBundle, stage_dir: Path | None = None, timings: dict[str, float] | None = None, **params: Any
) -> tuple[Any, float, AuditDataset]:
    """Run the audit stage; returns (outputs, seconds, stage); per-check wall times go into ``timings``.
    Without ``stage_dir`` the stage writes into a temporary folder removed on return (the outputs are
    in memory): one ``mkdtemp`` per call left 2,300 empty ``/tmp/audit-*`` folders behind."""
    if stage_dir is None:
        with tempfile.TemporaryDirectory(prefix="audit-") as tmp:
            return run_audit(data, Path(tmp), timings, **params)
    task = build_task_spec(DefineTaskConfig(), data)
    stage = AuditDataset(params)
    t0 = time.perf_counter()
    ctx = RunContext(stage_name="audit", stage_dir=Path(stage_dir), seed=0)
    out = stage.execute({"data": data, "task": task}, ctx)
    if timings is not None:
        timings.update(ctx.timings)
    return out, time.perf_counter() - t0, stage
