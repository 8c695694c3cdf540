"""``closedloop compare RUN_A RUN_B``: what differs in the configs, and what that did to the metrics.

Test figures are shown side by side from each run's own evaluation. Paired statistics (the same samples
scored by both) are computed where that is honest: on validation, from each run's selected
configuration's saved validation predictions (made before any refit on train+val), and on test only
when both runs have already opened it for their evaluation (the opening is then recorded in the
test ledger of run B's pipeline, like every other).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from closedloop.artifacts.evaluation import EvaluationReport
from closedloop.artifacts.figures import Estimate
from closedloop.artifacts.summary import TestOpening
from closedloop.artifacts.task import TaskSpec
from closedloop.artifacts.training import CrossValidateOutcome, TuneOutcome
from closedloop.core.errors import ClosedLoopError, RunDirError
from closedloop.core.run_reader import RunDir
from closedloop.report.evidence import gather
from closedloop.report.runs import require_run_dir
from closedloop.tracking.run import config_params

VAL_NOTE = "validation: each run's selected configuration, before the final refit"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConfigDiff(_Model):
    key: str
    a: str | None
    b: str | None


class Paired(_Model):
    """``b - a`` on the same samples: difference, 95% interval, two-sided p."""

    delta: float
    ci95: tuple[float, float]
    p_value: float
    method: str
    n: int


class MetricRow(_Model):
    metric: str
    evaluated_on: str
    a: float | None = None
    a_ci95: tuple[float, float] | None = None
    b: float | None = None
    b_ci95: tuple[float, float] | None = None
    paired: Paired | None = None


class Comparison(_Model):
    run_a: str
    run_b: str
    dataset: str
    task: str
    config_diffs: list[ConfigDiff] = Field(default_factory=list)
    metrics: list[MetricRow] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


# -- identity ---------------------------------------------------------------------------------------
def _config(run_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}


class DataNaming(BaseModel):
    """The part of a run's ``data:`` config (config.yaml) that names its dataset: its source and the
    fields that say which dataset (not where it lives); the source's other settings are not read."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    source: Any = None
    base: DataNaming | None = None
    """``source: augmented`` (a retrain): the base dataset the labeled samples were added to."""
    name: Any = None
    flag: Any = None
    size: Any = None
    path: Any = None
    file: Any = None
    dataset: Any = None
    target: Any = None

    def words(self) -> str:
        """``medmnist(flag=breastmnist, size=28)``: the source and each naming field that is set."""
        named = self.model_dump(exclude={"source", "base"})
        parts = [f"{k}={v}" for k, v in named.items() if v not in (None, "")]
        source = self.source if "source" in self.model_fields_set else "?"
        return f"{source}({', '.join(parts)})"


class _RunConfigData(BaseModel):
    model_config = ConfigDict(extra="ignore")

    data: DataNaming | None = None


def dataset_id(cfg: dict[str, Any]) -> str:
    """The data a run used, in words: its source and what names the dataset (not where it lives)."""
    d = _RunConfigData.model_validate(cfg).data or DataNaming()
    if d.source == "augmented":  # retrain: the base dataset plus labeled samples
        d = d.base or DataNaming()
    return d.words()


def _task_id(run_dir: Path) -> str:
    ev = gather(run_dir)
    return f"{ev.problem_type or '?'} (primary metric {ev.primary_metric or '?'})"


# -- evidence on shared samples --------------------------------------------------------------------------
def _artifact(run_dir: Path, suffix: str) -> Path | None:
    """The first finished artifact of that type (the loaded data, not the audit's cleaned copy)."""
    return RunDir(run_dir).artifact_dir(suffix.lstrip(":"), first=True)


def _same(x: Any, y: Any) -> bool:
    if hasattr(x, "equals"):
        return bool(x.equals(y))
    return bool(np.shape(x) == np.shape(y) and np.array_equal(np.asarray(x), np.asarray(y)))


