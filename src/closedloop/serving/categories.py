"""Category names in served table rows: ``/predict`` takes a categorical feature as its name (or its code,
as before). The names come from ``predictor.json`` (``input.categories``: each categorical column's names
in code order, fixed when the model was trained). A name the model never saw is treated as a missing value
(NaN: the model routes it as it routes missing values) and listed in the response's
``unseen_categories``, so the caller sees it; it is never refused and never crashes the request. The
OIP route (``/v2/models/{m}/infer``) takes the same names (:func:`oip_table_rows`) and lists unseen names
in the response's ``parameters.unseen_categories``.

Categories that are numbers (a tumour stage 1..4, a study 3/4): in a row keyed by feature name (and one
OIP input per feature) a number is the category's *name*, the value the user sees in the data, not its
code: read as a code, stage 3 would silently be answered as stage 4 (nwtco through ``closedloop serve``,
``benchmarks/bench_table_serving.py``). Rows as lists in the model's column order are the model's input
tensor, where a number is a code, as before. A ``true``/``false`` of a categorical feature names the category
``"True"``/``"False"``: the tabular source makes a bool column categorical with those names."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from closedloop.serving.protocol import ProtocolError


def category_codes(contract: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Feature -> (category name -> code) from predictor.json's ``input`` section (empty for old exports)."""
    return {
        f: {str(n): i for i, n in enumerate(names)} for f, names in (contract.get("categories") or {}).items()
    }


def numeric_codes(codes: dict[str, dict[str, int]]) -> dict[str, dict[float, int]]:
    """Feature -> (category value -> code) for the categorical features whose names are all numbers."""
    out = {}
    for feature, by_name in codes.items():
        try:
            out[feature] = {float(name): code for name, code in by_name.items()}
        except ValueError:
            continue
    return out


def _is_number(v: Any) -> bool:
    return (
        isinstance(v, int | float | np.integer | np.floating)
        and not isinstance(v, bool)
        and not math.isnan(v)
    )


def encode_names(
    values: list[Any],
    names: list[str],
    codes: dict[str, dict[str, int]],
    index: int,
    unseen: list[dict[str, Any]],
    by_value: dict[str, dict[float, int]] | None = None,
) -> list[Any]:
    """One row in the model's column order: a text value of a categorical feature becomes its code, or
    NaN when the model never saw it (appended to ``unseen``); with ``by_value`` (rows keyed by feature
    name), so does a number of a categorical feature whose categories are numbers. Everything else is
    left for the caller's number check."""
    by_value = by_value or {}
    out = list(values)
    for j, (feature, v) in enumerate(zip(names, values, strict=False)):
        if feature in codes and isinstance(v, bool | np.bool_):
            v = str(bool(v))  # a bool column's categories are named "False"/"True" (the tabular source)
        if feature not in codes or not (isinstance(v, str) or (feature in by_value and _is_number(v))):
            continue
        code = codes[feature].get(v) if isinstance(v, str) else None
        if code is None and feature in by_value:  # "3", 3 and 3.0 all name the category 3
            try:
                code = by_value[feature].get(float(v))
            except ValueError:
                code = None
        if code is None:
            unseen.append(
                {"index": index, "feature": feature, "value": v.item() if hasattr(v, "item") else v}
            )
        out[j] = math.nan if code is None else code
    return out


def _number(v: Any, feature: str, where: str) -> float:
    """A non-categorical table value as a float (null: missing); a text value names its feature."""
    if v is None:
        return math.nan
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            raise ProtocolError(
                f"{where}: feature {feature!r} is {v!r}, not a number; send numbers (a categorical "
                "feature as its category name or code, null for a missing value)"
            ) from None
    return float(v)


def oip_table_rows(
    inputs: list[Any],
    input_name: str,
    names: list[str],
    codes: dict[str, dict[str, int]],
    unseen: list[dict[str, Any]],
) -> np.ndarray | None:
    """Table rows from an OIP request that sends values by name, or None for the plain numeric tensor.

    Two shapes are accepted (category names in either): the model's one input as a BYTES tensor of
    shape ``[N, F]`` in column order (strings, numbers and null), or one input per feature (named by the
    feature, shape ``[N]`` or ``[N, 1]``; BYTES for a categorical feature given by name, any numeric
    datatype otherwise), as MLServer's pandas codec sends a data frame. An unseen name is a missing value
    listed in ``unseen``."""
    if len(inputs) == 1 and inputs[0].name == input_name:
        inp = inputs[0]
        if inp.datatype != "BYTES":
            return None
        arr = inp.array
        if arr.ndim != 2 or arr.shape[1] != len(names):
            raise ProtocolError(
                f"input {inp.name!r}: BYTES shape {list(arr.shape)}; expected [N, {len(names)}] in the "
                f"column order {names}"
            )
        rows = [encode_names(list(r), names, codes, i, unseen) for i, r in enumerate(arr.tolist())]
    else:
        given = [i.name for i in inputs]
        if not set(given) & set(names):
            return None  # not a by-feature request: the caller's usual input checks answer it
        missing = [n for n in names if n not in given]
        unknown = [g for g in given if g not in names]
        if missing or unknown or len(set(given)) != len(given):
            raise ProtocolError(
                f"inputs by feature: missing {missing}, unknown {unknown}"
                + (", a feature sent twice" if len(set(given)) != len(given) else "")
                + f"; expected one input per feature {names} (shape [N])"
            )
        cols = {i.name: i.array.reshape(len(i.array), -1) if i.array.ndim else i.array for i in inputs}
        bad = [n for n, c in cols.items() if c.ndim != 2 or c.shape[1] != 1]
        lengths = {len(c) for c in cols.values() if c.ndim == 2}
        if bad or len(lengths) != 1:
            raise ProtocolError(
                f"inputs by feature: each must have shape [N] or [N, 1] with the same N; got "
                f"{ {n: list(c.shape) for n, c in cols.items()} }"
            )
        n = lengths.pop()
        by_value = numeric_codes(codes)
        rows = [
            encode_names([cols[f][i, 0] for f in names], names, codes, i, unseen, by_value) for i in range(n)
        ]
    out = np.empty((len(rows), len(names)), np.float32)
    for i, row in enumerate(rows):
        out[i] = [_number(v, f, f"input {i}") for f, v in zip(names, row, strict=True)]
    return out
