"""The engine of tree families (``family_kind == "trees"``, e.g. ``lgbm``): LightGBM boosting behind
the same interface as :class:`~closedloop.stages.train.engine.Engine`, so every phase (sanity, ladder,
tuning with pruning, cross-validation, final fit, calibration) runs unchanged.

One "epoch" is ``rounds_per_epoch`` boosting rounds of the family: after each, the callback scores
validation with the stage's metric, keeps the best round (early stopping on validation only, with the
config's patience), calls ``on_epoch`` (Optuna pruning) and the kill point, and stops at the deadline.
``hp.epochs`` (the tuned knob) plans the rounds; a fit with early stopping (``hp.patience``) that is still
improving at its last planned epoch boosts on, epoch by epoch under the same patience, up to ``extend``
times its planned epochs (``train.tree_extend``; a network-sized epoch cap stopped diamonds' trees while
they improved, issue #25; multi-label fits are not extended); ``hp.class_weight`` becomes per-row weights; the seed of
``fit`` is LightGBM's (bagging, column sampling), with ``deterministic`` and one thread by default
(trees on a 2-core machine: one OpenMP thread per trial, issue #25). A killed tree fit restarts from
the beginning of that fit (no mid-fit checkpoint: fits take seconds, and a seeded refit is identical).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from closedloop.core.errors import ConfigError
from closedloop.core.killpoints import kill_point
from closedloop.stages.train.engine import Engine, FitResult, HParams, TensorSet

OBJECTIVES = {
    "binary": "binary",
    "multiclass": "multiclass",
    "multilabel": "multilabel",
    "ordinal": "multiclass",
    "regression": "regression",
}
"""LightGBM's objective per problem type; ``multilabel`` is the per-label logistic objective of
:mod:`closedloop.models.families.lgbm_multilabel` (one booster per label, grown in lockstep)."""
METRICS = {
    "binary": "binary_logloss",
    "multiclass": "multi_logloss",
    "regression": "l2",
    "multilabel": "None",
}


BIN_SAMPLE_ROWS = 200_000
"""LightGBM's ``bin_construct_sample_cnt``: up to this many rows, a Dataset's bins are found on every row;
above it, on a sample drawn with the fit's seed."""
DATASETS_KEPT = 4
"""How many LightGBM Datasets a tree engine keeps for reuse (:meth:`TreeEngine.dataset`): the training
split under the class weights in use, and a few others (cross-validation folds, the sanity batch)."""


class FamilyCannotTrain(ConfigError):
    """A tree family cannot train on this data (its kind, or its task), whatever its settings. Alone, the
    stage stops with it; in a family list (``family: [lgbm, mlp]``) the family is dropped with this reason
    in the decision log and the others still compete (:func:`closedloop.stages.train.families.run_families`).
    """


def _tree(net: nn.Module) -> Any:
    if not hasattr(net, "lgb_booster"):
        raise ConfigError(
            f"the tree engine trains tree families only, not {type(net).__name__} "
            "(a seed ensemble of trees is built from members trained one by one)"
        )
    return net


