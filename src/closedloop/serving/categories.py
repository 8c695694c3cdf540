"""Category names in served table rows: ``/predict`` takes a categorical feature as its name (or its code,
as before). The names come from ``predictor.json`` (``input.categories``: each categorical column's names
in code order, fixed when the model was trained). A name the model never saw is treated as a missing value
(NaN: the model routes it as it routes missing values) and listed in the response's
``unseen_categories``, so the caller sees it; it is never refused and never crashes the request."""

from __future__ import annotations

import math
from typing import Any


def category_codes(contract: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Feature -> (category name -> code) from predictor.json's ``input`` section (empty for old exports)."""
    return {
        f: {str(n): i for i, n in enumerate(names)} for f, names in (contract.get("categories") or {}).items()
    }


def encode_names(
    values: list[Any],
    names: list[str],
    codes: dict[str, dict[str, int]],
    index: int,
    unseen: list[dict[str, Any]],
) -> list[Any]:
    """One row in the model's column order: a text value of a categorical feature becomes its code, or
    NaN when the model never saw it (appended to ``unseen``); everything else is left for the caller's
    number check."""
    out = list(values)
    for j, (feature, v) in enumerate(zip(names, values, strict=False)):
        if isinstance(v, str) and feature in codes:
            code = codes[feature].get(v)
            if code is None:
                unseen.append({"index": index, "feature": feature, "value": v})
            out[j] = math.nan if code is None else code
    return out
