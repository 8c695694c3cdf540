"""The adapted challengers ``closedloop adapt`` tries, and the choice among them.

Candidates (``--challengers``): ``recalibration`` (threshold at the task's costs, Platt,
temperature: :mod:`closedloop.stats.recalibration`), ``head`` (the last layer fine-tuned toward
the champion's, one candidate per penalty in :data:`closedloop.adapt.head.L2_GRID`:
:mod:`closedloop.adapt.head`) and ``finetune`` (the network fine-tuned from the champion's weights
with the champion's training data replayed, one candidate per recipe in
:data:`closedloop.adapt.finetune.FINETUNE_GRID`: :mod:`closedloop.adapt.finetune`; torch, the
only family that needs the images). Every candidate is scored by stratified k-fold cross-validated
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, PrivateAttr
from scipy.special import expit

from closedloop.adapt.finetune import FINETUNE_GRID, FinetuneFit, FinetuneSpec
from closedloop.adapt.head import L2_GRID, HeadFit, fit_head
from closedloop.adapt.retrain import RetrainFit
from closedloop.stats.class_recalibration import CLASS_METHODS, ClassRecalibration, fit_class_recalibration
from closedloop.stats.errors import StatsError
from closedloop.stats.recalibration import (
    METHODS,
    Recalibration,
    fit_recalibration,
    stratified_folds,
)

Family = Literal["recalibration", "head", "finetune"]
FAMILIES: tuple[Family, ...] = ("recalibration", "head", "finetune")
TORCH_FREE: tuple[Family, ...] = ("recalibration", "head")
"""Families that need only the champion's logits and features (seconds, no torch)."""


@dataclass(frozen=True)
class FinetuneData:
    """What the ``finetune`` family needs beyond logits: the champion, the adaptation images, and the
    champion's training data to replay (``None``: production labels only)."""

    model: Any
    X: Any
    replay: tuple[np.ndarray, np.ndarray] | None


