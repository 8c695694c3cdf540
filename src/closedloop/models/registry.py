"""Model families by name: ``build_network(spec, input_shape, n_logits)``.

A family is a callable ``(input_shape, n_logits, **params) -> nn.Module`` whose module has
``features(x)`` and ``head``; register one with ``@register_model("name")`` or name it in YAML by import
path (``my_pkg.models:build``). The tuner sets a network knob (``dropout``) only in families whose
builder takes it by name or forwards ``**params`` (see :func:`accepts_param`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from closedloop.core.errors import ConfigError
from closedloop.core.registry import Registry

MODELS = Registry("model family", builtin_modules=("closedloop.models.families",))


def register_model(key: str, *, ladder: list[dict[str, Any]] | None = None) -> Callable[[Any], Any]:
    """Register a model builder ``(input_shape, n_logits, **params) -> nn.Module``; ``ladder`` is its
    capacity ladder (family params per rung, smallest first), which the train stage climbs when the
    config names no rungs. A family named by import path sets ``builder.ladder = [...]`` itself."""
    register = MODELS.register(key)

    def deco(builder: Any) -> Any:
        if ladder is not None:
            builder.ladder = [dict(r) for r in ladder]
        return register(builder)

    return deco


def family_ladder(family: str) -> list[dict[str, Any]]:
    """The family's own capacity ladder (its builder's ``ladder``); ``[{}]`` (one rung, the builder's
    defaults) for a family without one or one the registry cannot resolve (a stage's own hook builds it)."""
    try:
        builder = MODELS.resolve(family, where="model.family")
    except ConfigError:
        return [{}]
    return [dict(r) for r in getattr(builder, "ladder", None) or [{}]]


def build_network(spec: Any, input_shape: list[int] | tuple[int, ...], n_logits: int) -> nn.Module:
    builder = MODELS.resolve(spec.family, where="model.family")
    return builder(list(input_shape), int(n_logits), **spec.params)


def accepts_param(family: str, name: str) -> bool:
    """Whether the family's builder takes the keyword ``name`` (by name, or through ``**params``).
    A family that cannot be resolved here (a stage's own ``build_network`` hook builds it) is assumed
    to take it, as before."""
    try:
        builder = MODELS.resolve(family, where="model.family")
        params = inspect.signature(builder).parameters.values()
    except (ConfigError, TypeError, ValueError):
        return True
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def family_kind(family: str) -> str:
    """``"trees"`` for a tree family (trained by the tree engine, exported by its own converter),
    ``"network"`` for every gradient-trained ``nn.Module`` family (a builder marks itself with a
    ``family_kind`` attribute; an unresolvable name is a network, as a stage's own hook builds it)."""
    try:
        builder = MODELS.resolve(family, where="model.family")
    except ConfigError:
        return "network"
    return str(getattr(builder, "family_kind", "network"))


def network_kind(net: nn.Module) -> str:
    """The kind of a built network: ``"trees"`` when it (or every member of a seed ensemble) is a tree
    ensemble holding a booster, else ``"network"``."""
    members = list(getattr(net, "members", [net]))
    return "trees" if members and all(hasattr(m, "lgb_booster") for m in members) else "network"


def n_parameters(net: nn.Module) -> int:
    """Fitted values of a model: a network's parameters; a tree ensemble's leaves (each a fitted
    value) plus its head."""
    leaves = sum(m.n_leaves() for m in getattr(net, "members", [net]) if hasattr(m, "n_leaves"))
    return int(leaves + sum(p.numel() for p in net.parameters()))