def _val_logits(run_dir: Path) -> np.ndarray | None:
    """The selected configuration's saved validation logits (cross-validation's choice, else tuning's)."""
    run = RunDir(run_dir)
    ev_dir = run.artifact_dir(EvaluationReport)
    if ev_dir is None:
        return None
    ev = run.artifact(EvaluationReport)
    cv, tune = ev.outcome(CrossValidateOutcome), ev.outcome(TuneOutcome)
    tuned = cv.tuned if cv is not None else tune
    path = ev_dir.parents[1] / "work" / tuned.val_logits_file if tuned is not None else None
    return np.load(path) if path is not None and path.is_file() else None


def _opened_test(run_dir: Path) -> bool:
    p = run_dir / "test_ledger.jsonl"
    if not p.is_file():
        return False
    import json

    rows = [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
    return any(TestOpening.model_validate(r).purpose == "evaluation" for r in rows)


def _paired(
    metrics: list[str], y: Any, pa: Any, pb: Any, task: TaskSpec, n: int, seed: int
) -> dict[str, Paired]:
    from closedloop.stats.paired import compare

    out = {}
    for m in metrics:
        try:
            r = compare(
                m,
                y,
                pb,
                pa,
                task.problem_type,
                n_resamples=n,
                seed=seed,
                convention=task.metric_convention,
            )
        except Exception:  # a metric undefined on these samples: shown without a paired test
            continue
        out[m] = Paired(delta=r.delta, ci95=(r.ci95[0], r.ci95[1]), p_value=r.p_value, method=r.method, n=r.n)
    return out


# -- the comparison ----------------------------------------------------------------------------------------
def _with_todays_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
    """A run's saved config with every default of today's schema filled in, so a setting added since the older
    run was made (``na_values``, ``class_order``: session 28) is not listed as a difference where the newer run
    holds only its default. A config today's schema cannot read is compared as saved."""
    from closedloop.core.pipeline import Pipeline

    try:
        return Pipeline.from_dict(cfg, where="compare").resolved_config()
    except Exception:  # noqa: BLE001 - an old or foreign config: compare what was saved
        return cfg


def compare_runs(
    run_a: str | Path, run_b: str | Path, *, n_resamples: int = 1000, seed: int = 0
) -> Comparison:
    """Compare two finished runs of the same task and dataset (``b`` relative to ``a``)."""
    a, b = require_run_dir(run_a), require_run_dir(run_b)
    for r in (a, b):
        if not (r / "summary.json").is_file():
            raise RunDirError(
                f"{r}: the run has no summary.json (still running or killed); compare finished runs"
            )
    ca, cb = _config(a), _config(b)
    da, db = dataset_id(ca), dataset_id(cb)
    ta, tb = _task_id(a), _task_id(b)
    if da != db or ta != tb:
        raise ClosedLoopError(
            f"compare: the runs are not of the same task and dataset:\n  {a}: {ta} on {da}\n  {b}: {tb} on {db}\n"
            "metrics of different tasks or data are not comparable; compare two runs of one pipeline "
            "(or of configs that share data and task)"
        )
    out = Comparison(run_a=str(a), run_b=str(b), dataset=da, task=ta)
    pa_, pb_ = config_params(_with_todays_defaults(ca)), config_params(_with_todays_defaults(cb))
    for k in sorted(set(pa_) | set(pb_)):
        if k != "runs_dir" and pa_.get(k) != pb_.get(k):
            out.config_diffs.append(ConfigDiff(key=k, a=pa_.get(k), b=pb_.get(k)))
    ea, eb = gather(a), gather(b)
    names = list(dict.fromkeys([*ea.test, *eb.test]))
    task = RunDir(b).artifact(TaskSpec) if RunDir(b).artifact_dir(TaskSpec) is not None else None
    metrics = list(task.metrics) if task is not None and task.metrics else names

    # test: side by side; paired only when both runs already opened it
    paired_test: dict[str, Paired] = {}
    bundles: tuple[Any, Any] | None = None
    if _opened_test(a) and _opened_test(b) and task is not None:
        try:
            paired_test, bundles = _test_paired(a, b, task, metrics, n_resamples, seed)
        except _NotShared as exc:
            out.notes.append(f"test: side by side only ({exc})")
    else:
        out.notes.append(
            "test: side by side only (paired statistics on test need both runs to have opened it already)"
        )
    for m in names:
        x, y = ea.test.get(m), eb.test.get(m)
        out.metrics.append(
            MetricRow(
                metric=m,
                evaluated_on="test",
                a=x.value if x else None,
                a_ci95=x.ci95 if x else None,
                b=y.value if y else None,
                b_ci95=y.ci95 if y else None,
                paired=paired_test.get(m),
            )
        )

    # validation: paired on the selected configurations' saved predictions
    la, lb = _val_logits(a), _val_logits(b)
    if la is None or lb is None or task is None:
        out.notes.append(
            "validation: no saved validation predictions in one of the runs; no paired statistics"
        )
        return out
    from closedloop.data.bundle import DatasetBundle

    try:
        ba, bb = bundles or (
            DatasetBundle.load(_artifact(a, ":DatasetBundle")),
            DatasetBundle.load(_artifact(b, ":DatasetBundle")),
        )
    except Exception as exc:
        out.notes.append(f"validation: the data artifacts could not be read ({exc}); no paired statistics")
        return out
    if not (_same(ba.val.y, bb.val.y) and _same(ba.val.X, bb.val.X)) or len(la) != len(ba.val.y):
        out.notes.append("validation: the runs scored different validation samples; no paired statistics")
        return out
    from closedloop.models.trained import logits_to_proba

    pa = logits_to_proba(la, task.problem_type)
    pb = logits_to_proba(lb, task.problem_type)
    from closedloop.stats.bootstrap import metrics_with_ci

    def scored(bundle: Any, p: np.ndarray) -> dict[str, Estimate]:
        kw = {"convention": task.metric_convention, "n_resamples": n_resamples, "seed": seed}
        raw = metrics_with_ci(metrics, np.asarray(bundle.val.y), p, task.problem_type, **kw)
        return {k: Estimate.model_validate(v) for k, v in raw.items()}

    va, vb = scored(ba, pa), scored(bb, pb)
    pv = _paired(metrics, np.asarray(ba.val.y), pa, pb, task, n_resamples, seed)
    for m in metrics:
        out.metrics.append(
            MetricRow(
                metric=m,
                evaluated_on=VAL_NOTE,
                a=va[m].value,
                a_ci95=va[m].interval,
                b=vb[m].value,
                b_ci95=vb[m].interval,
                paired=pv.get(m),
            )
        )
    return out


class _NotShared(Exception):
    pass


def _test_paired(
    a: Path, b: Path, task: TaskSpec, metrics: list[str], n: int, seed: int
) -> tuple[dict[str, Paired], tuple[Any, Any]]:
    """Score both final models on the test split they both already opened (recorded in the ledger)."""
    from closedloop.data.bundle import DatasetBundle
    from closedloop.models.trained import TrainedModel

    dirs = [(_artifact(r, ":DatasetBundle"), _artifact(r, ":TrainedModel")) for r in (a, b)]
    if any(d is None or m is None for d, m in dirs):
        raise _NotShared("a run has no saved data or model")
    import hashlib

    from closedloop.core.ledger import TestLedger
    from closedloop.core.stage import RunContext

    bundle_a, bundle_b = (DatasetBundle.load(d) for d, _ in dirs)
    # The test split opens only through the ledger: recorded in run B's pipeline ledger, purpose evaluation
    # of this pair (a repeated comparison of the same pair is recorded as a deliberate re-opening).
    ctx = RunContext(
        stage_name="compare",
        stage_dir=b,
        seed=seed,
        fingerprint="compare:" + hashlib.sha256(f"{a.resolve()}|{b.resolve()}".encode()).hexdigest(),
        test_ledger=TestLedger(
            global_path=b.parent / "test_ledger.jsonl",
            run_path=b / "test_ledger.jsonl",
            run_id=b.name,
            unseal_reason="closedloop compare: both runs had already opened the test split",
        ),
    )
    reason = f"closedloop compare {a.name} {b.name}: paired comparison of two already evaluated models"
    ta, tb = (ctx.open_test(bundle, reason=reason) for bundle in (bundle_a, bundle_b))
    if not (_same(ta.y, tb.y) and _same(ta.X, tb.X)):
        raise _NotShared("the runs' test samples differ")
    model_a, model_b = (TrainedModel.load(m) for _, m in dirs)
    X, y = ta.X, np.asarray(ta.y)
    pa, pb = model_a.predict_proba(X), model_b.predict_proba(X)
    return _paired(metrics, y, pa, pb, task, n, seed), (bundle_a, bundle_b)


# -- output ----------------------------------------------------------------------------------------------
def _v(x: float | None, ci: tuple[float, float] | None = None) -> str:
    if x is None:
        return "-"
    return f"{x:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")


