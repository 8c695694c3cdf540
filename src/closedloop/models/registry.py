"""Model families by name: ``build_network(spec, input_shape, n_logits)``.

A family is a callable ``(input_shape, n_logits, **params) -> nn.Module`` whose module has
``features(x)`` and ``head``; register one with ``@register_model("name")`` or name it in YAML by import
path (``my_pkg.models:build``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from closedloop.core.registry import Registry

MODELS = Registry("model family", builtin_modules=("closedloop.models.families",))


def register_model(key: str) -> Callable[[Any], Any]:
    """Register a model builder ``(input_shape, n_logits, **params) -> nn.Module``."""
    return MODELS.register(key)


def build_network(spec: Any, input_shape: list[int] | tuple[int, ...], n_logits: int) -> nn.Module:
    builder = MODELS.resolve(spec.family, where="model.family")
    return builder(list(input_shape), int(n_logits), **spec.params)
