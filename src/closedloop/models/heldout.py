"""The rows the deployed model never trained on, for every stage and tool after training.

The split itself is :class:`~closedloop.artifacts.heldout.HeldOut` (``TrainedModel.heldout``, or
``HeldOut.of(model.info)`` for any model that records one);
these helpers select its rows from a dataset and check that they are the rows the model held out.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from closedloop.artifacts.heldout import HeldOut
from closedloop.core.errors import ConfigError


def rows_checksum(X: Any, y: np.ndarray, idx: np.ndarray) -> str:
    """sha256 over the selected rows' inputs and labels (images: raw bytes; tables: pandas row hashes)."""
    import pandas as pd

    h = hashlib.sha256()
    idx = np.asarray(idx, dtype=np.int64)
    if isinstance(X, pd.DataFrame):
        h.update(pd.util.hash_pandas_object(X.iloc[idx], index=False).to_numpy().tobytes())
    else:
        h.update(np.ascontiguousarray(np.asarray(X)[idx]).tobytes())
    h.update(np.ascontiguousarray(np.asarray(y)[idx]).astype(np.float64).tobytes())
    return h.hexdigest()[:16]


def unseen_val_rows(model: Any, n_val: int) -> np.ndarray:
    """Indices of the validation rows ``model`` did not train on (from its held-out record; a model
    without one: all rows when it records a fit on train only, none when on train+val)."""
    info = getattr(model, "info", None) or {}
    plan = HeldOut.of(info)
    if plan is None:
        return np.arange(0 if info.get("trained_on") == "train+val" else n_val)
    if plan.evaluated_on == "trained_on":
        return np.arange(0)
    return np.asarray(plan.indices, dtype=np.int64)


def heldout_split(model: Any, data: Any, stage: str) -> tuple[Any, str, str]:
    """The validation rows the deployed ``model`` did not train on, for a stage after training.

    Returns ``(split, evaluated_on, note)``. A model without a held-out record (trained outside the
    train stage) gets the whole validation split, labelled ``validation`` when its record says it was
    fitted on train only and ``trained_on`` when it says train+val. Raises when the record does not
    match ``data`` (another dataset or split than the one the model was trained with)."""
    from closedloop.data.bundle import Split

    val = data.val
    info = getattr(model, "info", None) or {}
    plan = HeldOut.of(info)
    if plan is None:
        if info.get("trained_on") == "train+val":
            return val, "trained_on", "the model records a fit on train+val and no held-out split"
        return (
            val,
            "validation",
            "the model records no held-out split; its training data did not include validation",
        )
    idx = np.asarray(plan.indices, dtype=np.int64)
    if len(val) != plan.n_val or (len(idx) and idx.max() >= len(val)):
        raise ConfigError(
            f"stage {stage!r}: the model's held-out record refers to a validation split of {plan.n_val} samples, "
            f"but this stage's data has {len(val)}; wire the same data (e.g. inputs_from: {{data: ...}}) into "
            "train and this stage"
        )
    got = rows_checksum(val.X, np.asarray(val.y), idx)
    if got != plan.checksum:
        raise ConfigError(
            f"stage {stage!r}: the validation rows the model held out (checksum {plan.checksum}) differ from "
            f"this stage's data (checksum {got}); wire the same data into train and this stage"
        )
    X = val.X.iloc[idx].reset_index(drop=True) if hasattr(val.X, "iloc") else np.asarray(val.X)[idx]
    groups = None if val.groups is None else np.asarray(val.groups)[idx]
    return Split(X=X, y=np.asarray(val.y)[idx], groups=groups), plan.evaluated_on, plan.note
