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
   task's costs.
3. The rule :func:`closedloop.stats.promotion.decide_promotion` judges it against the champion, each
   at its own threshold: better on the evaluation part (paired, one-sided, the declared metric) AND
   non-inferior within the declared margin on the original test split, opened through the test
   ledger, without any sample either model trained or adapted on (content hash).
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
)
from closedloop.adapt.labels import RANDOM_SOURCES, ProductionLabels, check_version, read_production_labels
from closedloop.adapt.reference import adapted_reference
from closedloop.adapt.servable import write_servable
from closedloop.adapt.split import AdaptSplit, needed_for_effect, split_production
from closedloop.core.errors import ClosedLoopError, DataError
from closedloop.core.io import to_json, write_text_atomic
from closedloop.stats.errors import StatsError
from closedloop.stats.promotion import PairedCases, PromotionDecision, decide_promotion
from closedloop.stats.recalibration import _logit

DECLARABLE = ("expected_cost", "balanced_accuracy", "acc")
"""Metrics ``adapt`` may declare: the task's cost per case (default), or decision metrics at each
model's own shipped threshold."""


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
    champion_threshold: float
    decision: PromotionDecision
    production: dict[str, dict[str, float]]
    """Champion and challenger at their shipped thresholds on the evaluation part: acc,
    sensitivity, specificity, expected_cost."""
    excluded_from_test: dict[str, Any]
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
    metric: str = "expected_cost",
    out: str | Path | None = None,
    unseal_test: str | None = None,
    challengers: tuple[str, ...] = DEFAULT_CHALLENGERS,
) -> AdaptResult:
    """Adapt, judge and record (module docstring)."""
    from closedloop.stages.monitor.retrain import _load_run

    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    model, task = _load_run(run_dir)
    if model.problem_type != "binary":
        raise DataError(
            f"{run_dir}: adapt recalibrates binary models; this one is {model.problem_type} "
            "(retrain with --add-labeled instead)"
        )
    names = list(model.label_names) or ["0", "1"]
    labels = read_production_labels(labels_path, names)
    check_version(labels, run_dir, "the labeled samples")
    biz = getattr(task, "business", None) if task is not None else None
    costs = (
        (float(biz.cost_false_positive), float(biz.cost_false_negative)) if biz is not None else (1.0, 1.0)
    )
    champion_t = 0.5 if model.threshold is None else float(model.threshold)

    bad = [c for c in challengers if c not in FAMILIES] or ([] if challengers else ["(none)"])
    if bad:
        raise DataError(
            f"--challengers {','.join(challengers)!r}: {bad} not known; expected some of {', '.join(FAMILIES)}"
        )
    use_features = "head" in challengers

    def champion_p(part: ProductionLabels) -> np.ndarray:
        return part.proba if part.proba is not None else _p_pos(model.predict_proba(part.X))

    def scores(part: ProductionLabels, p: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The champion's logit (after its temperature) and, for head challengers, its features."""
        if part.proba is not None:
            z = _logit(p)
        else:
            z = model.predict_logits(part.X).reshape(-1).astype(np.float64) / float(model.temperature)
        return z, (model.embed(part.X).astype(np.float64) if use_features else None)

    p_all = champion_p(labels)
    champ_cost = np.where(
        (p_all >= champion_t) & (labels.y == 0),
        costs[0],
        np.where((p_all < champion_t) & (labels.y == 1), costs[1], 0.0),
    )
    effect = float(effect) if effect is not None else max(0.25 * float(champ_cost.mean()), 1e-3)
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

    warnings: list[str] = []
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
    choice = choose_challenger(
        adapt_part.y, z_adapt, f_adapt, costs=costs, families=challengers, seed=seed, finetune=finetune
    )
    t_fit = time.perf_counter() - t0
    chosen = choice.chosen

    out_dir = Path(out) if out else run_dir / "adapt" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    reference, excluded = _reference(run_dir, model, chosen, adapt_part, unseal_test)
    decision = decide_promotion(
        eval_part.y, chosen.proba(z_eval, f_eval, eval_part.X), p_eval, metric=metric, problem_type="binary",
        threshold=chosen.threshold, champion_threshold=champion_t, alpha=alpha, costs=costs,
        extra_metrics=(), reference=reference, margin=margin,
        evaluated_on=f"the production evaluation part ({len(eval_part)} randomly selected labels)",
        seed=seed,
    )  # fmt: skip
    production = {
        "champion": operating_point(eval_part.y, p_eval >= champion_t, costs),
        "challenger": operating_point(eval_part.y, chosen.decide(z_eval, f_eval, eval_part.X), costs),
    }
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
        seconds={"challenger_fit": t_fit, "total": time.perf_counter() - t_start},
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
    p = _p_pos(model.predict_proba(held.X))
    z = model.predict_logits(held.X).reshape(-1).astype(np.float64) / float(model.temperature)
    phi = model.embed(held.X).astype(np.float64) if chosen.head is not None else None
    return PairedCases(
        y_true=np.asarray(held.y), challenger_proba=chosen.proba(z, phi, held.X), champion_proba=p
    ), excluded


def render_markdown(r: AdaptResult) -> str:
    """A short human-readable record of the adaptation and its judgement."""
    d = r.decision
    ch = r.choice
    lines = [
        f"# Adaptation of {r.champion}",
        "",
        f"**{'PROMOTE' if d.promote else 'keep the champion'}**: " + "; ".join(d.reasons),
        "",
        f"- labels: {r.labels} ({r.n_labels}); {r.split.note}",
        f"- declared before evaluation: metric {r.declared.metric} at costs FP {r.declared.costs[0]:g} / "
        f"FN {r.declared.costs[1]:g}, alpha {r.declared.alpha}, non-inferiority margin {r.declared.margin:g} "
        f"on the original test split, effect {r.declared.effect:.4g} "
        f"(about {r.n_needed_for_effect} evaluation labels to detect it with 80% power)",
        f"- challenger: {ch.chosen.describe()} (champion threshold {r.champion_threshold:.4f})",
        f"- selection: {ch.selection}: " + ", ".join(f"{k} {v:.4f}" for k, v in ch.cv_cost.items()),
        "",
        "| at its shipped threshold, on the production evaluation part | ACC | sensitivity | specificity | expected cost |",
        "|---|---|---|---|---|",
    ]
    for name, m in r.production.items():
        lines.append(
            f"| {name} | {m['acc']:.3f} | {m['sensitivity']:.3f} | {m['specificity']:.3f} | {m['expected_cost']:.4f} |"
        )
    ni = d.non_inferiority
    lines += [
        "",
        f"- better on production: {d.metric} {d.champion_value:.4f} -> {d.challenger_value:.4f} "
        f"(one-sided p = {d.p_value:.3g}, n = {d.n}, {d.method})",
        f"- not worse on the original test split: {ni.sentence if ni else r.excluded_from_test.get('skipped')}",
        f"- left out of the test comparison: {r.excluded_from_test.get('n', 0)} sample(s) a model trained or adapted on",
        f"- challengers fitted and chosen in {r.seconds['challenger_fit'] * 1000:.0f} ms",
        f"- the adapted model (served decision: P(pos) >= {ch.chosen.threshold:.4f}): {r.out_dir}/model; serve it "
        f"next to the champion: closedloop serve {r.champion} --shadow {r.out_dir}",
        f"- its monitor reference: {r.monitor_reference.get('path') or r.monitor_reference.get('note', 'none')}",
        *[f"- warning: {w}" for w in r.warnings],
    ]
    return "\n".join(lines) + "\n"
