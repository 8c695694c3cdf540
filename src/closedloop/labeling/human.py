"""A measured human level: a person labels a blind random sample of a split, and the tool scores
the person and the model on the same items.

``closedloop human-baseline RUN --split val --n 200 --out DIR`` draws the items from the validation
rows the run's deployed model never trained on (its held-out record), writes the blind queue
``DIR/queue/`` and keeps the truth and the model's probabilities in ``DIR/heldback.csv`` (outside the
folder the labeling page serves). ``closedloop label DIR/queue`` labels it. ``closedloop human-baseline
--score DIR`` then computes the human's accuracy, balanced accuracy and per-class recall with
bootstrap intervals, the model's on the same items, and the paired comparison (McNemar for accuracy,
paired bootstrap for the interval), and writes ``DIR/human_reference.json`` and
``<runs_dir>/<name>/human_reference.json``, which the next run's task stage reads as a reference of
level ``human`` (report first screen, model card).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from closedloop.core.errors import ConfigError, DataError
from closedloop.core.io import read_json, write_json_atomic
from closedloop.core.run_reader import RunDir
from closedloop.labeling.blind import HELDBACK, QUEUE_SUBDIR, make_blind_queue
from closedloop.labeling.queue import load_queue
from closedloop.labeling.store import LabelStore
from closedloop.stats.metrics import ORDINAL_METRICS

PLAN = "baseline.json"
RESULT = "human_reference.json"
MIN_SCORED = 20
"""Fewest labeled items a human level is computed from (an interval on fewer says little)."""
SUPPORTED_PROBLEMS = ("binary", "multiclass", "ordinal")


class HumanBaselinePlan(BaseModel):
    """What ``create_human_baseline`` drew, and from where (``DIR/baseline.json``)."""

    model_config = ConfigDict(extra="forbid")

    run_dir: str
    pipeline_home: str
    """``<runs_dir>/<name>/``: where the next run looks for ``human_reference.json``."""
    dataset: str
    split: str
    evaluated_on: str
    """How the pool relates to the model: e.g. ``calibration`` (validation rows it never trained on)."""
    pool_note: str
    n: int
    n_pool: int
    seed: int
    problem_type: str
    label_names: list[str]
    primary_metric: str
    model_threshold: float | None
    annotators: list[str] = Field(default_factory=list)
    overlap: float = 0.0
    created: str
    rows_checksum: str | None = None
    """Hash of the drawn rows (inputs and labels): re-scoring against another run's model checks that
    its validation split holds the very same items."""


class MetricCI(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: float
    ci95: list[float]


class AnnotatorScore(BaseModel):
    """One annotator against the held-back truth, and the model on the same items."""

    model_config = ConfigDict(extra="forbid")

    annotator: str
    n_labeled: int
    n_skipped: int
    """Skipped or marked unsure (not scored)."""
    human: dict[str, MetricCI]
    model: dict[str, MetricCI]


class HumanBaselineResult(BaseModel):
    """``DIR/human_reference.json``: the reference the next run reads, and how it was measured."""

    model_config = ConfigDict(extra="forbid")

    reference: dict[str, Any]
    """A :class:`~closedloop.stages.task.Reference` of level ``human``."""
    annotator: str
    annotators: list[AnnotatorScore]
    n_items: int
    n_scored: int
    comparisons: list[dict[str, Any]]
    """Paired comparisons model - human (one per metric)."""
    plan: HumanBaselinePlan
    written: list[str] = Field(default_factory=list)


# -- reading a run -------------------------------------------------------------------------------------
def _artifact(run_dir: Path, type_suffix: str) -> Path:
    run = RunDir(run_dir)
    if not run.has_manifest():
        raise DataError(
            f"{run_dir}: no manifest.json; expected a closedloop run directory (runs/<name>/<run>)"
        )
    found = run.artifact_dir(type_suffix.lstrip(":"))
    if found is None:
        raise DataError(f"{run_dir}: the run has no finished {type_suffix.lstrip(':')} artifact")
    return found


def _pipeline_home(run_dir: Path) -> Path:
    import yaml

    cfg_path = run_dir / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else {}
    name = str((cfg or {}).get("name", run_dir.parent.name))
    if run_dir.parent.name == name:
        return run_dir.parent
    return Path(str((cfg or {}).get("runs_dir", "runs"))) / name


def create_human_baseline(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    split: str = "val",
    n: int = 200,
    seed: int = 0,
    annotators: list[str] | None = None,
    overlap: float = 0.0,
    per_item: int | None = None,
) -> HumanBaselinePlan:
    """Draw ``n`` items at random from ``split`` of the run's data that its model never trained on and
    write the blind queue (``out_dir/queue``), the held-back truth and model probabilities, and the plan.

    Raises:
        DataError: not a run, a split that is not ``val``, a model that trained on all of validation,
            ``n`` larger than the pool, a split without labels.
    """
    from closedloop.artifacts.task import TaskSpec
    from closedloop.data.bundle import DatasetBundle
    from closedloop.models.heldout import heldout_split, rows_checksum, unseen_val_rows
    from closedloop.models.trained import TrainedModel

    run = Path(run_dir)
    if split != "val":
        why = (
            "the test split is sealed (opened once, by the run's final evaluation)"
            if split == "test"
            else "unknown split"
        )
        raise DataError(
            f"--split {split}: {why}; a human baseline draws from 'val' (the rows the model never trained on)"
        )
    task = TaskSpec.load(_artifact(run, ":TaskSpec"))
    if task.problem_type not in SUPPORTED_PROBLEMS:
        raise DataError(
            f"{run}: a {task.problem_type} task; the human baseline scores single-label classification "
            f"({', '.join(SUPPORTED_PROBLEMS)})"
        )
    data = DatasetBundle.load(_artifact(run, ":DatasetBundle"))
    model = TrainedModel.load(_artifact(run, ":TrainedModel"))
    val = data.val
    pool = unseen_val_rows(model, len(val))
    _, evaluated_on, note = heldout_split(model, data, "human-baseline")
    if len(pool) == 0 or evaluated_on == "trained_on":
        raise DataError(
            f"{run}: the deployed model trained on every validation row ({note}); a human baseline needs items "
            "the model never saw (train with a held-out fraction)"
        )
    X_pool = val.X.iloc[pool] if isinstance(val.X, pd.DataFrame) else val.X[pool]
    proba_pool = model.predict_proba(X_pool)
    proba = np.full((len(val), proba_pool.shape[1]), np.nan)
    proba[pool] = proba_pool
    qdir, held = make_blind_queue(
        val.X,
        val.y,
        list(task.label_names),
        out_dir,
        n=n,
        seed=seed,
        pool=pool,
        proba=proba,
        problem_type=task.problem_type,
        where=f"{run} split {split} ({len(pool)} rows the model never trained on)",
    )
    if annotators:
        from closedloop.labeling.assign import assign_items, write_assignments

        ids = load_queue(qdir).ids
        write_assignments(qdir, assign_items(ids, annotators, overlap, per_item=per_item, seed=seed))
    plan = HumanBaselinePlan(
        run_dir=str(run.resolve()),
        pipeline_home=str(_pipeline_home(run).resolve()),
        dataset=data.meta.name,
        split=split,
        evaluated_on=evaluated_on,
        pool_note=note,
        n=n,
        n_pool=len(pool),
        seed=seed,
        problem_type=task.problem_type,
        label_names=list(task.label_names),
        primary_metric=task.primary_metric,
        model_threshold=model.threshold,
        rows_checksum=rows_checksum(val.X, np.asarray(val.y), held["index"].to_numpy()),
        annotators=list(annotators or []),
        overlap=overlap,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_json_atomic(Path(out_dir) / PLAN, plan.model_dump(mode="json"))
    return plan


# -- scoring ---------------------------------------------------------------------------------------------
HARD_LABEL_METRICS = ("acc", "balanced_accuracy", "f1", "precision", "recall", *ORDINAL_METRICS)
"""Metrics defined for a hard label (a person gives a class, not a score)."""


def compared_metrics(problem: str) -> tuple[str, ...]:
    """The metrics a person and the model are compared on; an ordinal task's graders on distances in ranks
    too (a grade one off is a nearer miss).

    >>> compared_metrics("ordinal")
    ('acc', 'balanced_accuracy', 'qwk', 'mae')
    """
    return ("acc", "balanced_accuracy", *(ORDINAL_METRICS if problem == "ordinal" else ()))


def wilson(k: int, n: int, z: float = 1.959963984540054) -> list[float]:
    """Wilson score interval of a proportion ``k / n`` (sound at 0 and 1, where a bootstrap collapses)."""
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return [float(max(0.0, mid - half)), float(min(1.0, mid + half))]


def _metrics(
    y: np.ndarray,
    P: np.ndarray,
    problem: str,
    names: list[str],
    threshold: float | None,
    seed: int,
    n_boot: int,
    primary: str = "acc",
) -> dict[str, MetricCI]:
    from closedloop.stats.bootstrap import metrics_with_ci

    out: dict[str, MetricCI] = {}
    arg = P[:, 1] if problem == "binary" else P
    wanted = list(compared_metrics(problem))
    wanted += [primary] if primary in HARD_LABEL_METRICS[2:] and primary not in wanted else []
    for k, v in metrics_with_ci(
        wanted, y, arg, problem, threshold=threshold, n_resamples=n_boot, seed=seed
    ).items():
        out[k] = MetricCI(value=v["value"], ci95=v["ci95"])
    pred = (
        (P[:, 1] >= (threshold if threshold is not None else 0.5)).astype(int)
        if problem == "binary"
        else P.argmax(1)
    )
    for c, name in enumerate(names):
        mask = y == c
        if not mask.any():
            continue
        # recall of class c = share of its items called c (binary: class 1 sensitivity, class 0 specificity)
        k = int((pred[mask] == c).sum())
        out[f"recall_{name}"] = MetricCI(value=k / int(mask.sum()), ci95=wilson(k, int(mask.sum())))
    return out


def _probs_of_run(
    run: Path, plan: HumanBaselinePlan, held: pd.DataFrame
) -> tuple[dict[str, np.ndarray], float | None, str]:
    """Another run's model on the human's items: (id -> probabilities, its threshold, run dir).

    Raises:
        DataError: the run's validation split does not hold the same items, or its model trained on some.
    """
    from closedloop.data.bundle import DatasetBundle
    from closedloop.models.heldout import rows_checksum, unseen_val_rows
    from closedloop.models.trained import TrainedModel

    data = DatasetBundle.load(_artifact(run, ":DatasetBundle"))
    model = TrainedModel.load(_artifact(run, ":TrainedModel"))
    idx = held["index"].to_numpy(dtype=np.int64)
    val = data.val
    same = len(val) > int(idx.max()) and (
        plan.rows_checksum is None or rows_checksum(val.X, np.asarray(val.y), idx) == plan.rows_checksum
    )
    if not same:
        raise DataError(
            f"--run {run}: its validation split does not hold the items of this human baseline (drawn from "
            f"{plan.run_dir}); compare runs on the same data"
        )
    seen = sorted(set(idx.tolist()) - set(unseen_val_rows(model, len(val)).tolist()))
    if seen:
        raise DataError(
            f"--run {run}: its model trained on {len(seen)} of the {len(idx)} human-labeled items (validation rows "
            f"{seen[:5]}); a paired comparison needs items it never saw"
        )
    X = val.X.iloc[idx] if isinstance(val.X, pd.DataFrame) else val.X[idx]
    P = model.predict_proba(X)
    return {i: P[k] for k, i in enumerate(held["id"])}, model.threshold, str(run.resolve())


Verdict = Literal["better", "not_distinguishable", "worse"]


def _verdict(delta: float, p: float, higher_is_better: bool = True, alpha: float = 0.05) -> Verdict:
    """The model against the person: ``delta`` is the model's value minus the person's."""
    if p < alpha:
        return "better" if (delta > 0) == higher_is_better else "worse"
    return "not_distinguishable"


def score_human_baseline(
    out_dir: str | Path,
    *,
    annotator: str | None = None,
    metric: str = "acc",
    n_resamples: int = 2000,
    seed: int = 0,
    publish: bool = True,
    run: str | Path | None = None,
) -> HumanBaselineResult:
    """Score the labels in ``out_dir/queue/labels.csv`` against the held-back truth, the model on the same
    items, and write ``human_reference.json`` (in ``out_dir`` and, with ``publish``, in the pipeline's
    home where the next run reads it). With ``run``, the model compared is that run's (say, a retrained
    one), scored now on the same items, which must be in its validation split and unseen by it.

    Raises:
        DataError: not a human-baseline folder, an unknown annotator, fewer than ``MIN_SCORED`` labeled
            items.
    """
    from closedloop.artifacts.task import HumanComparison, Reference
    from closedloop.stats.paired import compare

    out = Path(out_dir)
    if not (out / PLAN).is_file() or not (out / HELDBACK).is_file():
        raise DataError(
            f"{out}: no {PLAN} and {HELDBACK}; expected a folder made by 'closedloop human-baseline RUN --out DIR'"
        )
    plan = HumanBaselinePlan.model_validate(read_json(out / PLAN))
    if metric not in compared_metrics(plan.problem_type):
        raise ConfigError(
            f"--metric {metric}: for this {plan.problem_type} task the human level is compared on "
            f"{', '.join(compared_metrics(plan.problem_type))}"
        )
    queue = load_queue(out / QUEUE_SUBDIR)
    held = pd.read_csv(out / HELDBACK, dtype={"id": str, "label": str})
    names = plan.label_names
    store = LabelStore(queue.dir / "labels.csv", queue.ids, queue.classes, queue.multilabel)
    by: dict[str, dict[str, Any]] = {}
    for (item, who), row in store.current_by_annotator().items():
        by.setdefault(who, {})[item] = row
    if not by:
        raise DataError(
            f"{queue.dir}/labels.csv: no labels yet; label the queue with 'closedloop label {queue.dir}'"
        )
    if annotator is not None and annotator not in by:
        raise DataError(
            f"--annotator {annotator!r} has no labels in {queue.dir}/labels.csv; found {sorted(by)}"
        )
    truth = {r.id: names.index(r.label) for r in held.itertuples()}
    pcols = [f"p_{c}" for c in names]
    probs = {r["id"]: np.array([r[c] for c in pcols], dtype=float) for r in held.to_dict("records")}
    threshold, model_run = plan.model_threshold, plan.run_dir
    if run is not None:
        probs, threshold, model_run = _probs_of_run(Path(run), plan, held)
    problem = plan.problem_type
    scores: list[AnnotatorScore] = []
    paired: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for who, rows in sorted(by.items()):
        labeled = [i for i, r in rows.items() if r.status == "labeled"]
        skipped = sum(1 for r in rows.values() if r.status != "labeled")
        if len(labeled) < MIN_SCORED:
            scores.append(
                AnnotatorScore(annotator=who, n_labeled=len(labeled), n_skipped=skipped, human={}, model={})
            )
            continue
        y = np.array([truth[i] for i in labeled])
        H = np.zeros((len(labeled), len(names)))
        H[np.arange(len(labeled)), [names.index(rows[i].label[0]) for i in labeled]] = 1.0
        M = np.stack([probs[i] for i in labeled])
        th = threshold
        scores.append(
            AnnotatorScore(
                annotator=who,
                n_labeled=len(labeled),
                n_skipped=skipped,
                human=_metrics(y, H, problem, names, None, seed, n_resamples, plan.primary_metric),
                model=_metrics(y, M, problem, names, th, seed, n_resamples, plan.primary_metric),
            )
        )
        paired[who] = (y, H, M)
    chosen = annotator or max(scores, key=lambda s: s.n_labeled).annotator
    if chosen not in paired:
        n_lab = next(s.n_labeled for s in scores if s.annotator == chosen)
        raise DataError(
            f"{queue.dir}/labels.csv: annotator {chosen!r} labeled {n_lab} of {len(queue.ids)} items; a human "
            f"level needs at least {MIN_SCORED} labeled items"
        )
    y, H, M = paired[chosen]
    comps = []
    on = (
        f"{len(y)} {plan.split} items drawn at random (seed {plan.seed}) from the {plan.n_pool} the model never "
        f"trained on ({plan.evaluated_on})"
    )
    for m in compared_metrics(problem):
        a = M[:, 1] if problem == "binary" else M
        b = H[:, 1] if problem == "binary" else H
        r = compare(
            m,
            y,
            a,
            b,
            problem,
            n_resamples=n_resamples,
            seed=seed,
            threshold=threshold,
            method="auto",
        )
        comps.append(
            HumanComparison(
                metric=m,
                model_value=r.value_a,
                human_value=r.value_b,
                delta=r.delta,
                ci95=[float(v) for v in r.ci95],
                p_value=float(r.p_value),
                method=r.method,
                verdict=_verdict(r.delta, r.p_value, r.higher_is_better),
                evaluated_on=on,
                model_run=model_run,
            )
        )
    main = next(c for c in comps if c.metric == metric)
    score = next(s for s in scores if s.annotator == chosen)
    metrics = {k: round(v.value, 6) for k, v in score.human.items()}
    ref = Reference(
        name=f"measured human level ({chosen})",
        level="human",
        metrics=metrics,
        source=f"closedloop human-baseline {out.resolve()}: blind labeling of {on}",
        ci95={k: [round(x, 6) for x in v.ci95] for k, v in score.human.items()},
        n=len(y),
        comparison=main,
    )
    result = HumanBaselineResult(
        reference=ref.model_dump(mode="json"),
        annotator=chosen,
        annotators=scores,
        n_items=len(queue.ids),
        n_scored=len(y),
        comparisons=[c.model_dump(mode="json") for c in comps],
        plan=plan,
    )
    targets = [out / RESULT]
    if publish:
        targets.append(Path(plan.pipeline_home) / RESULT)
    result.written = [str(t) for t in targets]
    for t in targets:
        t.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(t, result.model_dump(mode="json"))
    return result