def _set(v: str | None) -> str:
    return "(not set)" if v is None else repr(v) if v == "" else v


def _pd(p: Paired | None) -> str:
    if p is None:
        return "-"
    pv = "< 0.001" if p.p_value < 0.001 else f"{p.p_value:.3f}"
    return f"{p.delta:+.4f} [{p.ci95[0]:+.4f}, {p.ci95[1]:+.4f}] p={pv} (n={p.n})"


def format_comparison(c: Comparison) -> str:
    """Side by side for the terminal."""
    L = [f"A: {c.run_a}", f"B: {c.run_b}", f"task {c.task} on {c.dataset}", ""]
    L.append(f"config differences ({len(c.config_diffs)}):")
    w = max([len(d.key) for d in c.config_diffs] + [3])
    L += [f"  {d.key:<{w}}  A={_set(d.a)}  B={_set(d.b)}" for d in c.config_diffs] or [
        "  none: the same configuration"
    ]
    L.append("")
    head = ("metric", "data", "A [95% CI]", "B [95% CI]", "B - A paired [95% CI], p")
    rows = [
        (m.metric, m.evaluated_on, _v(m.a, m.a_ci95), _v(m.b, m.b_ci95), _pd(m.paired)) for m in c.metrics
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{x}}}" for x in widths)
    L += [fmt.format(*head), fmt.format(*("-" * x for x in widths))] + [fmt.format(*r) for r in rows]
    L += [""] + [f"note: {n}" for n in c.notes]
    return "\n".join(L)