class AdaptedChallenger(BaseModel):
    """One adapted challenger: its probabilities from the champion's logit ``z`` and features
    ``phi``, and its decision at its own threshold (re-chosen on production labels)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str
    """``threshold``, ``platt``, ``temperature``, ``head``, ``finetune`` or ``retrain``."""
    recalibration: Recalibration | None = None
    """For ``finetune``: the Platt map fitted on out-of-fold logits, folded into its head."""
    head: HeadFit | None = None
    finetune: FinetuneFit | None = None
    retrain: RetrainFit | None = None
    """The retrained challenger (:mod:`closedloop.adapt.retrain`): its own run, scored by its network."""
    classes: ClassRecalibration | None = None
    """A multi-class model's recalibration (class offsets, temperature or scales on its logits)."""
    threshold: float | None = None
    """The served decision of a binary model: P(pos) >= threshold (re-chosen on production labels);
    ``None`` for a multi-class one, which decides by the largest probability."""
    _network: Any = PrivateAttr(default=None)
    """``finetune``/``retrain``: the challenger's own :class:`~closedloop.models.trained.TrainedModel`."""

    def own_network(self) -> bool:
        """Whether it scores inputs with its own network (fine-tuned or retrained), not the champion's."""
        return self.finetune is not None or self.retrain is not None

    def proba(self, z: np.ndarray, phi: np.ndarray | None, X: Any = None) -> np.ndarray:
        """P(pos) from the champion's logit ``z`` and features ``phi``; a fine-tuned or retrained
        challenger scores the inputs ``X`` with its own network. Multi-class: ``(N, K)`` probabilities
        from the champion's logits ``(N, K)``."""
        if self.classes is not None:
            return self.classes.apply(z)
        if self.own_network():
            if self._network is None or X is None:
                raise StatsError(f"a {self.method} challenger scores inputs with its own network: pass X")
            return np.asarray(self._network.predict_proba(X), np.float64)[:, 1]
        if self.head is not None:
            if phi is None:
                raise StatsError("a head challenger needs the champion's features")
            return self.head.proba(z, phi)
        assert self.recalibration is not None
        return self.recalibration.apply(expit(np.asarray(z, np.float64)))

    def decide(self, z: np.ndarray, phi: np.ndarray | None, X: Any = None) -> np.ndarray:
        """Binary: P(pos) >= threshold; multi-class: the class index of the largest probability."""
        if self.classes is not None:
            return self.classes.predict(z)
        return self.proba(z, phi, X) >= self.threshold

    def describe(self) -> str:
        if self.classes is not None:
            return self.classes.describe() + "; decision: the most probable class"
        if self.retrain is not None:
            t = self.retrain
            how = (
                f"run {Path(t.run_dir).name}; its own run chose "
                f"{'none' if t.own_threshold is None else f'{t.own_threshold:.4f}'} on in-distribution validation"
                if t.run_dir is not None
                else f"trained further from the champion's weights on its training split, {t.spec.epochs} "
                f"epoch(s) at lr {t.spec.lr:g} on {t.device}"
            )
            where = (
                f"the out-of-fold scores of those {len(t.calibration_rows)} labels (two warm starts on swapped "
                "halves, each scoring the half it never trained on)"
                if t.spec.threshold_fit != "held_out"
                else f"{len(t.calibration_rows)} production labels it never trained on"
            ) + (
                ""
                if not t.spec.smoothed
                else f", read off their Platt map (slope {t.threshold_map[0]:.3f}, intercept {t.threshold_map[1]:.3f})"
                if t.threshold_map is not None
                else ", their cost minimum (the Platt map's slope was not positive)"
            )
            return (
                f"retrained with {len(t.fit_rows)} production labels added to train ({t.spec.describe()}: "
                f"{t.n_added} samples; {how}), threshold {self.threshold:.4f} at the task's costs on {where}"
            )
        if self.finetune is not None:
            f, r = self.finetune, self.recalibration
            assert r is not None
            return (
                f"network fine-tuned from the champion's weights ({f.spec.name()}, {f.spec.epochs} epochs, lr "
                f"{f.spec.lr:g}, {f.trained_parameters:,} parameters trained, |change| {f.weight_change:.3f}), "
                f"operating point from its out-of-fold logits: {r.method} (slope {r.slope:.3f}, intercept "
                f"{r.intercept:.3f}), threshold {self.threshold:.4f}"
            )
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
    oof_costs: list[float] = []
    """The chosen candidate's out-of-fold cost of each adaptation label (compared with the retrained
    challenger's on its calibration rows)."""


def _candidates(families: tuple[str, ...]) -> list[str]:
    bad = [f for f in families if f not in FAMILIES]
    if bad:
        raise StatsError(f"unknown challenger family {bad}; expected some of {', '.join(FAMILIES)}")
    names: list[str] = []
    if "recalibration" in families:
        names += list(METHODS)
    if "head" in families:
        names += [f"head(l2={v:g})" for v in L2_GRID]
    if "finetune" in families:
        names += [f"{spec.name()}+{m}" for spec in FINETUNE_GRID for m in FINETUNE_MAPS]
    return names


FINETUNE_MAPS = ("platt", "threshold")
"""How a fine-tuned network's out-of-fold logits set its operating point: a Platt map and the Bayes
threshold, or the threshold at the task's costs read off them directly (each a candidate)."""


def _finetune_spec(name: str) -> tuple[FinetuneSpec, str] | None:
    """``(recipe, map)`` of a fine-tune candidate's name, ``None`` for other candidates."""
    for spec in FINETUNE_GRID:
        for m in FINETUNE_MAPS:
            if name == f"{spec.name()}+{m}":
                return spec, m
    return None


