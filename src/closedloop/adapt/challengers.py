"""The adapted challengers ``closedloop adapt`` tries, and the choice among them.

Candidates (``--challengers``): ``recalibration`` (threshold at the task's costs, Platt,
temperature: :mod:`closedloop.stats.recalibration`) and ``head`` (the last layer fine-tuned toward
the champion's, one candidate per penalty in :data:`closedloop.adapt.head.L2_GRID`:
:mod:`closedloop.adapt.head`). Every candidate is scored by stratified k-fold cross-validated
expected cost **on the adaptation labels only**, on the same folds; the lowest wins (ties: the
simpler, listed first) and is refitted on all adaptation labels. That is where the selection
happens, so that is where its optimism stays: the cross-validated cost of the winner is never
reported as its performance, and the evaluation part judges exactly one challenger, so its one
paired test needs no correction for the number of candidates (recorded in ``selection``).

:func:`adapted_model` writes the chosen challenger into the champion's network (head weights,
temperature 1, threshold), so it is a model like any other: ``TrainedModel.predict_proba`` gives
the same probabilities (tested), and ``closedloop monitor --model`` can read it.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy.special import expit

from closedloop.adapt.head import L2_GRID, HeadFit, fit_head
from closedloop.stats.errors import StatsError
from closedloop.stats.recalibration import (
    METHODS,
    Recalibration,
    expected_cost,
    fit_recalibration,
    stratified_folds,
)

Family = Literal["recalibration", "head"]
FAMILIES: tuple[Family, ...] = ("recalibration", "head")


class AdaptedChallenger(BaseModel):
    """One adapted challenger: its probabilities from the champion's logit ``z`` and features
    ``phi``, and its decision at its own threshold (re-chosen on production labels)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str
    """``threshold``, ``platt``, ``temperature`` or ``head``."""
    recalibration: Recalibration | None = None
    head: HeadFit | None = None
    threshold: float
    """The served decision: P(pos) >= threshold (re-chosen on production labels)."""

    def proba(self, z: np.ndarray, phi: np.ndarray | None) -> np.ndarray:
        if self.head is not None:
            if phi is None:
                raise StatsError("a head challenger needs the champion's features")
            return self.head.proba(z, phi)
        assert self.recalibration is not None
        return self.recalibration.apply(expit(np.asarray(z, np.float64)))

    def decide(self, z: np.ndarray, phi: np.ndarray | None) -> np.ndarray:
        return self.proba(z, phi) >= self.threshold

    def describe(self) -> str:
        if self.head is not None:
            h = self.head
            return (
                f"last layer fine-tuned toward the champion's (l2 {h.l2:g}, slope {h.slope:.3f}, "
                f"intercept {h.intercept:.3f}, |v| {float(np.linalg.norm(h.delta)):.3f}), threshold {h.threshold:.4f}"
            )
        r = self.recalibration
        assert r is not None
        return f"{r.method} recalibration (slope {r.slope:.3f}, intercept {r.intercept:.3f}), threshold {r.threshold:.4f}"


