"""The flywheel's second half: retrain with newly labeled samples and compare with the champion.

``closedloop retrain CONFIG --add-labeled DIR [--champion RUN_DIR]``

1. The config's ``data:`` section is wrapped in the ``augmented`` source, which loads the original
   source and appends the labeled samples to *train* only (validation and test stay identical, so
   both models are judged on the same held-out data). The added files' hash and count are recorded in
   the dataset's provenance: a new, recorded dataset version.
2. The pipeline reruns (unchanged stages come from the cache).
   The version is also appended to ``<runs_dir>/<name>/dataset_versions.jsonl``.
3. Challenger and champion are scored on the same held-out split (test by default, the opening is
   written to the test ledger; ``--on val``: only the validation rows both models held out of their
   final fits) with the paired statistics of :mod:`closedloop.stats.paired`.
   The rule is :func:`closedloop.stats.promotion.decide_promotion` (shared with live comparisons):
   promote only when the challenger is significantly better on the primary metric (one declared,
   one-sided paired test at ``alpha``: not corrected for the configurations its run searched on
   validation, which did not see these cases) *and* meets the task's acceptance bars and constraints.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from closedloop.core.errors import ConfigError, DataError, RunDirError
from closedloop.core.io import hash_tree, to_json, write_text_atomic
from closedloop.core.registry import SOURCES, register_source
from closedloop.core.run_reader import RunDir
from closedloop.data.bundle import TARGET_COLUMN, DatasetBundle, Split
from closedloop.data.sources.base import DataSource, SourceConfig
from closedloop.stats.bootstrap import usable_clusters

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp")


class AugmentedConfig(SourceConfig):
    """Another source plus newly labeled samples appended to its train split."""

    base: dict[str, Any]
    """The original ``data:`` section (``source`` and its options)."""
    labeled: str
    """Folder of class subfolders with image files, or a CSV/Parquet file (features + label column)."""
    label_column: str = "label"
    """Label column of a labeled table."""
    note: str = Field("", description="free text recorded with the dataset version")


def read_labeled(
    path: Path, bundle: DatasetBundle, label_column: str = "label"
) -> tuple[Any, np.ndarray, int]:
    """Read labeled samples in the bundle's format: (X, y, n)."""
    names = list(bundle.meta.label_names)
    if not path.exists():
        raise DataError(f"--add-labeled {path}: no such file or folder")
    if bundle.kind == "images":
        from PIL import Image

        if not path.is_dir():
            raise DataError(
                f"--add-labeled {path}: expected a folder of class subfolders (<class>/<image>.png)"
            )
        h, w, c = bundle.image_shape or (0, 0, 0)
        xs, ys = [], []
        for sub in sorted(p for p in path.iterdir() if p.is_dir()):
            if sub.name in names:
                cls = names.index(sub.name)
            elif sub.name.isdigit() and int(sub.name) < max(len(names), 1 << 30):
                cls = int(sub.name)
            else:
                raise DataError(f"--add-labeled {path}: folder {sub.name!r} is not a class ({names})")
            for f in sorted(sub.iterdir()):
                if f.suffix.lower() not in IMAGE_EXT:
                    continue
                img = Image.open(f).convert("L" if c == 1 else "RGB")
                if img.size != (w, h):
                    img = img.resize((w, h), Image.BILINEAR)
                arr = np.asarray(img, dtype=np.uint8)
                xs.append(arr[..., None] if c == 1 else arr)
                ys.append(cls)
        if not xs:
            raise DataError(f"--add-labeled {path}: no images found in class subfolders")
        return np.stack(xs), np.asarray(ys, dtype=bundle.train.y.dtype), len(xs)
    from closedloop.data.sources.tabular import read_table

    prov = bundle.meta.provenance
    df = read_table(path, list(prov.get("na_values", [])))  # the training file's missing-value strings
    # the label column: the one named, else the training table's own target column (new rows in the
    # training file's format), else the bundle's reserved target column
    target = prov.get("target")
    if isinstance(target, list) and all(t in df for t in target):  # a multi-label table: its label columns
        from closedloop.data.sources.tabular import encode_labels

        y = encode_labels(df[target], where=f"--add-labeled {path}", positives=prov.get("label_positives"))[0]
        df = df.drop(columns=target)
    else:
        one = target if isinstance(target, str) else None
        wanted = list(dict.fromkeys(c for c in (label_column, one, TARGET_COLUMN) if c))
        col = next((c for c in wanted if c in df), None)
        if col is None:
            looked = wanted + ([f"the label columns {target}"] if isinstance(target, list) else [])
            raise DataError(
                f"--add-labeled {path}: no label column; looked for {looked}, the file's columns are "
                f"{list(map(str, df.columns))[:20]}"
            )
        y = df.pop(col).to_numpy()
    cols = list(bundle.train.X.columns)
    missing = [c for c in cols if c not in df]
    if missing:
        raise DataError(f"--add-labeled {path}: missing feature column(s) {missing}")
    X = df[cols].copy()
    for c in cols:
        if isinstance(bundle.train.X[c].dtype, pd.CategoricalDtype):
            X[c] = pd.Categorical(X[c], categories=bundle.train.X[c].cat.categories)
    if names and y.dtype.kind in "OU":
        y = np.array([names.index(v) for v in y])
    return X, y.astype(bundle.train.y.dtype), len(X)