def comparison_html(c: Comparison) -> str:
    """The same as one self-contained HTML page."""
    e = html.escape
    diffs = "".join(
        f"<tr><td><code>{e(d.key)}</code></td><td>{e(_set(d.a))}</td><td>{e(_set(d.b))}</td></tr>"
        for d in c.config_diffs
    )
    rows = "".join(
        f"<tr><td>{e(m.metric)}</td><td>{e(m.evaluated_on)}</td><td>{e(_v(m.a, m.a_ci95))}</td>"
        f"<td>{e(_v(m.b, m.b_ci95))}</td><td>{e(_pd(m.paired))}</td></tr>"
        for m in c.metrics
    )
    notes = "".join(f"<li>{e(n)}</li>" for n in c.notes)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>closedloop compare</title><style>
body{{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:.6em 0;font-size:.9em}} td,th{{border:1px solid #ddd;padding:.25em .6em;text-align:left}}
th{{background:#f6f6f6}} code{{background:#f6f6f6;padding:.1em .3em}}</style></head><body>
<h1>Run comparison</h1><p>A: <code>{e(c.run_a)}</code><br>B: <code>{e(c.run_b)}</code><br>task {e(c.task)} on {e(c.dataset)}</p>
<h2>Configuration differences ({len(c.config_diffs)})</h2>
{"<table><tr><th>key</th><th>A</th><th>B</th></tr>" + diffs + "</table>" if diffs else "<p>none: the same configuration</p>"}
<h2>Metrics</h2><table><tr><th>metric</th><th>data</th><th>A [95% CI]</th><th>B [95% CI]</th><th>B &minus; A, paired [95% CI], p</th></tr>{rows}</table>
<ul>{notes}</ul></body></html>"""