class ChallengerChoice(BaseModel):
    """The chosen challenger, refitted on every adaptation label, and what the choice rested on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chosen: AdaptedChallenger
    cv_cost: dict[str, float]
    """Cross-validated expected cost per case of every candidate (adaptation labels only)."""
    folds: int
    candidates: int
    selection: str


def _candidates(families: tuple[str, ...]) -> list[str]:
    bad = [f for f in families if f not in FAMILIES]
    if bad:
        raise StatsError(f"unknown challenger family {bad}; expected some of {', '.join(FAMILIES)}")
    names: list[str] = []
    if "recalibration" in families:
        names += list(METHODS)
    if "head" in families:
        names += [f"head(l2={v:g})" for v in L2_GRID]
    return names


def fit_candidate(
    name: str, y: np.ndarray, z: np.ndarray, phi: np.ndarray | None, costs: tuple[float, float]
) -> AdaptedChallenger:
    if name.startswith("head"):
        if phi is None:
            raise StatsError("a head challenger needs the champion's features")
        l2 = float(name[len("head(l2=") : -1])
        h = fit_head(y, z, phi, l2=l2, costs=costs)
        return AdaptedChallenger(method="head", head=h, threshold=h.threshold)
    rec = fit_recalibration(y, expit(np.asarray(z, np.float64)), name, costs=costs)  # type: ignore[arg-type]
    return AdaptedChallenger(method=name, recalibration=rec, threshold=rec.threshold)


def choose_challenger(
    y_true: Any,
    z: Any,
    phi: Any | None,
    *,
    costs: tuple[float, float],
    families: tuple[str, ...] = FAMILIES,
    folds: int = 5,
    seed: int = 0,
) -> ChallengerChoice:
    """Cross-validate every candidate on the same stratified folds, refit the best (module docstring)."""
    y = np.asarray(y_true).reshape(-1).astype(int)
    z = np.asarray(z, np.float64).reshape(-1)
    phi = None if phi is None else np.asarray(phi, np.float64)
    names = _candidates(tuple(families))
    if phi is None:
        names = [n for n in names if not n.startswith("head")]
    fold, k = stratified_folds(y, folds, seed, what="choosing a challenger from adaptation labels")
    cv: dict[str, float] = {}
    for name in names:
        cost = 0.0
        for f in range(k):
            tr, te = fold != f, fold == f
            try:
                c = fit_candidate(name, y[tr], z[tr], None if phi is None else phi[tr], costs)
            except StatsError:
                cost = float("inf")
                break
            cost += expected_cost(y[te], c.decide(z[te], None if phi is None else phi[te]), costs) * te.sum()
        cv[name] = cost / len(y)
    best = min(names, key=lambda n: (cv[n], names.index(n)))
    return ChallengerChoice(
        chosen=fit_candidate(best, y, z, phi, costs),
        cv_cost=cv,
        folds=k,
        candidates=len(names),
        selection=(
            f"{len(names)} candidates, chosen by {k}-fold cross-validated expected cost on the adaptation labels "
            "only; the evaluation part judges the one chosen (one paired test, no correction for candidates "
            "needed there; the winner's cross-validated cost is optimistic and not reported as performance)"
        ),
    )


def adapted_model(model: Any, chosen: AdaptedChallenger) -> Any:
    """The champion's :class:`~closedloop.models.trained.TrainedModel` with the challenger written
    into its head (temperature 1, threshold the challenger's): the adapted model as a model."""
    import torch

    from closedloop.models.trained import TrainedModel

    net = copy.deepcopy(model.network)
    head = getattr(net, "head", None)
    if not isinstance(head, torch.nn.Linear) or head.out_features != 1:
        raise StatsError("the adapted model needs a binary network with a linear 'head'")
    T = float(model.temperature)
    W = head.weight.detach().double().numpy()[0] / T
    b = float(head.bias.detach().double().numpy()[0]) / T if head.bias is not None else 0.0
    if chosen.head is not None:
        h = chosen.head
        v = np.asarray(h.delta) / np.asarray(h.scale)
        W2 = h.slope * W + v
        b2 = h.slope * b + h.intercept - float(v @ np.asarray(h.center))
    else:
        r = chosen.recalibration
        assert r is not None
        s, c = (1.0, 0.0) if r.method == "threshold" else (r.slope, r.intercept)
        W2, b2 = s * W, s * b + c
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(W2[None, :]).to(head.weight.dtype))
        if head.bias is None:
            head.bias = torch.nn.Parameter(torch.zeros(1))
        head.bias.fill_(b2)
    info = {**model.info, "adapted_from": model.info.get("run_id"), "adaptation": chosen.method}
    return TrainedModel(
        spec=model.spec,
        network=net,
        preprocessing=model.preprocessing,
        problem_type=model.problem_type,
        n_outputs=model.n_outputs,
        label_names=model.label_names,
        temperature=1.0,
        threshold=chosen.threshold,
        info=info,
    )