@register_source("augmented")
class AugmentedSource(DataSource):
    """A source plus newly labeled samples appended to train (a new, recorded dataset version)."""

    Config = AugmentedConfig

    def content_key(self) -> str:
        """The wrapped source's key and the labeled samples' content hash: a folder refilled at the
        same path (each ``closedloop adapt`` retrain, a reused ``--add-labeled`` folder) is new data,
        never a cache hit of the previous run."""
        base = dict(self.config.base)
        key = base.pop("source", None)
        inner = SOURCES.resolve(key, where="data.base.source")(base).content_key() if key else ""
        path = Path(self.config.labeled).expanduser()
        return f"{inner}|labeled:{hash_tree(path) if path.exists() else 'missing'}"

    def load(self, seed: int) -> DatasetBundle:
        base = dict(self.config.base)
        key = base.pop("source", None)
        if key is None:
            raise ConfigError("data.base: the wrapped data section needs a 'source'")
        bundle = SOURCES.resolve(key, where="data.base.source")(base).load(seed)
        path = Path(self.config.labeled).expanduser()
        X_new, y_new, n = read_labeled(path, bundle, self.config.label_column)
        tr = bundle.train
        if bundle.kind == "images":
            X = np.concatenate([tr.X, X_new])
        else:
            X = pd.concat([tr.X, X_new], ignore_index=True)
        y = np.concatenate([np.asarray(tr.y), y_new])
        added_hash = hash_tree(path)
        version = hashlib.sha256(
            (to_json(bundle.meta.provenance, indent=None) + added_hash).encode()
        ).hexdigest()[:16]
        prov = dict(bundle.meta.provenance)
        prov["augmented"] = {
            "labeled": str(path.resolve()),
            "n_added": n,
            "added_sha256": added_hash,
            "dataset_version": version,
            "note": self.config.note,
        }
        warnings = [*bundle.meta.warnings, *_later_than_test(bundle, X_new, path)]
        meta = bundle.meta.model_copy(update={"provenance": prov, "warnings": warnings})
        splits = dict(bundle.splits)
        groups = None if tr.groups is None else np.concatenate([tr.groups, _added_groups(path, bundle, n)])
        splits["train"] = Split(X=X, y=y, groups=groups)
        return DatasetBundle(meta=meta, splits=splits)


