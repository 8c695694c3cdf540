"""``check_model_family``: the battery every model family passes (like scikit-learn's ``check_estimator``).

``tests/test_common_plugins.py`` runs it over every built-in family; run it on your own::

    >>> from closedloop.models.checks import check_model_family
    >>> check_model_family("mlp", {"width": 8, "depth": 2}, [5])

It raises ``AssertionError`` naming what failed.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from closedloop.models.registry import MODELS, accepts_param, build_network
from closedloop.models.trained import ModelSpec


def _input(shape: list[int]) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if len(shape) == 3:  # (H, W, C) images enter the network channels-first
        return torch.rand(2, shape[2], shape[0], shape[1], generator=g)
    return torch.randn(2, *shape, generator=g)


def check_model_family(family: str, params: dict[str, Any], input_shape: list[int]) -> None:
    """Check a family (registered key or import path) built with ``params`` for ``input_shape``.

    The builder takes ``(input_shape, n_logits, **params)`` and resolves by its import path; the
    network has ``features(x)`` (2-D embeddings) and a ``head`` ``nn.Linear`` with
    ``head(features(x)) == forward(x)`` (the monitor and the export read them so); outputs are finite
    with one column per logit (one logit for binary and regression); seeded construction gives the
    same weights; a family whose builder takes ``dropout`` accepts the value the tuner passes.
    """
    builder = MODELS.resolve(family, where="check_model_family")
    first = list(inspect.signature(builder).parameters)[:2]
    assert len(first) == 2, f"{family}: a builder takes (input_shape, n_logits, **params)"
    path = f"{builder.__module__}:{builder.__qualname__}"
    assert MODELS.resolve(path) is builder, f"{family}: {path!r} does not resolve to the builder"
    n_logits = 3
    x = _input(input_shape)
    torch.manual_seed(0)
    net = build_network(ModelSpec(family=family, params=params), input_shape, n_logits).eval()
    with torch.no_grad():
        feats = net.features(x)
        out = net(x)
        assert feats.ndim == 2 and feats.shape[0] == 2, (
            f"{family}: features(x) has shape {tuple(feats.shape)}"
        )
        assert isinstance(net.head, torch.nn.Linear), (
            f"{family}: head is {type(net.head).__name__}, not Linear"
        )
        assert net.head.in_features == feats.shape[1], f"{family}: head takes {net.head.in_features} features"
        assert out.shape == (2, n_logits) and torch.isfinite(out).all(), (
            f"{family}: output {tuple(out.shape)}"
        )
        torch.testing.assert_close(net.head(feats), out, msg=f"{family}: head(features(x)) != forward(x)")
        torch.manual_seed(0)
        twin = build_network(ModelSpec(family=family, params=params), input_shape, n_logits).eval()
        torch.testing.assert_close(twin(x), out, msg=f"{family}: seeded construction gives other weights")
        one = build_network(ModelSpec(family=family, params=params), input_shape, 1).eval()
        assert one(x).shape == (2, 1), f"{family}: binary and regression heads have one logit"
    if accepts_param(family, "dropout"):  # the tuner will pass it: the family must take it
        build_network(ModelSpec(family=family, params={**params, "dropout": 0.2}), input_shape, n_logits)
