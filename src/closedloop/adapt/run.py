"""``closedloop adapt RUN LABELS``: adapt the deployed model to production, judge it on production.

1. The labeled production samples are checked (classes of the task, the model version that served
   them) and split at random into an adaptation part and an evaluation part (stratified, seeded,
   recorded; only randomly selected samples may judge: :mod:`closedloop.adapt.split`). A separate
   ``--eval-labels`` file is refused when it holds uncertainty-selected samples.
2. Challengers (:mod:`closedloop.adapt.challengers`): recalibrations (threshold, Platt, temperature),
   the last layer fine-tuned toward the champion's (:mod:`closedloop.adapt.head`) and the network
   fine-tuned from the champion's weights with its training data replayed
   (:mod:`closedloop.adapt.finetune`), fitted on the adaptation part; the one with the lowest
   cross-validated expected cost on that part alone is chosen, its threshold re-chosen there at the
   task's costs. With ``retrain`` among the challengers, the champion's own config is also rerun
   with part of the adaptation labels added to train and its threshold set on the rest
   (:mod:`closedloop.adapt.retrain`); it replaces the chosen one when its cross-fitted cost on those
   calibration labels is lower than the chosen one's out-of-fold cost on the same labels.
   Evaluation samples whose content (hash) is among the adaptation labels or the champion's training
   data are dropped from the evaluation part (recorded in ``excluded_from_production``).
   A multi-class or ordinal model takes the class recalibrations instead
   (:func:`closedloop.adapt.challengers.choose_class_challenger`: class offsets, temperature, scales on its
   logits), chosen by cross-validated error rate, and decides by its most probable class.
3. The rule :func:`closedloop.stats.promotion.decide_promotion` judges it against the champion, each
   at its own threshold: better on the evaluation part (paired, one-sided, the declared metric) AND
   non-inferior within the declared margin on the original test split, opened through the test
   ledger, without any sample either model trained or adapted on (content hash); ``test_mix="production"``
   (a multi-class model's default) weighs that split's rows to the adaptation labels' class mix.
4. ``adapt.json`` (everything), ``challenger.json`` (the challenger), ``adapt.md``, ``model/``
   (the adapted model: the champion's network with the challenger written into its head, its own
   threshold) and ``model_fp32.onnx`` + ``predictor.json`` (the same, servable:
   ``closedloop serve RUN --shadow OUT``; :mod:`closedloop.adapt.servable`) are written to ``--out``
   (default ``RUN/adapt/<time>``), with the adapted model's own monitor reference
   (``references/<time>/``: :mod:`closedloop.adapt.reference`) when the champion has one.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from closedloop.adapt.arguments import DEFAULT_CHALLENGERS
from closedloop.adapt.challengers import (
    FAMILIES,
    ChallengerChoice,
    FinetuneData,
    adapted_model,
    choose_challenger,
    choose_class_challenger,
)
from closedloop.adapt.reference import adapted_reference
from closedloop.adapt.retrain import RetrainSpec
from closedloop.adapt.servable import write_servable
from closedloop.adapt.split import AdaptSplit, needed_for_effect, split_production
from closedloop.core.errors import ClosedLoopError, DataError
from closedloop.core.io import to_json, write_text_atomic
from closedloop.monitoring.production_labels import (
    RANDOM_SOURCES,
    ProductionLabels,
    check_version,
    read_production_labels,
)
from closedloop.stats.errors import StatsError
from closedloop.stats.promotion import PairedCases, PromotionDecision, decide_promotion
from closedloop.stats.recalibration import _logit

ADAPT_FAMILIES = (*FAMILIES, "retrain")
"""``--challengers`` values: the families of :mod:`closedloop.adapt.challengers` and the retrained
challenger (:mod:`closedloop.adapt.retrain`: a pipeline run, minutes)."""

DECLARABLE = ("expected_cost", "balanced_accuracy", "acc")
"""Metrics ``adapt`` may declare: the task's cost per case (default), or decision metrics at each
model's own shipped threshold. A multi-class model declares ``acc`` (default) or ``balanced_accuracy``."""
ADAPTABLE = ("binary", "multiclass", "ordinal")
"""Problem types ``adapt`` takes: an ordinal model's softmax over ranked classes is adapted as a
multi-class one's (class offsets, temperature, scales)."""
CLASS_FAMILIES = ("recalibration",)
"""The families a multi-class model can take: its recalibration (:mod:`closedloop.stats.class_recalibration`)."""


