"""The dataset bundle: train/val/test splits plus metadata, passed between stages as an artifact.

Images stay ``uint8`` arrays shaped ``(N, H, W, C)`` until a batch is made; tables are pandas
DataFrames with missing values kept as missing. The test split is sealed: ``bundle.test`` raises, and
only :meth:`closedloop.core.stage.RunContext.open_test` (which writes the test ledger) hands it out.

Layout on disk::

    <dir>/meta.json
    <dir>/<split>.npz              images: X (N,H,W,C) uint8, y
    <dir>/<split>.parquet          tables: feature columns + "__target__" (+ "__group__")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from closedloop.core.artifacts import Artifact
from closedloop.core.errors import DataError, SealedTestError
from closedloop.core.io import atomic_path, read_json, to_json, write_text_atomic

SPLITS = ("train", "val", "test")
TARGET_COLUMN = "__target__"
GROUP_COLUMN = "__group__"


class DatasetMeta(BaseModel):
    """What a data source knows about its data beyond the arrays."""

    model_config = ConfigDict(extra="allow")

    name: str
    """Dataset name, e.g. ``pneumoniamnist`` or ``digits``."""
    source: str
    """Registry key of the source that produced it."""
    kind: Literal["images", "table"]
    task_hint: str | None = None
    """Problem type declared by the source (MedMNIST's ``task``: 'binary-class', 'multi-class',
    'multi-label, binary-class', 'ordinal-regression'), if any."""
    label_names: list[str] = Field(default_factory=list)
    """Class (or label) names in index order."""
    n_channels: int | None = None
    feature_names: list[str] = Field(default_factory=list)
    categorical_features: list[str] = Field(default_factory=list)
    split_origin: Literal["source", "seeded_stratified", "time_ordered"] = "source"
    """Whether splits came with the data, were made here (seeded, stratified), or were cut in time order
    (a table's ``time_column``)."""
    time_column: str | None = None
    """A feature column ordering the rows in time (a table's ``time_column`` kept as a feature): the baseline
    stage's persistence baseline reads it."""
    provenance: dict[str, Any] = Field(default_factory=dict)
    """File paths, checksums (expected vs. actual), download URL, version."""
    warnings: list[str] = Field(default_factory=list)
    """Problems found while loading (e.g. checksum mismatch) that the audit reports."""


@dataclass
class Split:
    """One split: inputs ``X`` and targets ``y``.

    ``X`` is a ``uint8`` array ``(N, H, W, C)`` for images or a DataFrame for tables; ``y`` is
    ``(N,)`` integer classes, ``(N, L)`` 0/1 for multi-label, or ``(N,)`` float for regression.
    """

    X: np.ndarray | pd.DataFrame
    y: np.ndarray
    groups: np.ndarray | None = None
    """Tables with a ``group`` column: which rows belong together (a patient, a classroom). Splits never
    share a group, and the train stage's folds and held-out rows keep each group whole."""

    def __len__(self) -> int:
        return len(self.y)

    def features(self) -> np.ndarray:
        """A float32 2-D matrix view for simple models: flattened pixels / numeric table columns
        (categoricals as codes, missing as NaN)."""
        if isinstance(self.X, pd.DataFrame):
            cols = []
            for name in self.X.columns:
                col = self.X[name]
                if isinstance(col.dtype, pd.CategoricalDtype):
                    # codes from the dtype's fixed categories, identical across splits
                    codes = col.cat.codes.to_numpy().astype(np.float32)
                    codes[codes < 0] = np.nan
                    cols.append(codes)
                else:
                    cols.append(
                        pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)
                    )
            return np.stack(cols, axis=1) if cols else np.zeros((len(self.X), 0), np.float32)
        return self.X.reshape(len(self.X), -1).astype(np.float32) / 255.0


@dataclass
class DatasetBundle(Artifact):
    """Train/val/test splits and metadata. Access ``bundle.train`` and ``bundle.val`` freely; the
    test split only through ``ctx.open_test(bundle, reason)``."""

    meta: DatasetMeta
    splits: dict[str, Split] = field(repr=False)

    def __post_init__(self) -> None:
        missing = [s for s in SPLITS if s not in self.splits]
        if missing:
            raise DataError(
                f"dataset {self.meta.name!r}: missing split(s) {missing}; expected {list(SPLITS)}"
            )

    # -- access -------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.meta.kind

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def val(self) -> Split:
        return self.splits["val"]

    @property
    def test(self) -> Split:
        raise SealedTestError(
            "the test split is sealed: it is opened once, for the final evaluation, through "
            "ctx.open_test(data, reason=...), which records the opening in the test ledger. "
            "Tune and select on the validation split."
        )

    def unsealed_test(self, _token: object) -> Split:
        """Used by :class:`RunContext` only; the token proves the caller went through the ledger."""
        from closedloop.core.stage import _TEST_TOKEN

        if _token is not _TEST_TOKEN:
            raise SealedTestError("use ctx.open_test(data, reason=...) to read the test split")
        return self.splits["test"]

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(H, W, C) for images, None for tables."""
        if self.kind != "images":
            return None
        return tuple(self.train.X.shape[1:])  # type: ignore[return-value]

    def _repr_html_(self) -> str:
        sizes = ", ".join(f"{k}: {v}" for k, v in self.sizes().items())
        return f"<b>DatasetBundle</b> {self.meta.name} ({self.kind}; {sizes})"

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        write_text_atomic(directory / "meta.json", to_json(self.meta.model_dump(mode="json")))
        for name, split in self.splits.items():
            if self.kind == "images":
                with atomic_path(directory / f"{name}.npz") as tmp, open(tmp, "wb") as f:
                    np.savez(f, X=split.X, y=split.y)
            else:
                df = split.X.copy()
                y = split.y
                df[TARGET_COLUMN] = list(y) if y.ndim > 1 else y
                if split.groups is not None:
                    df[GROUP_COLUMN] = np.asarray(split.groups).astype(str)
                with atomic_path(directory / f"{name}.parquet") as tmp:
                    df.to_parquet(tmp, index=False)

    @classmethod
    def load(cls, directory: Path) -> Self:
        directory = Path(directory)
        meta = DatasetMeta.model_validate(read_json(directory / "meta.json"))
        splits = {}
        for name in SPLITS:
            if meta.kind == "images":
                with np.load(directory / f"{name}.npz", allow_pickle=False) as z:
                    splits[name] = Split(X=z["X"], y=z["y"])
            else:
                df = pd.read_parquet(directory / f"{name}.parquet")
                y = df.pop(TARGET_COLUMN)
                groups = df.pop(GROUP_COLUMN).to_numpy().astype(str) if GROUP_COLUMN in df else None
                y_arr = (
                    np.stack(y.to_numpy())
                    if len(y) and isinstance(y.iloc[0], list | np.ndarray)
                    else y.to_numpy()
                )
                for col in meta.categorical_features:
                    if col in df:
                        df[col] = df[col].astype("category")
                splits[name] = Split(X=df, y=y_arr, groups=groups)
        return cls(meta=meta, splits=splits)