def _finetuned(
    spec: FinetuneSpec,
    how: str,
    y: np.ndarray,
    z_oof: np.ndarray,
    data: FinetuneData,
    costs: tuple[float, float],
    seed: int,
) -> AdaptedChallenger:
    """The network fine-tuned on every adaptation label, with the operating point its out-of-fold
    logits give (``how``: a Platt map folded into its head, or a threshold read off them)."""
    import torch

    from closedloop.adapt.finetune import fine_tune

    tuned, fit = fine_tune(data.model, data.X, y, spec, costs=costs, replay=data.replay, seed=seed)
    rec = fit_recalibration(y, expit(z_oof), how, costs=costs)  # type: ignore[arg-type]
    if how == "platt":
        with torch.no_grad():
            tuned.network.head.weight.mul_(rec.slope)
            tuned.network.head.bias.mul_(rec.slope).add_(rec.intercept)
    tuned.threshold = rec.threshold
    out = AdaptedChallenger(method="finetune", recalibration=rec, finetune=fit, threshold=rec.threshold)
    out._network = tuned
    return out


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
    families: tuple[str, ...] = TORCH_FREE,
    folds: int = 5,
    seed: int = 0,
    finetune: FinetuneData | None = None,
) -> ChallengerChoice:
    """Cross-validate every candidate on the same stratified folds, refit the best (module docstring).
    ``finetune`` (the champion, the adaptation images, replay data) is needed for that family."""
    from closedloop.adapt.finetune import cross_fit

    y = np.asarray(y_true).reshape(-1).astype(int)
    z = np.asarray(z, np.float64).reshape(-1)
    phi = None if phi is None else np.asarray(phi, np.float64)
    names = _candidates(tuple(families))
    if phi is None:
        names = [n for n in names if not n.startswith("head")]
    if finetune is None:
        names = [n for n in names if _finetune_spec(n) is None]
    fold, k = stratified_folds(y, folds, seed, what="choosing a challenger from adaptation labels")
    cv: dict[str, float] = {}
    oof: dict[str, np.ndarray] = {}
    rows: dict[str, np.ndarray] = {}
    for name in names:
        cost = 0.0
        row = np.zeros(len(y))
        ft = _finetune_spec(name)
        if ft is not None:
            assert finetune is not None
            spec, how = ft
            # out-of-fold logits of the fine-tune (once per recipe); each fold's decision uses the
            # map fitted on the other folds' out-of-fold logits (nested: no fold judges a map fitted
            # on itself)
            try:
                if spec.name() not in oof:
                    oof[spec.name()] = cross_fit(
                        finetune.model,
                        finetune.X,
                        y,
                        fold,
                        spec,
                        costs=costs,
                        replay=finetune.replay,
                        seed=seed,
                    )
                zf = oof[spec.name()]
                for f in range(k):
                    tr, te = fold != f, fold == f
                    r = fit_recalibration(y[tr], expit(zf[tr]), how, costs=costs)  # type: ignore[arg-type]
                    row[te] = _row_costs(y[te], r.apply(expit(zf[te])) >= r.threshold, costs)
                cost = float(row.sum())
            except StatsError:
                cost = float("inf")
            cv[name] = cost / len(y)
            rows[name] = row
            continue
        for f in range(k):
            tr, te = fold != f, fold == f
            try:
                c = fit_candidate(name, y[tr], z[tr], None if phi is None else phi[tr], costs)
            except StatsError:
                cost = float("inf")
                break
            row[te] = _row_costs(y[te], c.decide(z[te], None if phi is None else phi[te]), costs)
            cost = float(row.sum())
        cv[name] = cost / len(y)
        rows[name] = row
    best = min(names, key=lambda n: (cv[n], names.index(n)))
    best_ft = _finetune_spec(best)
    if best_ft is not None:
        assert finetune is not None
        spec, how = best_ft
        chosen = _finetuned(spec, how, y, oof[spec.name()], finetune, costs, seed)
    else:
        chosen = fit_candidate(best, y, z, phi, costs)
    return _chosen_by_cv(chosen, cv, rows[best], k, "expected cost")


def _chosen_by_cv(
    chosen: AdaptedChallenger, cv: dict[str, float], oof: np.ndarray, k: int, criterion: str
) -> ChallengerChoice:
    """The choice made by ``k``-fold cross-validated ``criterion`` over the candidates of ``cv``, recorded
    with where its optimism stays."""
    return ChallengerChoice(
        chosen=chosen,
        cv_cost=cv,
        folds=k,
        candidates=len(cv),
        oof_costs=oof.tolist(),
        selection=(
            f"{len(cv)} candidates, chosen by {k}-fold cross-validated {criterion} on the adaptation labels "
            "only; the evaluation part judges the one chosen (one paired test, no correction for candidates "
            "needed there; the winner's cross-validated score is optimistic and not reported as performance)"
        ),
    )