class Declared(BaseModel):
    """What the decision will be made on, fixed before any evaluation label is looked at."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    alpha: float
    margin: float
    """Non-inferiority margin on the original test split, in the metric's units."""
    effect: float
    """The smallest improvement worth detecting (sizes the evaluation part)."""
    costs: tuple[float, float]
    """``(cost_false_positive, cost_false_negative)``: the task's business costs (1, 1 when none)."""
    eval_fraction: float
    seed: int


class AdaptResult(BaseModel):
    """Everything ``closedloop adapt`` decided and why (``adapt.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    champion: str
    labels: str
    n_labels: int
    declared: Declared
    split: AdaptSplit
    n_needed_for_effect: int
    choice: ChallengerChoice
    champion_threshold: float | None
    """``None`` for a multi-class model (it decides by the largest probability)."""
    decision: PromotionDecision
    production: dict[str, dict[str, float]]
    """Champion and challenger at their shipped thresholds on the evaluation part: acc,
    sensitivity, specificity, expected_cost (multi-class: acc, balanced_accuracy, expected_cost = the
    error rate)."""
    excluded_from_test: dict[str, Any]
    excluded_from_production: dict[str, Any] = {}
    """Evaluation samples left out because their content is among the adaptation labels or the
    champion's training data (by content hash): ``n``, ``of``, ``by``."""
    test_mix: dict[str, Any] = {}
    """How the original test split was weighed for non-inferiority: ``mix`` (``original`` or ``production``),
    and with ``production`` the class shares of the test split and of the adaptation labels it was
    reweighted to."""
    retrain_choice: dict[str, Any] = {}
    """With ``retrain``: the retrained challenger's cross-fitted cost on its calibration labels, the
    chosen other challenger's out-of-fold cost on the same labels, and which won."""
    seconds: dict[str, float]
    out_dir: str
    monitor_reference: dict[str, str | None] = {}
    """``path`` of the adapted model's own monitor reference (``None`` when the champion has no
    reference to build it like) and a ``note`` saying what it is."""
    warnings: list[str] = []

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def operating_point(y: np.ndarray, decisions: np.ndarray, costs: tuple[float, float]) -> dict[str, float]:
    """ACC, sensitivity, specificity and expected cost per case of binary decisions."""
    y = np.asarray(y).astype(int)
    d = np.asarray(decisions).astype(bool)
    pos, neg = y == 1, y == 0
    return {
        "acc": float(np.mean(d == pos)),
        "sensitivity": float(d[pos].mean()) if pos.any() else float("nan"),
        "specificity": float((~d[neg]).mean()) if neg.any() else float("nan"),
        "expected_cost": float((costs[0] * np.sum(d & neg) + costs[1] * np.sum(~d & pos)) / len(y)),
        "n": float(len(y)),
    }


def class_operating_point(y: np.ndarray, predicted: np.ndarray, k: int) -> dict[str, float]:
    """ACC, balanced accuracy (mean recall of the classes present) and error rate of class decisions.

    >>> class_operating_point(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2]), 3)["balanced_accuracy"]
    0.6666666666666666
    """
    y, d = np.asarray(y).astype(int), np.asarray(predicted).astype(int)
    recalls = [float(np.mean(d[y == c] == c)) for c in range(k) if np.any(y == c)]
    return {
        "acc": float(np.mean(d == y)),
        "balanced_accuracy": float(np.mean(recalls)),
        "expected_cost": float(np.mean(d != y)),
        "n": float(len(y)),
    }