def _later_than_test(bundle: DatasetBundle, X_new: Any, path: Path) -> list[str]:
    """A time-ordered table (``time_column``) whose added rows reach past the start of the test period: the
    retrained model then learns from the test period or after it, and test stops being its future. Said in the
    data's warnings (the audit's provenance check reports them)."""
    span = bundle.meta.provenance.get("time_split") or {}
    column = span.get("column")
    if not column or not isinstance(X_new, pd.DataFrame) or column not in X_new.columns:
        return []
    from closedloop.data.splits import time_order

    test_from = time_order(pd.Series([span["test"][0]]), f"time_split of {bundle.meta.name}")[0]
    added = time_order(X_new[column], f"--add-labeled {path}: time_column {column!r}")
    n_late = int((added >= test_from).sum())
    if not n_late:
        return []
    return [
        f"--add-labeled {path.name}: {n_late} of {len(added)} added row(s) are from the test period or later "
        f"({column} >= {span['test'][0]}): the retrained model learns from test's period, so test is no longer "
        "its future; judge it on production labels (--eval-labels) instead"
    ]


def _added_groups(path: Path, bundle: DatasetBundle, n: int) -> np.ndarray:
    """The group of each added row of a grouped table: the file's own group column where it has one (a man
    already in train keeps his id, so the train stage's folds keep his rows together), else a group per row.
    A row of a group that validation or test holds is refused: training on it would score those splits on a
    group the model trained on."""
    from closedloop.data.sources.tabular import read_table

    column = (bundle.meta.provenance.get("group") or {}).get("column")
    df = read_table(path, list(bundle.meta.provenance.get("na_values", []))) if column else None
    if df is None or column not in df:
        return np.array([f"added-{i}" for i in range(n)])
    ids = df[column].astype(str).to_numpy()
    held = {str(g): k for k in ("val", "test") for g in np.asarray(bundle.splits[k].groups)}
    clash = [g for g in dict.fromkeys(ids) if g in held]
    if clash:
        where = ", ".join(f"{g!r} ({held[g]})" for g in clash[:5])
        raise DataError(
            f"--add-labeled {path}: {sum(g in held for g in ids)} row(s) belong to group(s) of column {column!r} "
            f"that the evaluation splits hold: {where}{' ...' if len(clash) > 5 else ''}. Training on them would "
            "score validation and test on groups the model trained on; expected rows of new groups or of train's "
            "groups (drop those rows)"
        )
    return ids


# -- champion vs challenger ----------------------------------------------------------------------
def _load_run(run_dir: Path) -> tuple[Any, Any]:
    from closedloop.core.run_reader import RunDir
    from closedloop.models.trained import TrainedModel
    from closedloop.stages.task import TaskSpec

    run = RunDir(run_dir)
    models = [p for p in run.artifact_dirs(TrainedModel) if (p / "model.json").is_file()]
    tasks = [p for p in run.artifact_dirs(TaskSpec) if (p / "artifact.json").is_file()]
    if not models:
        raise RunDirError(f"{run_dir}: no trained model (stages/*/artifacts/model/model.json)")
    return TrainedModel.load(models[-1]), (TaskSpec.load(tasks[-1]) if tasks else None)


def latency_ms(model: Any, batch: np.ndarray, reps: int = 30) -> float:
    import torch

    module = model.raw_module()
    x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
    times = []
    with torch.no_grad():
        module(x)
        for _ in range(reps):
            t = time.perf_counter()
            module(x)
            times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 95))


