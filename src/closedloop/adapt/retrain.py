"""The retrained challenger of ``closedloop adapt --challengers ...,retrain``.

The recalibration, last-layer and fine-tune challengers start from the champion's network. This one
is the existing retrain path (:func:`closedloop.stages.monitor.retrain.resolve_retrain_config`: the
champion's own saved ``config.yaml``, its ``data:`` section wrapped in the ``augmented`` source)
with production labels added to train:

1. the adaptation part is split again (stratified, seeded, recorded) into a **fit** part, added to
   the champion's training split ``weight`` times (the declared weight: each production sample
   counts as ``weight`` training samples), and a **calibration** part the retrained model never sees;
2. ``mode="pipeline"``: the pipeline reruns in the champion's runs folder (a new run next to it, its
   test opening in the same test ledger), with ``overrides`` in ``closedloop run --set`` form (e.g. a
   smaller budget); ``mode="warm_start"``: the champion's network is trained further from its weights
   on its own training split with the fit part added (:mod:`closedloop.adapt.warm_retrain`: no new
   search, seconds to tens of seconds);
3. its **operating point** is the threshold at the task's costs on the calibration part: production
   labels, never data the model trained on (its own run's threshold comes from in-distribution
   validation data, which is what the issue found wrong after a shift). ``threshold_fit="cross_fit"``
   (warm start only) uses every adaptation label for both: a warm start on the fit part scores the
   calibration part and one on the calibration part scores the fit part (out-of-fold scores for
   every label); the shipped warm start trains on ALL the adaptation labels and its threshold is set
   on those out-of-fold scores (three warm starts instead of one; the threshold then rests on twice
   the labels, at the price of scores from models trained on half of them, whose scores need not
   be distributed like the shipped model's). ``"cross_fit_half"`` ships the warm start on the fit
   part (the ``held_out`` model) with the threshold on the same out-of-fold scores: its own on the
   calibration part and its twin's (the same recipe on the calibration part) on the fit part, two
   exchangeable models, so every score the threshold reads comes from a model like the shipped one
   (two warm starts). ``"cross_fit_platt"`` and ``"cross_fit_half_platt"`` (session 13) ship the same
   networks but read the threshold off a Platt map fitted on the same out-of-fold scores (a logistic
   fit of the label on the score's logit: two parameters from every label) where it reaches the task's
   Bayes cost ratio, instead of the raw empirical cost minimum (which rests on the few labels near the
   cut: at a false-negative cost of 5, on the one or two positives scored lowest);
4. its score for the choice against the other challengers is its expected cost on the calibration
   part with the threshold cross-fitted there (each fold decided by a threshold fitted on the other
   folds), compared with the other challengers' out-of-fold costs on the same rows
   (:func:`closedloop.adapt.run.run_adapt`). The evaluation part is never read here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from closedloop.adapt.arguments import WARM_START_THRESHOLD, WARM_START_WEIGHT
from closedloop.core.errors import ConfigError, DataError, RunDirError
from closedloop.monitoring.production_labels import ProductionLabels
from closedloop.stats.errors import StatsError


class RetrainSpec(BaseModel):
    """How the retrained challenger is made (declared before any evaluation label is read)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    calibration_fraction: float = Field(0.5, gt=0, lt=1)
    """Share of the adaptation part kept out of training to set the threshold on."""
    weight: int = Field(1, ge=1, le=1000)
    """Each production sample is added to train this many times (left out: 1 for a pipeline rerun,
    :data:`WARM_START_WEIGHT` for a warm start)."""
    overrides: tuple[str, ...] = ()
    """``closedloop run --set`` overrides of the champion's config for the retrain (e.g.
    ``train.budget_minutes=5``); ``pipeline`` mode only."""
    mode: Literal["pipeline", "warm_start"] = "pipeline"
    """``pipeline``: the champion's config rerun (a new search and final fit, minutes);
    ``warm_start``: the champion's network trained further from its weights on its training split plus
    the production samples (seconds to tens of seconds: :mod:`closedloop.adapt.warm_retrain`)."""
    epochs: int = Field(1, ge=1, le=100)
    """``warm_start``: passes over the training split with the production samples added (1, Adam's
    ``lr`` 5e-4 and ``weight`` 5 were chosen on bench_shift_recovery's development half:
    docs/results/shift_recovery_dev.txt)."""
    lr: float = Field(5e-4, gt=0, le=1)
    """``warm_start``: Adam's learning rate."""
    batch_size: int = Field(64, ge=2)
    """``warm_start``: rows per step."""
    threshold_fit: Literal[
        "held_out", "cross_fit", "cross_fit_half", "cross_fit_platt", "cross_fit_half_platt"
    ] = "held_out"
    """How the threshold at the task's costs is set (module docstring, step 3): ``held_out``, on the
    calibration part the model never trained on; ``cross_fit`` (``warm_start`` only), on out-of-fold
    scores of every adaptation label, the shipped model trained on all of them; ``cross_fit_half``
    (``warm_start`` only), on the same out-of-fold scores, the shipped model the one on the fit part;
    ``*_platt``: the same networks, the threshold where a Platt map of those out-of-fold scores reaches
    the task's Bayes cost ratio (:func:`cost_threshold`). Left out: :data:`WARM_START_THRESHOLD` for a
    warm start, ``held_out`` for a pipeline rerun."""

    @property
    def smoothed(self) -> bool:
        """Whether the threshold is read off a Platt map of the scores (``*_platt``)."""
        return self.threshold_fit.endswith("_platt")

    @property
    def ships_all(self) -> bool:
        """Whether a cross-fitted warm start ships the network trained on every adaptation label."""
        return self.threshold_fit in ("cross_fit", "cross_fit_platt")

    @model_validator(mode="before")
    @classmethod
    def _weight_of_the_mode(cls, data: Any) -> Any:
        if isinstance(data, dict):
            warm = data.get("mode") == "warm_start"
            if data.get("weight") is None:
                data = {**data, "weight": WARM_START_WEIGHT if warm else 1}
            if data.get("threshold_fit") is None:
                data = {**data, "threshold_fit": WARM_START_THRESHOLD if warm else "held_out"}
        return data

    def describe(self) -> str:
        if self.mode == "pipeline":
            return f"pipeline rerun, weight {self.weight}"
        how = {
            "cross_fit": ", threshold cross-fitted",
            "cross_fit_half": ", threshold cross-fitted (fit half)",
            "cross_fit_platt": ", threshold cross-fitted, Platt-smoothed",
            "cross_fit_half_platt": ", threshold cross-fitted (fit half), Platt-smoothed",
        }.get(self.threshold_fit, "")
        return f"warm start, weight {self.weight}, {self.epochs} epoch(s), lr {self.lr:g}{how}"