def _p_pos(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return p[:, -1] if p.ndim == 2 else p.reshape(-1)


def _is_tree_model(model: Any) -> bool:
    from closedloop.models.registry import network_kind  # torch: only when a fine-tune was asked for

    return network_kind(model.network) == "trees"


def run_adapt(
    run_dir: str | Path,
    labels_path: str | Path,
    *,
    eval_labels: str | Path | None = None,
    eval_fraction: float = 0.5,
    seed: int = 0,
    alpha: float = 0.05,
    margin: float = 0.02,
    effect: float | None = None,
    metric: str | None = None,
    out: str | Path | None = None,
    unseal_test: str | None = None,
    challengers: tuple[str, ...] = DEFAULT_CHALLENGERS,
    retrain: RetrainSpec | None = None,
    test_mix: str | None = None,
) -> AdaptResult:
    """Adapt, judge and record (module docstring). ``metric``: ``expected_cost`` for a binary model and
    ``acc`` for a multi-class one unless given. ``test_mix``: ``original`` judges non-inferiority on the
    test split as it is; ``production`` weighs its rows to the adaptation labels' class mix
    (:func:`reweighted_to_production`). Default: ``original`` for a binary model, ``production`` for a
    multi-class one, whose challengers exist to follow a new class mix."""
    from closedloop.stages.monitor.retrain import _load_run

    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    model, task = _load_run(run_dir)
    if model.problem_type not in ADAPTABLE:
        raise DataError(
            f"{run_dir}: adapt recalibrates binary, multi-class and ordinal models; this one is {model.problem_type} "
            "(retrain with --add-labeled instead)"
        )
    binary = model.problem_type == "binary"
    metric = metric or ("expected_cost" if binary else "acc")
    if not binary and metric == "expected_cost":
        raise DataError(
            f"--metric expected_cost: {run_dir} is a {model.problem_type} model, which has no pair of costs "
            "(false alarm, miss); declare acc or balanced_accuracy"
        )
    names = list(model.label_names) or ["0", "1"]
    labels = read_production_labels(labels_path, names)
    check_version(labels, run_dir, "the labeled samples")
    biz = getattr(task, "business", None) if task is not None else None
    costs = (
        (float(biz.cost_false_positive), float(biz.cost_false_negative))
        if biz is not None and binary
        else (1.0, 1.0)
    )
    champion_t = None if not binary else 0.5 if model.threshold is None else float(model.threshold)

    bad = [c for c in challengers if c not in ADAPT_FAMILIES] or ([] if challengers else ["(none)"])
    if bad:
        raise DataError(
            f"--challengers {','.join(challengers)!r}: {bad} not known; expected some of {', '.join(ADAPT_FAMILIES)}"
        )
    warnings: list[str] = []
    if not binary:
        challengers, dropped = _class_challengers(challengers, run_dir, model.problem_type)
        if dropped:
            warnings.append(
                f"challenger families {dropped} were left out: a {model.problem_type} model is adapted by "
                "recalibrating its logits (class offsets, temperature, scales); retrain it with the labels "
                "added for more: closedloop retrain --add-labeled"
            )
    with_retrain = "retrain" in challengers
    challengers = tuple(c for c in challengers if c != "retrain")
    retrain_spec = retrain or RetrainSpec()
    if with_retrain:
        from closedloop.adapt.retrain import check_retrain_config

        check_retrain_config(run_dir, retrain_spec)
    use_features = "head" in challengers

    def champion_p(part: ProductionLabels) -> np.ndarray:
        if not binary:  # a served P(pos) column says nothing of K classes: score the inputs
            return np.asarray(model.predict_proba(part.X), np.float64)
        return part.proba if part.proba is not None else _p_pos(model.predict_proba(part.X))

    def scores(part: ProductionLabels, p: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The champion's logit (after its temperature; ``(N, K)`` for a multi-class model) and, for head
        challengers, its features."""
        if binary and part.proba is not None:
            z = _logit(p)
        else:
            z = model.predict_logits(part.X).astype(np.float64) / float(model.temperature)
            z = z.reshape(-1) if binary else z
        return z, (model.embed(part.X).astype(np.float64) if use_features else None)

    p_all = champion_p(labels)
    if not binary and labels.proba is not None:
        warnings.append(
            f"{labels_path}: its 'proba' column was not used: a {model.problem_type} model's probabilities "
            "were computed from the inputs"
        )
    champ_cost = (
        np.where(
            (p_all >= champion_t) & (labels.y == 0),
            costs[0],
            np.where((p_all < champion_t) & (labels.y == 1), costs[1], 0.0),
        )
        if binary
        else (p_all.argmax(axis=1) != labels.y).astype(np.float64)
    )
    effect = float(effect) if effect is not None else max(0.25 * float(champ_cost.mean()), 1e-3)
    test_mix = test_mix or ("original" if binary else "production")
    if test_mix not in TEST_MIXES:
        raise DataError(f"--test-mix {test_mix!r}: expected one of {', '.join(TEST_MIXES)}")
    if metric not in DECLARABLE:
        raise DataError(f"--metric {metric!r}: expected one of {', '.join(DECLARABLE)}")
    declared = Declared(
        metric=metric, alpha=alpha, margin=margin, effect=effect, costs=costs,
        eval_fraction=eval_fraction, seed=seed,
    )  # fmt: skip
    needed = needed_for_effect(float(champ_cost.std()) or costs[1] / 2, effect, alpha)

    if eval_labels is not None:
        ev_labels = read_production_labels(eval_labels, names)
        check_version(ev_labels, run_dir, "the evaluation samples")
        if ev_labels.selected_by is not None and not ev_labels.randomly_selected().all():
            bad = sorted(set(ev_labels.selected_by[~ev_labels.randomly_selected()].tolist()))
            raise DataError(
                f"{eval_labels}: {int((~ev_labels.randomly_selected()).sum())} evaluation sample(s) were selected "
                f"by {bad} (chosen for being uncertain or unusual), which biases any score on them; evaluation "
                f"data must be randomly selected ({', '.join(sorted(RANDOM_SOURCES))}). Pass them as LABELS to "
                "adapt on instead"
            )
        adapt_part, eval_part = labels, ev_labels
        split = AdaptSplit(
            seed=seed, eval_fraction=len(ev_labels) / (len(ev_labels) + len(labels)),
            adaptation=list(range(len(labels))), evaluation=list(range(len(ev_labels))),
            n_random=len(ev_labels), note=f"adaptation: all of {labels.path}; evaluation: all of {eval_labels}",
        )  # fmt: skip
        p_adapt, p_eval = p_all, champion_p(ev_labels)
        (z_adapt, f_adapt), (z_eval, f_eval) = scores(labels, p_adapt), scores(ev_labels, p_eval)
    else:
        split = split_production(labels, eval_fraction=eval_fraction, seed=seed, needed=needed)
        ia, ie = np.asarray(split.adaptation, int), np.asarray(split.evaluation, int)
        adapt_part, eval_part = labels.take(ia), labels.take(ie)
        p_adapt, p_eval = p_all[ia], p_all[ie]
        z_all, f_all = scores(labels, p_all)
        z_adapt, z_eval = z_all[ia], z_all[ie]
        f_adapt, f_eval = (None, None) if f_all is None else (f_all[ia], f_all[ie])

    keep, excluded_prod = _unseen_by_either(run_dir, seed, eval_part, adapt_part)
    if not keep.all():
        eval_part, p_eval, z_eval = eval_part.take(np.flatnonzero(keep)), p_eval[keep], z_eval[keep]
        f_eval = None if f_eval is None else f_eval[keep]
    if len(eval_part) == 0 or len(np.unique(eval_part.y)) < 2:
        raise DataError(
            f"{eval_labels or labels_path}: after leaving out the {excluded_prod['n']} evaluation sample(s) a model "
            f"trained or adapted on (by content hash: {excluded_prod['by']}), {len(eval_part)} are left "
            f"(classes {sorted(set(eval_part.y.tolist()))}): judge on samples neither model saw, of both classes"
        )

    if "finetune" in challengers and _is_tree_model(model):
        challengers = tuple(c for c in challengers if c != "finetune")
        warnings.append(
            "the fine-tune challenger was left out: the champion is a tree model (boosted trees are not "
            "fine-tuned by gradient steps; retrain with the labels added: closedloop retrain)"
        )
    finetune = None
    if "finetune" in challengers:
        finetune = FinetuneData(model, adapt_part.X, _replay(run_dir, seed, warnings))
    t0 = time.perf_counter()
    choice = (
        None
        if not challengers
        else choose_class_challenger(adapt_part.y, z_adapt, seed=seed)
        if not binary
        else choose_challenger(
            adapt_part.y, z_adapt, f_adapt, costs=costs, families=challengers, seed=seed, finetune=finetune
        )
    )
    t_fit = time.perf_counter() - t0
    out_dir = Path(out) if out else run_dir / "adapt" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    retrain_choice: dict[str, Any] = {}
    t_retrain = 0.0
    if with_retrain:
        t1 = time.perf_counter()
        choice, retrain_choice = _with_retrained(
            run_dir, adapt_part, names, retrain_spec, choice, costs=costs, seed=seed, work=out_dir
        )
        t_retrain = time.perf_counter() - t1
    assert choice is not None
    chosen = choice.chosen

    reference, excluded = _reference(run_dir, model, chosen, adapt_part, unseal_test)
    mix: dict[str, Any] = {"mix": test_mix}
    if reference is not None and test_mix == "production":
        reference, mix = reweighted_to_production(reference, adapt_part.y, len(names))
    decision = decide_promotion(
        eval_part.y, chosen.proba(z_eval, f_eval, eval_part.X), p_eval, metric=metric,
        problem_type=model.problem_type,
        threshold=chosen.threshold, champion_threshold=champion_t, alpha=alpha, costs=costs,
        extra_metrics=(), reference=reference, margin=margin,
        evaluated_on=f"the production evaluation part ({len(eval_part)} randomly selected labels)",
        seed=seed,
    )  # fmt: skip
    production = (
        {
            "champion": operating_point(eval_part.y, p_eval >= champion_t, costs),
            "challenger": operating_point(eval_part.y, chosen.decide(z_eval, f_eval, eval_part.X), costs),
        }
        if binary
        else {
            "champion": class_operating_point(eval_part.y, p_eval.argmax(axis=1), len(names)),
            "challenger": class_operating_point(eval_part.y, chosen.decide(z_eval, f_eval), len(names)),
        }
    )
    if reference is not None and test_mix == "original" and decision.significant:
        note = _mix_note(decision, reference, adapt_part.y, len(names))
        if note:
            warnings.append(note)
    if len(eval_part) < needed:
        warnings.append(
            f"the evaluation part has {len(eval_part)} labels; detecting the declared effect "
            f"({effect:.3g} {declared.metric}) with 80% power needs about {needed}: a 'keep' may only mean "
            "too few labels"
        )
    result = AdaptResult(
        champion=str(run_dir),
        labels=str(labels_path),
        n_labels=len(labels),
        declared=declared,
        split=split,
        n_needed_for_effect=needed,
        choice=choice,
        champion_threshold=champion_t,
        decision=decision,
        production=production,
        excluded_from_test=excluded,
        test_mix=mix,
        excluded_from_production=excluded_prod,
        retrain_choice=retrain_choice,
        seconds={"challenger_fit": t_fit, "retrain": t_retrain, "total": time.perf_counter() - t_start},
        out_dir=str(out_dir),
        warnings=warnings,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "challenger.json", to_json(chosen.model_dump(mode="json")))
    try:
        adapted = adapted_model(model, chosen)
        adapted.save(out_dir / "model")
        pos = getattr(task, "positive_class", None) if task is not None else None
        write_servable(adapted, out_dir, positive_class=pos, adapted_from=run_dir.name)
        ref_dir, ref_note = adapted_reference(run_dir, adapted, out_dir, seed=seed)
        result.monitor_reference.update(path=None if ref_dir is None else str(ref_dir), note=ref_note)
    except (StatsError, ClosedLoopError) as exc:  # e.g. no linear head: the decision stands, nothing to serve
        result.warnings.append(f"adapted model not written: {exc}")
    write_text_atomic(out_dir / "adapt.json", to_json(result.to_dict()))
    write_text_atomic(out_dir / "adapt.md", render_markdown(result))
    return result


TEST_MIXES = ("original", "production")
"""``--test-mix``: the class mix the original test split is judged at for non-inferiority."""


def _shares(y: Any, k: int) -> np.ndarray:
    return np.bincount(np.asarray(y).reshape(-1).astype(int), minlength=k) / max(len(y), 1)


def reweighted_to_production(
    cases: PairedCases, y_production: Any, k: int
) -> tuple[PairedCases, dict[str, Any]]:
    """The test split's cases weighted so that its class mix is production's (the shares of ``y_production``,
    the adaptation labels): each class's rows weigh ``production share / test share``. Under a change of the
    class mix alone (the inputs of each class alike) that is production's distribution, so non-inferiority
    then asks "no worse on such inputs at today's mix" rather than "no worse at the old mix", which a
    model adapted to the new mix fails by design.

    >>> c = PairedCases(y_true=np.array([0, 0, 0, 1]), challenger_proba=np.zeros(4), champion_proba=np.zeros(4))
    >>> reweighted_to_production(c, np.array([0, 1]), 2)[0].weights.tolist()
    [0.6666666666666666, 0.6666666666666666, 0.6666666666666666, 2.0]
    """
    y = np.asarray(cases.y_true).reshape(-1).astype(int)
    test, prod = _shares(y, k), _shares(y_production, k)
    w = np.where(test[y] > 0, prod[y] / np.where(test[y] > 0, test[y], 1.0), 0.0)
    shares = ", ".join(f"{p:.0%}" for p in prod)
    weighted = cases.model_copy(
        update={
            "weights": w,
            "evaluated_on": f"{cases.evaluated_on}, its rows weighted to production's class mix ({shares}, from "
            f"{len(np.asarray(y_production))} adaptation labels)",
        }
    )
    return weighted, {
        "mix": "production",
        "test_shares": test.round(4).tolist(),
        "production_shares": prod.round(4).tolist(),
        "n_production": len(np.asarray(y_production)),
        "rule": "each test row weighs (its class's share of the adaptation labels) / (its share of the test split)",
    }


def _mix_note(decision: PromotionDecision, reference: PairedCases, y_production: Any, k: int) -> str:
    """A warning when the challenger is better on production, fails non-inferiority at the old mix, and
    production's class mix differs from the test split's (chi-square, p < 0.01): the likely reason."""
    from scipy.stats import chisquare

    ni = decision.non_inferiority
    if ni is None or ni.ok:
        return ""
    test = _shares(reference.y_true, k)
    counts = np.bincount(np.asarray(y_production).astype(int), minlength=k)
    keep = test > 0
    p = float(chisquare(counts[keep], test[keep] / test[keep].sum() * counts[keep].sum()).pvalue)
    if p >= 0.01:
        return ""
    fmt = ", ".join
    return (
        f"production's class mix ({fmt(f'{v:.0%}' for v in counts / counts.sum())} in the adaptation labels) differs "
        f"from the test split's ({fmt(f'{v:.0%}' for v in test)}; chi-square p = {p:.2g}): a model adapted to the "
        "new mix is worse at the old one by design. If the old mix is not coming back, declare --test-mix "
        "production (or with --margin how much worse at the old mix you accept) before judging fresh evaluation "
        "labels: judging these again under another declaration would be a second look at them"
    )


def _class_challengers(
    challengers: tuple[str, ...], run_dir: Path, problem_type: str
) -> tuple[tuple[str, ...], list[str]]:
    """A multi-class model's families (:data:`CLASS_FAMILIES`) and the requested ones left out; an error
    when none is left (``retrain`` alone, say), naming what can be asked for."""
    kept = tuple(c for c in challengers if c in CLASS_FAMILIES)
    dropped = [c for c in challengers if c not in CLASS_FAMILIES]
    if not kept:
        raise DataError(
            f"--challengers {','.join(challengers)}: {run_dir} is a {problem_type} model, which adapt adapts by "
            f"{', '.join(CLASS_FAMILIES)} only (class offsets, temperature or scales on its logits); to train "
            "it again with the labels added use closedloop retrain --add-labeled"
        )
    return kept, dropped


def _unseen_by_either(
    run_dir: Path, seed: int, eval_part: ProductionLabels, adapt_part: ProductionLabels
) -> tuple[np.ndarray, dict[str, Any]]:
    """(mask of evaluation samples whose content no model trained or adapted on, what was left out).
    The adaptation labels train every challenger; the champion's training split trained the champion
    (and the retrained challenger). A row index says nothing about content: a file can repeat a sample."""
    from closedloop.data.bundle import Split
    from closedloop.stages.audit.duplicates import content_hashes
    from closedloop.stages.monitor.retrain import champion_training_splits

    keys = content_hashes(Split(X=eval_part.X, y=eval_part.y))
    drop = np.zeros(len(keys), bool)
    by: dict[str, int] = {}
    trained = [("adaptation labels (every challenger)", [Split(X=adapt_part.X, y=adapt_part.y)])]
    trained.append(("champion's training data", champion_training_splits(run_dir, seed)))
    for name, splits in trained:
        seen = {h for s in splits for h in content_hashes(s)}
        hit = np.array([k in seen for k in keys], bool)
        if hit.any():
            by[name] = int(hit.sum())
        drop |= hit
    return ~drop, {
        "n": int(drop.sum()),
        "of": len(keys),
        "by": by,
        "rule": "evaluation samples whose content hash is among the adaptation labels or the champion's "
        "training data are left out",
    }


def _with_retrained(
    run_dir: Path,
    adapt_part: ProductionLabels,
    names: list[str],
    spec: RetrainSpec,
    choice: ChallengerChoice | None,
    *,
    costs: tuple[float, float],
    seed: int,
    work: Path,
) -> tuple[ChallengerChoice, dict[str, Any]]:
    """The retrained challenger, and the choice between it and ``choice`` (the other families'
    winner) on the retrain's calibration labels: its cross-fitted cost there against the winner's
    out-of-fold cost on the same rows (ties: the winner, which needs no new run)."""
    from closedloop.adapt.challengers import AdaptedChallenger
    from closedloop.adapt.retrain import retrain_challenger

    net, fit = retrain_challenger(run_dir, adapt_part, names, spec, costs=costs, seed=seed, work=work)
    ch = AdaptedChallenger(method="retrain", retrain=fit, threshold=float(net.threshold))
    ch._network = net
    cal = np.asarray(fit.calibration_rows, int)
    other = None if choice is None else float(np.mean(np.asarray(choice.oof_costs)[cal]))
    wins = other is None or fit.calibration_cost < other
    info = {
        "retrain_calibration_cost": fit.calibration_cost,
        "other_chosen": None if choice is None else choice.chosen.method,
        "other_oof_cost_on_calibration_rows": other,
        "chosen": "retrain" if wins else "other",
        "n_calibration": len(cal),
        "rule": "expected cost per case on the retrain's calibration labels (never trained on by it): its "
        "threshold cross-fitted there vs the other challengers' winner out of fold; lower wins, ties keep the winner",
    }
    if not wins:
        assert choice is not None
        return choice, info
    cv = {**(choice.cv_cost if choice else {}), "retrain (calibration labels)": fit.calibration_cost}
    return ChallengerChoice(
        chosen=ch,
        cv_cost=cv,
        folds=choice.folds if choice else 0,
        candidates=(choice.candidates if choice else 0) + 1,
        selection=(
            "the retrained challenger, chosen over "
            + (
                "nothing else (retrain only)"
                if choice is None
                else f"the other families' winner ({choice.chosen.method})"
            )
            + " on its calibration labels; the evaluation part judges the one chosen"
        ),
    ), info


def _replay(run_dir: Path, seed: int, warnings: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """The champion's training split, replayed by the fine-tune (``None`` with a warning when the
    run has no saved config to load it from: the fine-tune then sees production labels only)."""
    from closedloop.stages.monitor.retrain import champion_training_splits

    splits = champion_training_splits(run_dir, seed, with_val=False)
    if not splits:
        warnings.append(f"{run_dir}/config.yaml not found: the fine-tune replays no training data")
        return None
    return np.asarray(splits[0].X), np.asarray(splits[0].y).reshape(-1).astype(int)


def _reference(
    run_dir: Path, model: Any, chosen: Any, adapted_on: ProductionLabels, unseal_test: str | None
) -> tuple[PairedCases | None, dict[str, Any]]:
    """The original test split (through the test ledger) without the samples either model trained
    or adapted on, scored by both; ``(None, why)`` when the run has no saved config to load it from."""
    from closedloop.core.config import load_yaml_file
    from closedloop.core.ledger import TestLedger
    from closedloop.core.registry import SOURCES
    from closedloop.core.stage import RunContext
    from closedloop.data.bundle import Split
    from closedloop.stages.monitor.retrain import champion_training_splits, drop_trained_on

    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        return None, {"skipped": f"{cfg_path} not found: no original test split to check non-inferiority on"}
    cfg = load_yaml_file(cfg_path)
    data = dict(cfg.get("data") or {})
    seed = int(cfg.get("seed", 0))
    bundle = SOURCES.resolve(data.pop("source"))(data).load(seed)
    runs_root = Path(cfg.get("runs_dir", "runs")) / str(cfg.get("name"))
    if not runs_root.is_dir():
        runs_root = run_dir.parent
    fp = hashlib.sha256(f"{run_dir.resolve()}|{to_json(chosen.model_dump(mode='json'))}".encode()).hexdigest()
    ctx = RunContext(
        stage_name="adapt",
        stage_dir=run_dir,
        seed=0,
        fingerprint="adapt-compare:" + fp,
        test_ledger=TestLedger(
            global_path=runs_root / "test_ledger.jsonl",
            run_path=run_dir / "test_ledger.jsonl",
            run_id=f"adapt-{fp[:12]}",
            unseal_reason=unseal_test,
        ),
    )
    test = ctx.open_test(bundle, reason="non-inferiority of an adapted challenger (closedloop adapt)")
    trained = [("champion", *champion_training_splits(run_dir, seed))]
    trained.append(("challenger (adaptation labels)", Split(X=adapted_on.X, y=adapted_on.y)))
    held, excluded = drop_trained_on(test, trained)
    if len(held) == 0:
        return None, {**excluded, "skipped": "no test sample is left that neither model saw"}
    binary = model.problem_type == "binary"
    p = model.predict_proba(held.X)
    p = _p_pos(p) if binary else np.asarray(p, np.float64)
    z = model.predict_logits(held.X).astype(np.float64) / float(model.temperature)
    z = z.reshape(-1) if binary else z
    phi = model.embed(held.X).astype(np.float64) if chosen.head is not None else None
    return PairedCases(
        y_true=np.asarray(held.y), challenger_proba=chosen.proba(z, phi, held.X), champion_proba=p
    ), excluded


def champion_threshold_words(t: float | None) -> str:
    """`` (champion threshold 0.4123)`` for a binary champion, nothing for a multi-class one."""
    return "" if t is None else f" (champion threshold {t:.4f})"


def _production_table(production: dict[str, dict[str, float]], binary: bool) -> list[str]:
    """Champion and challenger on the evaluation part, as markdown rows."""
    if not binary:
        head = "| deciding the most probable class, on the production evaluation part | ACC | balanced accuracy | error rate |"
        rows = [
            f"| {name} | {m['acc']:.3f} | {m['balanced_accuracy']:.3f} | {m['expected_cost']:.4f} |"
            for name, m in production.items()
        ]
        return [head, "|---|---|---|---|", *rows]
    head = "| at its shipped threshold, on the production evaluation part | ACC | sensitivity | specificity | expected cost |"
    rows = [
        f"| {name} | {m['acc']:.3f} | {m['sensitivity']:.3f} | {m['specificity']:.3f} | {m['expected_cost']:.4f} |"
        for name, m in production.items()
    ]
    return [head, "|---|---|---|---|---|", *rows]


def render_markdown(r: AdaptResult) -> str:
    """A short human-readable record of the adaptation and its judgement."""
    d = r.decision
    ch = r.choice
    binary = r.champion_threshold is not None
    at_costs = (
        f"at costs FP {r.declared.costs[0]:g} / FN {r.declared.costs[1]:g}"
        if binary
        else "of each model's most probable class"
    )
    lines = [
        f"# Adaptation of {r.champion}",
        "",
        f"**{'PROMOTE' if d.promote else 'keep the champion'}**: " + "; ".join(d.reasons),
        "",
        f"- labels: {r.labels} ({r.n_labels}); {r.split.note}",
        f"- declared before evaluation: metric {r.declared.metric} {at_costs}, "
        f"alpha {r.declared.alpha}, non-inferiority margin {r.declared.margin:g} "
        f"on the original test split, effect {r.declared.effect:.4g} "
        f"(about {r.n_needed_for_effect} evaluation labels to detect it with 80% power)",
        f"- challenger: {ch.chosen.describe()}" + champion_threshold_words(r.champion_threshold),
        f"- selection: {ch.selection}: " + ", ".join(f"{k} {v:.4f}" for k, v in ch.cv_cost.items()),
        *(
            [
                f"- retrained challenger: cost {r.retrain_choice['retrain_calibration_cost']:.4f} on the "
                f"{r.retrain_choice['n_calibration']} labels its threshold was set on (threshold cross-fitted "
                "there) vs "
                + (
                    "no other challenger"
                    if r.retrain_choice["other_oof_cost_on_calibration_rows"] is None
                    else f"{r.retrain_choice['other_oof_cost_on_calibration_rows']:.4f} for "
                    f"{r.retrain_choice['other_chosen']} (out of fold)"
                )
                + f": {r.retrain_choice['chosen']} chosen"
            ]
            if r.retrain_choice
            else []
        ),
        f"- left out of the production evaluation: {r.excluded_from_production.get('n', 0)} sample(s) whose content "
        f"a model trained or adapted on {r.excluded_from_production.get('by') or ''}".rstrip(),
        "",
        *_production_table(r.production, binary),
    ]
    ni = d.non_inferiority
    lines += [
        "",
        f"- better on production: {d.metric} {d.champion_value:.4f} -> {d.challenger_value:.4f} "
        f"(one-sided p = {d.p_value:.3g}, n = {d.n}, {d.method})",
        f"- not worse on the original test split: {ni.sentence if ni else r.excluded_from_test.get('skipped')}",
        f"- left out of the test comparison: {r.excluded_from_test.get('n', 0)} sample(s) a model trained or adapted on",
        *(
            [
                f"- the test split judged at production's class mix: shares {r.test_mix['test_shares']} reweighted to "
                f"{r.test_mix['production_shares']} (from {r.test_mix['n_production']} adaptation labels)"
            ]
            if r.test_mix.get("mix") == "production"
            else []
        ),
        f"- challengers fitted and chosen in {r.seconds['challenger_fit'] * 1000:.0f} ms",
        "- the adapted model (served decision: "
        + (
            "the most probable class"
            if ch.chosen.threshold is None
            else f"P(pos) >= {ch.chosen.threshold:.4f}"
        )
        + f"): {r.out_dir}/model; serve it "
        f"next to the champion: closedloop serve {r.champion} --shadow {r.out_dir}",
        f"- its monitor reference: {r.monitor_reference.get('path') or r.monitor_reference.get('note', 'none')}",
        *[f"- warning: {w}" for w in r.warnings],
    ]
    return "\n".join(lines) + "\n"
