"""Toy datasets bundled with scikit-learn (no download): the quickstart's default data.

``digits`` comes as 8x8 grayscale images, the others as named-column tables; ``diabetes`` is a
regression target. Splits are seeded and stratified.

YAML::

    data: {source: sklearn, name: digits}
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

from closedloop.core.registry import register_source
from closedloop.data.bundle import DatasetBundle, DatasetMeta
from closedloop.data.sources.base import DataSource, SplitFractionsConfig
from closedloop.data.splits import split_arrays
from closedloop.data.validate import validate_bundle

SklearnName = Literal["digits", "breast_cancer", "iris", "wine", "diabetes"]


class SklearnConfig(SplitFractionsConfig):
    """A dataset shipped inside scikit-learn."""

    name: SklearnName = "digits"
    """digits (8x8 images, 10 classes), breast_cancer (binary table), iris or wine (3-class tables),
    diabetes (regression table)."""


def _load_raw(name: str) -> Any:
    from sklearn import datasets

    return getattr(datasets, f"load_{name}")()


@register_source("sklearn")
class SklearnSource(DataSource):
    """scikit-learn's bundled toy datasets, split here with a seeded stratified split."""

    Config = SklearnConfig
    config: SklearnConfig

    def load(self, seed: int) -> DatasetBundle:
        cfg = self.config
        raw = _load_raw(cfg.name)
        regression = cfg.name == "diabetes"
        y = raw.target.astype(np.float64 if regression else np.int64)
        label_names = [] if regression else [str(n) for n in getattr(raw, "target_names", [])]
        if cfg.name == "digits":
            # pixel intensities are 0..16; stretch to the 0..255 range every image model expects
            pixels = np.rint(raw.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
            X: np.ndarray | pd.DataFrame = pixels[..., None]
            kind, feature_names, n_channels = "images", [], 1
        else:
            feature_names = [str(f) for f in raw.feature_names]
            X = pd.DataFrame(np.asarray(raw.data, dtype=np.float64), columns=feature_names)
            kind, n_channels = "table", None
        splits, plan = split_arrays(
            X,
            y,
            val_fraction=cfg.val_fraction,
            test_fraction=cfg.test_fraction,
            seed=seed,
            label_names=label_names,
        )
        warnings = [f"sklearn/{cfg.name}: {plan.note}"] if plan.small_classes and plan.note else []
        meta = DatasetMeta(
            name=cfg.name,
            source="sklearn",
            kind=kind,
            task_hint="regression" if regression else None,
            label_names=label_names,
            n_channels=n_channels,
            feature_names=feature_names,
            split_origin="seeded_stratified",
            provenance={
                "origin": f"sklearn.datasets.load_{cfg.name} (bundled with scikit-learn, no download)",
                "sklearn_version": _sklearn_version(),
                "splits": plan.provenance(seed, cfg.val_fraction, cfg.test_fraction),
            },
            warnings=warnings,
        )
        return validate_bundle(DatasetBundle(meta=meta, splits=splits), where=f"dataset 'sklearn/{cfg.name}'")


def _sklearn_version() -> str:
    import sklearn

    return str(sklearn.__version__)