def choose_class_challenger(y_true: Any, z: Any, *, folds: int = 5, seed: int = 0) -> ChallengerChoice:
    """A multi-class model's challenger: each method of :mod:`closedloop.stats.class_recalibration`
    cross-validated on the same stratified folds of the adaptation labels by its error rate (the expected
    cost per case at unit costs), the lowest refitted on all of them (ties: the simpler, listed first)."""
    y = np.asarray(y_true).reshape(-1).astype(int)
    z = np.asarray(z, np.float64)
    fold, k = stratified_folds(y, folds, seed, what="choosing a challenger from adaptation labels")
    cv: dict[str, float] = {}
    rows: dict[str, np.ndarray] = {}
    for name in CLASS_METHODS:
        row = np.zeros(len(y))
        for f in range(k):
            tr, te = fold != f, fold == f
            r = fit_class_recalibration(y[tr], z[tr], name)
            row[te] = r.predict(z[te]) != y[te]
        cv[name], rows[name] = float(row.mean()), row
    best = min(CLASS_METHODS, key=lambda n: (cv[n], CLASS_METHODS.index(n)))
    chosen = AdaptedChallenger(method=best, classes=fit_class_recalibration(y, z, best))
    return _chosen_by_cv(chosen, cv, rows[best], k, "error rate")


def _row_costs(y: np.ndarray, d: np.ndarray, costs: tuple[float, float]) -> np.ndarray:
    """Each case's cost: ``cost_fp`` per false alarm, ``cost_fn`` per miss, 0 when right."""
    d = np.asarray(d).astype(bool)
    return np.where(d & (y == 0), costs[0], np.where(~d & (y == 1), costs[1], 0.0))


def adapted_model(model: Any, chosen: AdaptedChallenger) -> Any:
    """The champion's :class:`~closedloop.models.trained.TrainedModel` with the challenger written
    into its head (temperature 1, threshold the challenger's): the adapted model as a model."""
    import torch

    if chosen.own_network():
        if chosen._network is None:
            raise StatsError(f"this {chosen.method} challenger was read from JSON: its network was not kept")
        return chosen._network
    net = copy.deepcopy(model.network)
    head = getattr(net, "head", None)
    k = 1 if chosen.classes is None else len(chosen.classes.bias)
    if not isinstance(head, torch.nn.Linear) or head.out_features != k:
        what = "a binary network" if k == 1 else f"a network of {k} logits"
        raise StatsError(f"the adapted model needs {what} with a linear 'head'")
    T = float(model.temperature)
    if chosen.classes is not None:  # scale * (W x + b) / T + offset, one row per class
        s, c = np.asarray(chosen.classes.scale), np.asarray(chosen.classes.bias)
        Wk = head.weight.detach().double().numpy() * (s / T)[:, None]
        bk = s * (head.bias.detach().double().numpy() / T if head.bias is not None else 0.0) + c
        return _with_head(model, net, head, Wk, bk, chosen)
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
    return _with_head(model, net, head, W2[None, :], np.array([b2]), chosen)


def _with_head(
    model: Any, net: Any, head: Any, W: np.ndarray, b: np.ndarray, chosen: AdaptedChallenger
) -> Any:
    """The champion as a :class:`~closedloop.models.trained.TrainedModel` with ``net`` (a copy of its network)
    whose linear ``head`` now holds ``W``, ``b``: temperature 1, the challenger's threshold."""
    import torch

    from closedloop.models.trained import TrainedModel

    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(W).to(head.weight.dtype))
        if head.bias is None:
            head.bias = torch.nn.Parameter(torch.zeros(len(b)))
        head.bias.copy_(torch.from_numpy(b).to(head.bias.dtype))
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