def compare_runs(
    champion_dir: Path,
    challenger_dir: Path,
    X: Any,
    y: np.ndarray,
    *,
    alpha: float = 0.05,
    metric: str | None = None,
    evaluated_on: str = "test",
    production: tuple[Any, np.ndarray] | None = None,
    margin: float = 0.02,
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """Paired comparison on the same held-out data and the promotion decision with its reasons
    (the rule: :func:`closedloop.stats.promotion.decide_promotion`).

    With ``production`` (randomly selected labeled production samples, ``(X, y)``), the challenger must
    be better *there*, and ``X, y`` (the held-out split) becomes the non-inferiority check within
    ``margin``: the two-part rule ``closedloop adapt`` uses. ``groups``: the group of each row of ``X``
    (``data.group``): comparisons on them resample whole groups."""
    from closedloop.models.trained import raw_array
    from closedloop.stats.promotion import Check, PairedCases, decide_promotion

    champ, task = _load_run(champion_dir)
    chall, task_b = _load_run(challenger_dir)
    task = task_b or task
    metric = metric or (task.primary_metric if task else "acc")
    constraints: list[Check] = []
    if task is not None:
        c = task.constraints
        if c.max_model_size_mb is not None:
            model_dir = RunDir(challenger_dir).require_dir("TrainedModel")
            size = sum(f.stat().st_size for f in model_dir.glob("weights.pt")) / 1e6
            constraints.append(
                Check(
                    name="max_model_size_mb",
                    value=size,
                    bar=c.max_model_size_mb,
                    ok=size <= c.max_model_size_mb,
                )
            )
        if c.max_latency_ms is not None:
            lat = latency_ms(chall, raw_array(X)[: c.latency_batch_size])
            constraints.append(
                Check(name="max_latency_ms", value=lat, bar=c.max_latency_ms, ok=lat <= c.max_latency_ms)
            )
    reference = None
    if production is not None:
        reference = PairedCases(
            y_true=np.asarray(y),
            challenger_proba=chall.predict_proba(X),
            champion_proba=champ.predict_proba(X),
            evaluated_on=evaluated_on,
            groups=groups,
        )
        X, y, groups = production[0], production[1], None
        evaluated_on = f"the production evaluation labels ({len(y)} randomly selected)"
    decision = decide_promotion(
        y,
        chall.predict_proba(X),
        champ.predict_proba(X),
        metric=metric,
        problem_type=chall.problem_type,
        convention=task.metric_convention if task else "standard",
        threshold=chall.threshold,
        champion_threshold=champ.threshold,  # each model at its own shipped operating point
        alpha=alpha,
        acceptance=task.acceptance if task else {},
        constraints=constraints,
        evaluated_on=evaluated_on,
        reference=reference,
        margin=margin,
        clusters=groups,
    )
    first = decision.comparisons[0]
    return {
        "champion": str(champion_dir),
        "challenger": str(challenger_dir),
        "n_heldout": int(len(y)),
        "comparison": {
            **first.model_dump(mode="json"),
            "value_a": first.model_value,
            "value_b": first.baseline_value,
            "p_one_sided": first.p_value,  # the rule's p-value is one-sided; kept under its old name too
        },
        "constraints": {ch.name: {"value": ch.value, "bar": ch.bar, "ok": ch.ok} for ch in decision.checks},
        "promote": decision.promote,
        "reasons": decision.reasons,
        "rule": decision.rule,
        "decision": decision.to_dict(),
        "challenger_selection": _selection_of(challenger_dir),
    }


def _selection_of(run_dir: Path) -> dict[str, Any] | None:
    """The challenger run's validation-side evidence: "selected among N" and the selection bias."""
    from closedloop.core.io import read_json

    p = run_dir / "summary.json"
    if not p.is_file():
        return None
    stages = read_json(p).get("stages") or {}
    found = [
        v["selection"]
        for v in stages.values()
        if isinstance(v, dict) and isinstance(v.get("selection"), dict)
    ]
    return found[-1] if found else None


def resolve_retrain_config(
    config: str | Path, add_labeled: str | Path, overrides: list[str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The challenger's resolved pipeline mapping (``--set`` overrides applied, the data section
    wrapped in the ``augmented`` source) and its resolved original ``data:`` section.

    Overrides name the original data section as in ``closedloop run`` (``data.root=...``); the older
    form through the wrapper (``data.base.root=...``) means the same and is accepted.
    """
    from closedloop.core.config import apply_overrides, load_yaml_file

    raw = load_yaml_file(config)
    if (raw.get("data") or {}).get("source") == "augmented":
        raise ConfigError(f"{config}: the data section is already augmented; pass the original config")
    sets = [o.replace("data.base.", "data.", 1) if o.startswith("data.base.") else o for o in overrides or []]
    raw = apply_overrides(raw, sets)
    base = dict(raw.get("data") or {})
    if "source" not in base:
        raise ConfigError(f"{config}: data: needs a 'source'")
    raw["data"] = {"source": "augmented", "base": base, "labeled": str(Path(add_labeled).resolve())}
    return raw, base


def default_champion(runs_root: Path) -> Path:
    """The deployed model's run when ``--champion`` is not given: the latest run under ``runs_root`` that
    finished with a trained model, leaving out challengers that were not promoted (their ``retrain.json``
    says ``promote: false``, or their comparison never finished). Before session 28 it was the latest run of
    any kind, so one failed retrain made the next one compare against a run with no model."""
    skipped = []
    for run in sorted((p for p in runs_root.glob("*") if (p / "manifest.json").is_file()), reverse=True):
        why = _why_not_champion(run)
        if why is None:
            return run
        skipped.append(f"{run.name} ({why})")
    raise RunDirError(
        f"no champion under {runs_root}: no finished run with a trained model"
        + (f" (skipped: {'; '.join(skipped[:5])})" if skipped else "")
        + "; pass --champion RUN_DIR (the deployed model's run)"
    )


def _why_not_champion(run: Path) -> str | None:
    import yaml

    try:
        status = json.loads((run / "summary.json").read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError):
        status = None
    if status != "ok":
        return f"status {status or 'unknown'}"
    if not any(run.glob("stages/*/artifacts/*/model.json")):
        return "no trained model"
    try:
        source = (yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}).get("data", {})
    except (OSError, yaml.YAMLError):
        source = {}
    if isinstance(source, dict) and source.get("source") == "augmented":
        try:
            promoted = json.loads((run / "retrain.json").read_text(encoding="utf-8")).get("promote")
        except (OSError, ValueError):
            return "a retrain challenger whose comparison did not finish"
        if not promoted:
            return "a retrain challenger that was not promoted"
    return None


def run_retrain(
    config: str | Path,
    add_labeled: str | Path,
    *,
    champion: str | Path | None = None,
    overrides: list[str] | None = None,
    on: str = "test",
    alpha: float = 0.05,
    unseal_test: str | None = None,
    eval_labels: str | Path | None = None,
    margin: float = 0.02,
) -> dict[str, Any]:
    """Retrain with the labeled samples merged in, then compare with the champion (see module doc).

    With ``eval_labels`` (randomly selected labeled production samples, the format of
    ``closedloop adapt``), the challenger must be better on them and non-inferior within ``margin``
    on the held-out split.

    Both models are scored on the held-out split of the challenger's *resolved* data (the YAML file
    with every ``--set`` applied), and any held-out sample whose content either model trained on is
    left out of the comparison (recorded under ``excluded``)."""
    from closedloop.core.ledger import TestLedger
    from closedloop.core.pipeline import Pipeline
    from closedloop.core.stage import RunContext

    raw, base = resolve_retrain_config(config, add_labeled, overrides)
    runs_root = Path(raw.get("runs_dir", "runs")) / str(raw.get("name"))
    champion = Path(champion) if champion is not None else default_champion(runs_root)
    result = Pipeline.from_dict(raw, where=str(config)).run()
    if not result.ok:
        raise RunDirError(f"the challenger run failed: see {result.run_dir}")
    seed = int(raw.get("seed", 0))
    bundle = SOURCES.resolve(base["source"])({k: v for k, v in base.items() if k != "source"}).load(seed)
    challenger_bundle = SOURCES.resolve("augmented")(
        {k: v for k, v in raw["data"].items() if k != "source"}
    ).load(seed)
    if on == "test":
        ledger = TestLedger(
            global_path=runs_root / "test_ledger.jsonl",
            run_path=result.run_dir / "test_ledger.jsonl",
            run_id=result.run_dir.name,
            unseal_reason=unseal_test,
        )
        ctx = RunContext(
            stage_name="retrain",
            stage_dir=result.run_dir,
            seed=0,
            fingerprint="retrain-compare:"
            + hashlib.sha256(f"{champion.resolve()}|{result.run_dir.resolve()}".encode()).hexdigest(),
            test_ledger=ledger,
        )
        held = ctx.open_test(bundle, reason="champion vs challenger comparison (closedloop retrain)")
        trained = [("challenger", challenger_bundle.train, challenger_bundle.val)]
    else:
        held, on = unseen_by_both(champion, result.run_dir, bundle)
        trained = [("challenger", challenger_bundle.train)]
    trained += [("champion", *champion_training_splits(champion, seed, with_val=on == "test"))]
    held, excluded = drop_trained_on(held, trained)
    if len(held) == 0:
        raise DataError(
            f"every one of the {excluded['n']} held-out samples was in a model's training data "
            f"(by content hash: {excluded['by']}); nothing unseen is left to compare on"
        )
    production = None
    if eval_labels is not None:
        production = production_eval_set(
            eval_labels, bundle, champion, [("challenger", challenger_bundle.train)]
        )
    out = compare_runs(
        champion,
        result.run_dir,
        held.X,
        np.asarray(held.y),
        alpha=alpha,
        evaluated_on=on,
        production=production,
        margin=margin,
        groups=usable_clusters(held.groups),
    )
    out["heldout_split"] = on
    out["excluded"] = excluded
    out["data"] = {"resolved": base, "overrides": list(overrides or [])}
    out["dataset_version"] = record_dataset_version(runs_root, result.run_dir)
    from closedloop.tracking.aliases import apply_promotion

    # with tracking configured, champion/challenger aliases follow this decision (and only it)
    out["aliases"] = apply_promotion(result.run_dir, out["promote"], reasons=out["reasons"])
    write_text_atomic(result.run_dir / "retrain.json", to_json(out))
    return out


def production_eval_set(
    path: str | Path, bundle: DatasetBundle, champion: Path, trained: list[tuple[Any, ...]]
) -> tuple[Any, np.ndarray]:
    """Randomly selected labeled production samples to judge on (uncertainty-selected ones refused),
    without any a model trained on (content hash)."""
    from closedloop.monitoring.production_labels import RANDOM_SOURCES, check_version, read_production_labels

    labels = read_production_labels(path, list(bundle.meta.label_names))
    check_version(labels, champion, "the evaluation samples")
    random = labels.randomly_selected()
    if not random.all():
        bad = sorted(set(labels.selected_by[~random].tolist()))  # type: ignore[index]
        raise DataError(
            f"{path}: {int((~random).sum())} evaluation sample(s) were selected by {bad} (chosen for being "
            f"uncertain or unusual), which biases any score on them; evaluation data must be randomly selected "
            f"({', '.join(sorted(RANDOM_SOURCES))}); add them with --add-labeled instead"
        )
    held, excluded = drop_trained_on(Split(X=labels.X, y=labels.y), trained)
    if excluded["n"]:
        raise DataError(
            f"{path}: {excluded['n']} evaluation sample(s) are in the challenger's training data (content hash "
            "matches --add-labeled); judge on samples it never saw"
        )
    return held.X, np.asarray(held.y)


def champion_training_splits(champion_dir: Path, seed: int, *, with_val: bool = True) -> list[Split]:
    """The splits the champion's run trained (and selected) on, from its own saved ``config.yaml``."""
    from closedloop.core.config import load_yaml_file

    cfg = champion_dir / "config.yaml"
    if not cfg.is_file():
        return []  # a bare model directory: only the challenger's data can be checked
    data = dict(load_yaml_file(cfg).get("data") or {})
    key = data.pop("source", None)
    if key is None:
        return []
    b = SOURCES.resolve(key, where=f"{cfg}: data.source")(data).load(seed)
    return [b.train, b.val] if with_val and "val" in b.splits else [b.train]


def drop_trained_on(held: Split, trained: list[tuple[Any, ...]]) -> tuple[Split, dict[str, Any]]:
    """``held`` without the samples whose content (image bytes or row values) appears in a model's
    training splits; ``trained`` is ``[(model name, split, ...), ...]``. A split name says nothing
    about content: a labeled folder can hold copies of test images."""
    from closedloop.stages.audit.duplicates import content_hashes

    keys = content_hashes(held)
    drop = np.zeros(len(keys), bool)
    by: dict[str, int] = {}
    for name, *splits in trained:
        seen = {h for s in splits for h in content_hashes(s)}
        hit = np.array([k in seen for k in keys], bool)
        if hit.any():
            by[name] = int(hit.sum())
        drop |= hit
    keep = np.flatnonzero(~drop)
    X = held.X.iloc[keep].reset_index(drop=True) if isinstance(held.X, pd.DataFrame) else held.X[keep]
    info = {
        "n": int(drop.sum()),
        "of": len(keys),
        "by": by,
        "rule": "held-out samples whose content hash is in either model's training data are left out",
    }
    groups = None if held.groups is None else np.asarray(held.groups)[keep]
    return Split(X=X, y=np.asarray(held.y)[keep], groups=groups), info


def unseen_by_both(champion_dir: Path, challenger_dir: Path, bundle: DatasetBundle) -> tuple[Split, str]:
    """The validation rows neither model trained on (their final fits used train + the rest of val),
    and how to label them. Raises when there are none: compare on test then."""
    from closedloop.models.heldout import heldout_split, unseen_val_rows

    champ, _ = _load_run(champion_dir)
    chall, _ = _load_run(challenger_dir)
    heldout_split(chall, bundle, "retrain")  # same validation split as the challenger trained with
    n_val = len(bundle.val)
    rows = np.intersect1d(unseen_val_rows(champ, n_val), unseen_val_rows(chall, n_val))
    if len(rows) == 0:
        raise RunDirError(
            f"--on val: none of the {n_val} validation samples is unseen by both the champion "
            f"({champion_dir}) and the challenger ({challenger_dir}); their final fits used validation. "
            "Compare with --on test instead"
        )
    val = bundle.val
    X = val.X.iloc[rows].reset_index(drop=True) if isinstance(val.X, pd.DataFrame) else val.X[rows]
    label = f"validation rows unseen by both models ({len(rows)} of {n_val})"
    groups = None if val.groups is None else np.asarray(val.groups)[rows]
    return Split(X=X, y=np.asarray(val.y)[rows], groups=groups), label


def record_dataset_version(runs_root: Path, run_dir: Path) -> dict[str, Any] | None:
    """The challenger's dataset version (from its data artifact's provenance), appended to
    ``<runs_root>/dataset_versions.jsonl`` so every merged set of labels stays on record."""
    from closedloop.core.io import read_json
    from closedloop.core.run_reader import RunDir

    metas = [
        p / "meta.json" for p in RunDir(run_dir).artifact_dirs("DatasetBundle") if (p / "meta.json").is_file()
    ]
    if not metas:
        return None
    aug = (read_json(metas[-1]).get("provenance") or {}).get("augmented")
    if not aug:
        return None
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run_id": run_dir.name, **aug}
    runs_root.mkdir(parents=True, exist_ok=True)
    with open(runs_root / "dataset_versions.jsonl", "a", encoding="utf-8") as f:
        f.write(to_json(entry, indent=None) + "\n")
    return aug