class TreeEngine(Engine):
    """:class:`Engine` for tree families. Args as :class:`Engine`, plus ``categorical`` (column
    indices LightGBM splits natively as categories), ``threads`` (LightGBM's, default 1) and
    ``label_threads`` (multi-label fits: None, one booster with K trees a round; a number, one booster
    per label on that many Python threads, :meth:`fit_per_label`) and ``extend`` (``train.tree_extend``:
    how many times its planned rounds a fit still improving at its end may boost, :meth:`fit`)."""

    def __init__(
        self,
        *args: Any,
        categorical: list[int] | None = None,
        threads: int = 1,
        label_threads: int | None = None,
        extend: int = 1,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        if self.problem_type not in OBJECTIVES:
            raise FamilyCannotTrain(
                f"train.family: tree families support binary, multiclass, multilabel, ordinal and "
                f"regression tasks, not {self.problem_type}; use family: mlp"
            )
        if self.problem_type == "multilabel" and self.n_logits < 2:
            raise FamilyCannotTrain(
                f"train.family: a multilabel task needs at least 2 labels for a tree family "
                f"(got {self.n_logits}); declare one label as a binary task"
            )
        self.categorical = list(categorical or [])
        self.threads = int(threads)
        self.label_threads = None if label_threads is None else int(label_threads)
        self.extend = max(1, int(extend))
        self.datasets_kept = DATASETS_KEPT + (self.n_logits if self.label_threads is not None else 0)
        """One Dataset per label too, when a multi-label fit grows one booster per label."""
        self._datasets: list[tuple[TensorSet, tuple[Any, ...], Any]] = []
        """LightGBM Datasets built so far (:meth:`dataset`): the split, what else they were built from."""

    # -- LightGBM ---------------------------------------------------------------------------------
    def lgb_params(self, tree: Any, seed: int, **over: Any) -> dict[str, Any]:
        p = dict(tree.params) | over
        out = {
            "objective": OBJECTIVES[self.problem_type],
            "metric": METRICS[OBJECTIVES[self.problem_type]],
            **p,
            "bagging_freq": 1 if p["bagging_fraction"] < 1 else 0,
            "seed": int(seed) % (2**31 - 1),
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.threads,
            "verbosity": -1,
            "feature_pre_filter": False,
        }
        if out["objective"] in ("multiclass", "multilabel"):
            out["num_class"] = self.n_logits
        if out["objective"] == "multilabel":
            del out["objective"]  # the fit passes its PerLabelLogistic (it holds that fit's targets)
        return out

    def multilabel_objective(self, data: TensorSet, hp: HParams | None) -> tuple[Any, np.ndarray]:
        """The per-label logistic objective of ``data``'s rows (class weights per label) and each
        label's log-odds start (:mod:`closedloop.models.families.lgbm_multilabel`)."""
        from closedloop.models.families.lgbm_multilabel import PerLabelLogistic, label_log_odds

        y = np.asarray(data.y_np, np.float64).reshape(len(data), -1)
        w = None
        if hp is not None and (cw := self.class_weights(hp, data)) is not None:
            w = cw.cpu().numpy().reshape(2, -1)
        return PerLabelLogistic(y, w), label_log_odds(y, w)

    def train_booster(
        self,
        params: dict[str, Any],
        data: TensorSet,
        hp: HParams | None,
        rounds: int,
        callback: Any,
        objective: tuple[Any, np.ndarray] | None = None,
        *,
        loss_every_round: bool = False,
        **ds: Any,
    ) -> Any:
        """``lgb.train`` on ``data`` with ``callback`` after each round. ``loss_every_round``: LightGBM
        scores the training loss after every round (``env.evaluation_result_list``); else the callback
        asks for it when it needs it (:meth:`train_loss`): scoring every row after every round was 15%
        of a fit on a 3,500-row table, and a fit reads it once per epoch of 20 rounds.
        ``objective``: a multi-label fit's (:meth:`multilabel_objective`); its start is the rows' init
        score, which the booster's raw scores omit until :meth:`finished` folds it in."""
        import lightgbm as lgb

        feval = None
        if objective is not None:
            params = {**params, "objective": objective[0]}
            feval = objective[0].metric
            ds["init_score"] = np.tile(objective[1], (len(data), 1))
        dtrain = self.dataset(data, hp, **ds)
        return lgb.train(
            params,
            dtrain,
            num_boost_round=rounds,
            valid_sets=[dtrain] if loss_every_round else None,
            valid_names=["training"] if loss_every_round else None,
            feval=feval if loss_every_round else None,
            callbacks=[callback],
            # lgb.train otherwise ends by writing the booster out and parsing it back (a prediction-only
            # copy); :meth:`finished` writes and parses it anyway: that round trip was 6% of a 3-label fit
            keep_training_booster=True,
        )

    @staticmethod
    def train_loss(env: Any, objective: tuple[Any, np.ndarray] | None) -> float:
        """The training loss after the current round (the objective's metric, as LightGBM reports it)."""
        return float(env.model.eval_train(feval=objective[0].metric if objective is not None else None)[0][2])

    def finished(
        self, booster: Any, objective: tuple[Any, np.ndarray] | None, num_iteration: int | None = None
    ) -> tuple[Any, str]:
        """The booster a :class:`TreeEnsemble` keeps: its first ``num_iteration`` rounds (all: None); a
        multi-label fit's start folded in and its objective declared one-vs-rest. With its model text,
        which it was read from (``TreeEnsemble.set_booster`` then writes it out no more): one write and
        one parse per fit, multi-label fits included (:func:`~closedloop.models.families.lgbm_multilabel.one_vs_rest_text`)."""
        import lightgbm as lgb

        text = booster.model_to_string(num_iteration=num_iteration)
        if objective is not None:
            from closedloop.models.families.lgbm_multilabel import one_vs_rest_text

            text = one_vs_rest_text(text, objective[1])
        return lgb.Booster(model_str=text), text

    def dataset(
        self, data: TensorSet, hp: HParams | None, *, init_score: np.ndarray | None = None, **params: Any
    ) -> Any:
        import lightgbm as lgb

        y = np.asarray(data.y_np)
        weight = None
        if self.problem_type == "multilabel":  # the targets and weights are the objective's (K columns)
            label = np.zeros(len(y))
        elif self.problem_type == "regression":
            label = y.reshape(len(y), -1)[:, 0]
        else:
            label = y.reshape(len(y))
        if (
            self.problem_type != "multilabel"
            and hp is not None
            and (w := self.class_weights(hp, data)) is not None
        ):
            w = w.cpu().numpy()
            if self.problem_type == "binary":
                yb = label.astype(np.float64)
                weight = yb * w[1].reshape(-1)[0] + (1 - yb) * w[0].reshape(-1)[0]
            else:
                weight = w[label.astype(np.int64)]
        key = (
            tuple(sorted(params.items())),
            None if weight is None else np.asarray(weight, np.float64).tobytes(),
            None if init_score is None else np.asarray(init_score, np.float64).tobytes(),
        )
        for rows, built_from, ds in self._datasets:
            if rows is data and built_from == key:
                return ds
        ds = lgb.Dataset(
            data.x.numpy(),
            label=label,
            weight=weight,
            init_score=init_score,
            categorical_feature=self.categorical or "auto",
            params={"verbosity": -1, "feature_pre_filter": False, **params},
            free_raw_data=False,
        )
        # the phases fit one split many times (ladder rungs, trials): LightGBM bins it once. A Dataset's
        # bins depend on its rows and these parameters alone (not on a fit's leaves, minimum leaf size
        # with feature_pre_filter off, or seed below 200,000 rows), so a reused one grows the same trees
        # (tests/train/test_train_tree_speed.py); the rows are this very split object, kept alive here
        self._datasets = [*self._datasets[-(self.datasets_kept - 1) :], (data, key, ds)]
        return ds

    # -- the Engine interface -----------------------------------------------------------------------
    def fit(
        self,
        net: nn.Module,
        train: TensorSet,
        val: TensorSet | None,
        hp: HParams,
        *,
        seed: int,
        checkpoint: Path | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        deadline: float | None = None,
        restore_best: bool = True,
        max_steps: int | None = None,
        label: str | None = None,
        replan: Callable[[float, float], int] | None = None,  # rounds are not re-planned: the deadline cuts
    ) -> FitResult:
        import lightgbm as lgb

        t0 = time.time()
        tree = _tree(net)
        rpe = tree.rounds_per_epoch
        rounds = rpe * max(1, hp.epochs) if max_steps is None else max(1, max_steps)
        params = self.lgb_params(tree, seed)
        objective = self.multilabel_objective(train, hp) if self.problem_type == "multilabel" else None
        has_val = val is not None and len(val) > 0
        # boosting on past the plan needs a validation score to stop on; multi-label fits keep their plan
        extend = self.extend if (has_val and hp.patience is not None and max_steps is None) else 1
        limit = rounds * (extend if self.problem_type != "multilabel" else 1)
        xv = val.x.numpy() if has_val else None
        val_raw = np.zeros((len(val) if has_val else 0, self.n_logits), np.float64)
        if objective is not None:  # the raw scores omit the start (init score) until finished()
            val_raw += objective[1][None, :]
        history: list[dict[str, float]] = []
        state: dict[str, Any] = {
            "best": -math.inf,
            "best_round": 0,
            "bad": 0,
            "done": 0,
            "stopped": "completed",
            "best_raw": None,
        }

        def epoch_end(r: int, train_loss: float, chunk: Any) -> bool:
            """The stage's work after round ``r`` ends an epoch; True: stop boosting. ``chunk(start, n)``:
            the raw validation scores of rounds ``[start, start + n)``."""
            rec: dict[str, float] = {"epoch": len(history) + 1, "train_loss": train_loss}
            rec["lr"] = float(params["learning_rate"])
            if has_val:
                val_raw[:] += np.asarray(chunk(state["done"], r - state["done"])).reshape(len(xv), -1)
                state["done"] = r
                ev = self.evaluate(val_raw.astype(np.float32), val)
                rec.update({f"val_{k}": v for k, v in ev.items()})
                sc = self.selection_score(ev)
            else:
                sc = -train_loss if math.isfinite(train_loss) else -math.inf
            history.append(rec)
            if sc > state["best"] or state["best_round"] == 0:
                state.update(best=sc, best_round=r, bad=0, best_raw=val_raw.copy() if has_val else None)
            else:
                state["bad"] += 1
            if label is not None:
                kill_point(f"{label}/epoch{rec['epoch']}")
            if on_epoch is not None:
                on_epoch(int(rec["epoch"]), rec)
            if hp.patience is not None and has_val and state["bad"] >= hp.patience:
                state["stopped"] = "early_stopped"
                return True
            if r == rounds < limit and state["best_round"] != r:
                return True  # not improving at its last planned epoch: the plan stands ("completed")
            if deadline is not None and time.time() > deadline and r < limit:
                state["stopped"] = "time_budget"
                return True
            return False

        # above BIN_SAMPLE_ROWS rows LightGBM bins a sample drawn with the fit's seed: a Dataset per seed
        ds = {"seed": params["seed"]} if len(train) > BIN_SAMPLE_ROWS else {}
        if objective is not None and self.label_threads is not None:
            text = self.fit_per_label(
                params, train, hp, rounds, rpe, objective, epoch_end, has_val, restore_best, state, ds, xv
            )
            tree.set_booster(lgb.Booster(model_str=text), text)
            keep = state["keep"]
        else:

            def per_round(env: Any) -> None:
                r = env.iteration + 1
                if r % rpe and r != limit:
                    return
                chunk = lambda a, n: env.model.predict(xv, raw_score=True, start_iteration=a, num_iteration=n)  # noqa: E731
                if epoch_end(r, self.train_loss(env, objective), chunk):
                    raise lgb.callback.EarlyStopException(r, [])

            booster = self.train_booster(params, train, hp, limit, per_round, objective, **ds)
            keep = state["best_round"] if (restore_best and has_val) else booster.current_iteration()
            tree.set_booster(*self.finished(booster, objective, max(1, keep)))
        val_logits = None
        if has_val:  # the kept round's scores, summed epoch by epoch above: no second pass over val
            raw = state["best_raw"] if keep == state["best_round"] else None
            val_logits = self.head_logits(tree, raw) if raw is not None else self.predict_logits(net, val)
        return FitResult(
            history=history,
            best_epoch=max(1, math.ceil(keep / rpe)) if has_val else len(history),
            best_score=float(state["best"]) if has_val else None,
            stopped=str(state["stopped"]),
            seconds=time.time() - t0,
            val_logits=val_logits,
        )

    def fit_per_label(
        self,
        params: dict[str, Any],
        train: TensorSet,
        hp: HParams,
        rounds: int,
        rpe: int,
        objective: tuple[Any, np.ndarray],
        epoch_end: Callable[[int, float, Any], bool],
        has_val: bool,
        restore_best: bool,
        state: dict[str, Any],
        ds: dict[str, Any],
        xv: np.ndarray | None,
    ) -> str:
        """A multi-label fit as one booster per label on ``label_threads`` threads
        (:class:`~closedloop.models.families.lgbm_multilabel.LabelBoosters`), epoch by epoch in lockstep
        (the stage's work between epochs runs here, in the caller's thread). Returns the kept rounds'
        one-vs-rest model text; ``state["keep"]``: how many rounds it keeps."""
        from closedloop.models.families.lgbm_multilabel import LabelBoosters, one_vs_rest_text

        fit_objective, init = objective
        datasets = [self.dataset(train, hp, init_score=np.full(len(train), s), **ds) for s in init]
        labels = LabelBoosters(params, datasets, fit_objective, int(self.label_threads or 1))
        try:
            r = 0
            while r < rounds:
                n = min(rpe - r % rpe, rounds - r)
                labels.advance(n)
                r += n
                loss = float(fit_objective.loss(labels.train_raw()))
                if epoch_end(r, loss, lambda a, n: labels.raw(xv, a, n)):
                    break
            state["keep"] = state["best_round"] if (restore_best and has_val) else labels.current_iteration()
            return one_vs_rest_text(labels.text(max(1, state["keep"])), init)
        finally:
            labels.close()

    @staticmethod
    def head_logits(tree: Any, raw: np.ndarray) -> np.ndarray:
        """Logits ``(N, n_logits)`` float32 from the booster's raw scores ``raw`` through the tree's head
        (the identity until calibration), as :meth:`predict_logits` gives them."""
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(raw, np.float32)).to(tree.head.weight.device)
            return tree.head(x).float().cpu().numpy()

    def logits_by_epoch(self, net: nn.Module, data: TensorSet, epochs: int) -> np.ndarray:
        """``(epochs, N, n_logits)``: the fitted model's logits on ``data`` after each epoch's rounds (a
        fit cut short by the deadline keeps its last round for the epochs it did not reach). Cross-
        validation picks a tree configuration's round count on these (:mod:`.phases.cross_validate`)."""
        tree = _tree(net)
        booster = tree.lgb_booster()
        x = data.x.numpy().reshape(len(data), -1).astype(np.float32)
        total = booster.current_iteration() if booster is not None else 0
        raw = np.zeros((len(data), self.n_logits), np.float64)
        weight = tree.head.weight.detach().cpu().double().numpy()
        bias = tree.head.bias.detach().cpu().double().numpy()
        out = np.zeros((epochs, len(data), self.n_logits), np.float32)
        done = 0
        for e in range(epochs):
            upto = min(total, (e + 1) * tree.rounds_per_epoch)
            if upto > done and len(data):
                chunk = booster.predict(
                    x, raw_score=True, start_iteration=done, num_iteration=upto - done, num_threads=1
                )
                raw += np.asarray(chunk, np.float64).reshape(len(data), self.n_logits)
                done = upto
            out[e] = raw @ weight.T + bias
        return out

    def overfit_batch(
        self, net: nn.Module, batch: TensorSet, *, steps: int, lr: float, deadline: float, label: str
    ) -> list[float]:
        """The sanity check for trees: boost on the batch alone with no minimum leaf size (LightGBM's
        learning rate, at least 0.3, not the network's ``sanity_lr``), the training loss after each
        round, until it reaches 5% of the first (0.02 at least) or ``steps`` rounds."""
        import lightgbm as lgb

        tree = _tree(net)
        params = self.lgb_params(
            tree,
            0,
            learning_rate=max(0.3, tree.params["learning_rate"]),
            min_child_samples=1,
            # LightGBM's own minimum, not 0: with 0 a split could leave a side empty on a categorical
            # column ("Check failed: best_split_info.left_count > 0"; nwtco split seed 1, session 14)
            min_sum_hessian_in_leaf=1e-3,
            min_data_in_bin=1,
            # LightGBM's categorical regularizers (100 rows per category group, smoothing) forbid the
            # splits that tell 32 rows apart by a category: the check asks whether the family can fit
            min_data_per_group=1,
            cat_smooth=0.0,
            cat_l2=0.0,
            feature_fraction=1.0,
            bagging_fraction=1.0,
            reg_lambda=0.0,
            reg_alpha=0.0,
        )
        objective = self.multilabel_objective(batch, None) if self.problem_type == "multilabel" else None
        losses: list[float] = []

        def per_round(env: Any) -> None:
            kill_point(f"{label}/step{env.iteration}")
            v = float(env.evaluation_result_list[0][2])
            losses.append(v)
            target = max(0.05 * losses[0], 0.02) if self.problem_type != "regression" else 0.05 * losses[0]
            if not math.isfinite(v) or v <= target or time.time() > deadline:
                raise lgb.callback.EarlyStopException(env.iteration + 1, env.evaluation_result_list)

        booster = self.train_booster(
            params,
            batch,
            None,
            steps,
            per_round,
            objective,
            loss_every_round=True,
            min_data_in_bin=1,
            min_child_samples=1,
        )
        tree.set_booster(*self.finished(booster, objective))
        return losses

    def lr_range_test(self, *args: Any, **kw: Any) -> tuple[list[float], list[float], float]:
        raise ConfigError(
            "train.lr_finder: the LR range test is for networks trained by gradient descent; tree "
            "families tune learning_rate directly (set lr_finder: false)"
        )