class RetrainFit(BaseModel):
    """What the retrain did (``challenger.json`` -> ``retrain``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: RetrainSpec
    run_dir: str | None
    """The retrained run (next to the champion); ``None`` for a warm start (no run)."""
    fit_rows: list[int]
    """Rows of the adaptation part added to train (``cross_fit``: every row)."""
    calibration_rows: list[int]
    """Rows of the adaptation part the threshold was chosen on, scored by a model that never trained
    on them (``cross_fit``, ``cross_fit_half``: every row, each scored by the warm start on the other
    half)."""
    n_added: int
    """Training samples added (``len(fit_rows) * weight``)."""
    own_threshold: float | None
    """The threshold the retrained run chose on its own (in-distribution) validation data, replaced."""
    calibration_cost: float
    """Expected cost per case on the calibration part, threshold cross-fitted there."""
    threshold_map: tuple[float, float] | None = None
    """``*_platt``: (slope, intercept) of the Platt map on the scores' logit the threshold was read
    off; ``None`` otherwise, or where the fitted slope was not positive (the map would reverse the
    ranking; the empirical cost minimum was used instead)."""
    seconds: float
    device: str = "cpu"
    """Where a warm start trained (``cuda`` when there is one)."""


def check_retrain_config(run_dir: Path, spec: RetrainSpec) -> None:
    """Fail before any fitting when the champion has no config to rerun or an override is wrong
    (a ConfigError naming the ``--retrain-set`` value, from the pipeline's own validation)."""
    cfg = Path(run_dir) / "config.yaml"
    if not cfg.is_file():
        raise RunDirError(
            f"{cfg} not found: the retrained challenger reruns the champion's own config; leave 'retrain' out "
            "of --challengers for a bare model folder"
        )
    if spec.threshold_fit != "held_out" and spec.mode != "warm_start":
        raise ConfigError(
            f"--retrain-threshold {spec.threshold_fit}: cross-fitting trains two or three models (two on "
            "swapped halves, for cross_fit one more on all labels); it is offered for --retrain-mode warm_start "
            "only (a pipeline rerun takes minutes each)"
        )
    if spec.mode == "warm_start":
        if spec.overrides:
            raise ConfigError(
                f"--retrain-set {' '.join(spec.overrides)}: overrides change the config of a pipeline rerun; "
                "a warm-start retrain (--retrain-mode warm_start) reruns no config (use --retrain-epochs, "
                "--retrain-lr)"
            )
        return
    from closedloop.core.pipeline import Pipeline
    from closedloop.stages.monitor.retrain import resolve_retrain_config

    raw, _ = resolve_retrain_config(cfg, Path(run_dir), list(spec.overrides))
    Pipeline.from_dict(raw, where=f"{cfg} with --retrain-set {' '.join(spec.overrides) or '(none)'}")


def split_for_retrain(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, calibration rows) of the adaptation part: stratified, seeded; each part keeps at
    least 2 of each class (else a DataError saying how many are needed)."""
    rng = np.random.default_rng([seed, 41])
    cal: list[int] = []
    for c in np.unique(y):
        pool = rng.permutation(np.flatnonzero(y == c))
        cal += pool[: int(round(fraction * len(pool)))].tolist()
    cal_arr = np.sort(np.asarray(cal, int))
    fit_arr = np.setdiff1d(np.arange(len(y)), cal_arr)
    counts = {
        n: np.bincount(y[i], minlength=2).tolist() for n, i in (("fit", fit_arr), ("calibration", cal_arr))
    }
    if min(min(v) for v in counts.values()) < 2 or len(np.unique(y)) < 2:
        raise DataError(
            f"the retrained challenger splits the {len(y)} adaptation labels into a part added to train and a "
            f"part that sets its threshold; per class {counts}: each needs at least 2 of every class (label more "
            "production samples, or leave 'retrain' out of --challengers)"
        )
    return fit_arr, cal_arr


def write_labeled(part: ProductionLabels, names: list[str], folder: Path, weight: int) -> int:
    """The production samples in the ``augmented`` source's format, each ``weight`` times: class
    subfolders of PNG files (images) or a CSV with a ``label`` column (tables). Returns the count."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(part.X, pd.DataFrame):
        df = pd.concat([part.X.assign(label=[names[int(v)] for v in part.y])] * weight, ignore_index=True)
        df.to_csv(folder / "labeled.csv", index=False)
        return len(df)
    from PIL import Image

    X = np.asarray(part.X)
    if X.dtype != np.uint8:
        raise DataError("the retrained challenger adds production images as PNG files: expected uint8 images")
    n = 0
    for i, (x, c) in enumerate(zip(X, part.y, strict=True)):
        sub = folder / names[int(c)]
        sub.mkdir(exist_ok=True)
        img = Image.fromarray(x[..., 0] if x.ndim == 3 and x.shape[-1] == 1 else x)
        for k in range(weight):
            img.save(sub / f"p{i:05d}_{k:03d}.png")
            n += 1
    return n


def _labeled_path(part: ProductionLabels, folder: Path) -> Path:
    import pandas as pd

    return folder / "labeled.csv" if isinstance(part.X, pd.DataFrame) else folder


def cost_threshold(
    y: np.ndarray, p: np.ndarray, costs: tuple[float, float], *, smoothed: bool = False
) -> tuple[float, tuple[float, float] | None]:
    """(threshold on P(pos), the Platt map it was read off or ``None``) at the task's costs, set on
    labels ``y`` and scores ``p`` no model trained on: the empirical cost minimum, or (``smoothed``)
    the score where ``sigmoid(slope * logit(p) + intercept)`` equals the Bayes cost ratio
    ``cost_fp / (cost_fp + cost_fn)``. A Platt slope that is not positive falls back to the cost
    minimum (the map would reverse the ranking)."""
    from scipy.special import expit, logit

    from closedloop.stats.recalibration import fit_recalibration

    t = fit_recalibration(y, p, "threshold", costs=costs).threshold
    if not smoothed:
        return float(t), None
    r = fit_recalibration(y, p, "platt", costs=costs)
    if r.slope <= 0:
        return float(t), None
    return float(expit((logit(r.threshold) - r.intercept) / r.slope)), (r.slope, r.intercept)


def cross_fitted_cost(
    y: np.ndarray, p: np.ndarray, costs: tuple[float, float], seed: int, *, smoothed: bool = False
) -> float:
    """Expected cost per case of thresholds at the task's costs (:func:`cost_threshold`), each fold
    decided by a threshold fitted on the other folds (no row judged by a threshold fitted on itself)."""
    from closedloop.stats.recalibration import expected_cost, stratified_folds

    fold, k = stratified_folds(y, 5, seed, what="scoring the retrained challenger on its calibration labels")
    cost = 0.0
    for f in range(k):
        tr, te = fold != f, fold == f
        t, _ = cost_threshold(y[tr], p[tr], costs, smoothed=smoothed)
        cost += expected_cost(y[te], p[te] >= t, costs) * te.sum()
    return cost / len(y)


def retrain_challenger(
    run_dir: Path,
    adapt_part: ProductionLabels,
    label_names: list[str],
    spec: RetrainSpec,
    *,
    costs: tuple[float, float],
    seed: int,
    work: Path,
) -> tuple[Any, RetrainFit]:
    """(the retrained :class:`~closedloop.models.trained.TrainedModel` at its production threshold,
    what was done): module docstring."""
    t0 = time.perf_counter()
    cfg = Path(run_dir) / "config.yaml"
    if not cfg.is_file():
        raise RunDirError(f"{cfg} not found: the retrained challenger reruns the champion's own config")
    fit_rows, cal_rows = split_for_retrain(adapt_part.y, spec.calibration_fraction, seed)
    fit_part, cal_part = adapt_part.take(fit_rows), adapt_part.take(cal_rows)
    p_cal: np.ndarray | None = None
    if spec.mode == "warm_start" and spec.threshold_fit != "held_out":
        ship_all = spec.ships_all
        model, device, p_cal = _cross_fitted_warm_start(
            run_dir, adapt_part, fit_rows, cal_rows, spec, seed, ship_all=ship_all
        )
        new_run = None
        fit_rows = np.arange(len(adapt_part.y)) if ship_all else fit_rows
        cal_rows = np.arange(len(adapt_part.y))
        cal_part = adapt_part
        n_added = len(fit_rows) * spec.weight
    elif spec.mode == "warm_start":
        model, device, new_run = _warm_started(run_dir, fit_part, spec, seed)
        n_added = len(fit_rows) * spec.weight
    else:
        from closedloop.core.pipeline import Pipeline
        from closedloop.stages.monitor.retrain import (
            _load_run,
            record_dataset_version,
            resolve_retrain_config,
        )

        device = "cpu"
        folder = Path(work) / "retrain_labeled"
        n_added = write_labeled(fit_part, label_names, folder, spec.weight)
        raw, _ = resolve_retrain_config(cfg, _labeled_path(fit_part, folder), list(spec.overrides))
        # the new run sits next to the champion (<runs_dir>/<name>/<run id>): same test ledger
        raw["runs_dir"] = str(Path(run_dir).resolve().parent.parent)
        raw["name"] = Path(run_dir).resolve().parent.name
        result = Pipeline.from_dict(raw, where=f"{cfg} (retrained challenger)").run(progress=False)
        if not result.ok:
            raise RunDirError(f"the retrained challenger's run failed: see {result.run_dir}")
        record_dataset_version(Path(raw["runs_dir"]) / raw["name"], Path(result.run_dir))  # lineage
        model, _ = _load_run(Path(result.run_dir))
        new_run = str(result.run_dir)
    own = None if model.threshold is None else float(model.threshold)
    if p_cal is None:
        p_cal = np.asarray(model.predict_proba(cal_part.X), np.float64)[:, -1]
    try:
        threshold, threshold_map = cost_threshold(cal_part.y, p_cal, costs, smoothed=spec.smoothed)
        cal_cost = cross_fitted_cost(cal_part.y, p_cal, costs, seed, smoothed=spec.smoothed)
    except StatsError as exc:
        raise DataError(f"the retrained challenger's calibration labels: {exc}") from exc
    model.threshold = threshold
    fit = RetrainFit(
        spec=spec,
        run_dir=new_run,
        fit_rows=fit_rows.tolist(),
        calibration_rows=cal_rows.tolist(),
        n_added=n_added,
        own_threshold=own,
        calibration_cost=cal_cost,
        threshold_map=threshold_map,
        seconds=time.perf_counter() - t0,
        device=device,
    )
    return model, fit


def _warm_started(
    run_dir: Path, fit_part: ProductionLabels, spec: RetrainSpec, seed: int
) -> tuple[Any, str, None]:
    """(the champion trained further with ``fit_part`` added, its device, no run): a warm start."""
    from closedloop.adapt.warm_retrain import warm_retrain
    from closedloop.stages.monitor.retrain import _load_run, champion_training_splits

    champion, _ = _load_run(Path(run_dir))
    splits = champion_training_splits(Path(run_dir), seed, with_val=False)
    if not splits:
        raise RunDirError(
            f"{run_dir}: no config.yaml to load the training split a warm-start retrain continues on"
        )
    model, device = warm_retrain(
        champion, (np.asarray(splits[0].X), np.asarray(splits[0].y)), (np.asarray(fit_part.X), fit_part.y),
        weight=spec.weight, epochs=spec.epochs, lr=spec.lr, batch_size=spec.batch_size, seed=seed,
    )  # fmt: skip
    return model, device, None


def _cross_fitted_warm_start(
    run_dir: Path,
    adapt_part: ProductionLabels,
    a_rows: np.ndarray,
    b_rows: np.ndarray,
    spec: RetrainSpec,
    seed: int,
    *,
    ship_all: bool,
) -> tuple[Any, str, np.ndarray]:
    """(the shipped warm start, its device, out-of-fold P(pos) of every adaptation label): the warm
    start on part A scores part B and the one on B scores A, each with the declared recipe and seed
    (the one on A is the ``held_out`` mode's model). Shipped: a warm start on every adaptation label
    (``ship_all``), else the one on A."""
    p = np.empty(len(adapt_part.y), np.float64)
    halves = []
    for train_rows, score_rows in ((a_rows, b_rows), (b_rows, a_rows)):
        half, device, _ = _warm_started(run_dir, adapt_part.take(train_rows), spec, seed)
        p[score_rows] = np.asarray(half.predict_proba(adapt_part.take(score_rows).X), np.float64)[:, -1]
        halves.append((half, device))
    if not ship_all:
        return *halves[0], p
    model, device, _ = _warm_started(run_dir, adapt_part, spec, seed)
    return model, device, p
