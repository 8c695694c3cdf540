"""Checking production data against a reference profile.

Example:
    >>> monitor = Monitor.load("runs/pneumonia/20250101-120000-abcd1234")   # doctest: +SKIP
    >>> result = monitor.check(images)                                      # doctest: +SKIP
    >>> result["alert"], result["p_values"], result["estimated"]            # doctest: +SKIP
    >>> stream = monitor.check_stream(images, window=200)                   # doctest: +SKIP

Over 400 lines but one idea: checking windows of production data against the reference.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from closedloop.core.errors import DataError, RunDirError
from closedloop.core.run_reader import RunDir
from closedloop.monitoring.class_mix import estimate_class_mix
from closedloop.monitoring.domain import DomainCheck, domain_check, weighted_platt
from closedloop.monitoring.drift import DEFAULT_LABEL_TESTS, DriftTest, Sample, build_tests, run_tests
from closedloop.monitoring.drift.stats import single_threaded_blas
from closedloop.monitoring.estimate import estimate, realized
from closedloop.monitoring.low_positive import low_positive_reason
from closedloop.monitoring.profile import ReferenceProfile, forward_all, model_input, summary_features
from closedloop.monitoring.recalibrate import EstimateCalibration, fit_estimate_calibration
from closedloop.monitoring.stream import StreamTest, stream_scores
from closedloop.monitoring.stream_reference import ReferenceStreamTest, new_stream_test, spend
from closedloop.monitoring.train_reference import train_reference_check

MIN_WINDOW = 10
"""Fewer samples than this cannot support any of the tests."""


def model_fingerprint(model: Any) -> str:
    """sha256 of the network weights (key order fixed), independent of how the file was written."""
    h = hashlib.sha256()
    for k, v in sorted(model.network.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def find_profile_dir(run_dir: str | Path) -> Path:
    """The reference profile's directory: ``run_dir`` itself when it holds ``profile.json``, else the
    newest reference set from a verified production period (``run_dir/references/<time>/``, written by
    ``closedloop monitor ... --set-reference``), else the run's last monitor stage artifact."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunDirError(f"{run_dir}: no such run directory")
    if (run_dir / "profile.json").is_file():
        return run_dir
    refreshed = sorted(p.parent for p in run_dir.glob("references/*/profile.json"))
    if refreshed:
        return refreshed[-1]
    found = [p for p in RunDir(run_dir).artifact_dirs(ReferenceProfile) if (p / "profile.json").is_file()]
    if not found:
        raise RunDirError(
            f"{run_dir}: this run has no reference profile (no finished ReferenceProfile in its manifest.json). "
            "Build one: add '- kind: monitor' after the train stage of the pipeline YAML and run "
            "'closedloop run CONFIG' (the cached stages are reused), or in Python run the "
            "BuildMonitorProfile stage on the run's data, task and model."
        )
    return found[-1]


@dataclass
class Prepared:
    """A validated batch: raw model input, monitored features and data-quality findings."""

    raw: Any
    quality: dict[str, Any] = field(default_factory=dict)
    keep: np.ndarray | None = None
    """Indices of the rows kept (rows that cannot be scored, e.g. NaN pixels, are dropped)."""


class Monitor:
    """Compares production windows with a :class:`ReferenceProfile` using the profile's model."""

    def __init__(self, profile: ReferenceProfile, model: Any, *, seed: int = 0, effects: bool = True) -> None:
        self.profile = profile
        self.model = model
        self.seed = seed
        self.effects = effects
        """Compute effect sizes and per-feature details (the live monitor, which reports p-values and
        evidence only, turns them off: they are most of a window's cost)."""
        self.tests = build_tests(profile.info.tests, where="reference profile tests")
        """The profile's drift tests, in order."""
        self.label_tests = [] if any(t.needs_labels for t in self.tests) else build_tests(DEFAULT_LABEL_TESTS)
        """Label tests added when labels arrive and the profile names none."""
        self.recalibration = self._recalibration()
        """What the label-free estimate applies (``estimate_calibration``: a held-out Platt map and/or a
        constant accuracy correction), or None."""

    def _recalibration(self) -> EstimateCalibration | None:
        info, ref = self.profile.info, self.profile.domain
        if (
            info.estimate_calibration == "none"
            or info.problem_type != "binary"
            or ref.proba is None
            or ref.labels is None
        ):
            return None
        return fit_estimate_calibration(info.estimate_calibration, ref.proba, ref.labels, info.threshold)

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def load(cls, run_dir: str | Path, *, model_dir: str | Path | None = None, seed: int = 0) -> Monitor:
        """Load the reference profile and the model from a run directory (or a profile directory)."""
        from closedloop.models.trained import TrainedModel

        run_dir = Path(run_dir)
        profile_dir = find_profile_dir(run_dir)
        profile = ReferenceProfile.load(profile_dir)
        if model_dir is not None:
            model = TrainedModel.load(Path(model_dir))
        else:
            roots = [run_dir, *run_dir.parents[:4]] if profile_dir == run_dir else [run_dir]
            candidates: list[Path] = []
            for root in roots:
                candidates = [
                    p for p in RunDir(root).artifact_dirs("TrainedModel") if (p / "model.json").is_file()
                ]
                if candidates:
                    break
            if not candidates:
                raise RunDirError(
                    f"{run_dir}: found the reference profile but no trained model "
                    "(stages/*/artifacts/model/model.json); pass model_dir= (or --model DIR)"
                )
            model = None
            for cand in reversed(candidates):
                m = TrainedModel.load(cand)
                if model_fingerprint(m) == profile.info.model_sha256:
                    model = m
                    break
            if model is None:
                raise RunDirError(
                    f"{run_dir}: none of the models {[str(c) for c in candidates]} is the one the reference "
                    "profile was built with (weights hash differs); rerun the monitor stage"
                )
        return cls(profile, model, seed=seed)

    # -- input validation -----------------------------------------------------------------------
    def schema(self) -> str:
        i = self.profile.info
        if i.kind == "images":
            return f"uint8 images shaped (N, {', '.join(map(str, i.input_shape))}) with pixel values 0..255"
        return f"a table with columns {i.input_columns}"

    def prepare(self, batch: Any) -> Prepared:
        """Validate a batch against the profile's schema; fixable problems become findings."""
        info = self.profile.info
        if info.kind == "images":
            return self._prepare_images(batch)
        return self._prepare_table(batch, info.input_columns)

    def _prepare_images(self, batch: Any) -> Prepared:
        shape = tuple(self.profile.info.input_shape)
        try:
            x = np.asarray(batch)
        except Exception as exc:  # ragged lists
            raise DataError(
                f"production data: cannot read as an array ({exc}); expected {self.schema()}"
            ) from None
        if x.dtype.kind not in "uifb":
            raise DataError(f"production data: dtype {x.dtype} is not numeric; expected {self.schema()}")
        if x.ndim == 3 and shape[-1] == 1:
            x = x[..., None]
        if x.ndim == 2 and len(shape) == 3 and x.shape[1] == int(np.prod(shape)):
            x = x.reshape(len(x), *shape)
        if x.ndim != 4:
            raise DataError(f"production data: got shape {x.shape}; expected {self.schema()}")
        if len(x) == 0:
            raise DataError(f"empty window: 0 samples; expected {self.schema()}")
        if x.shape[1:] != shape:
            hint = ""
            if x.shape[1] == shape[2] and x.shape[2:] == shape[:2]:
                hint = " (channels-first? transpose to (N, H, W, C))"
            elif x.shape[1:3] == shape[:2]:
                hint = f" ({x.shape[3]} channel(s) where the model takes {shape[2]})"
            else:
                hint = f" (images are {x.shape[1]}x{x.shape[2]}, the model takes {shape[0]}x{shape[1]}: resize them)"
            raise DataError(f"production data: got shape {x.shape}{hint}; expected {self.schema()}")
        quality: dict[str, Any] = {"n_rows": int(len(x)), "warnings": []}
        keep = np.arange(len(x))
        if x.dtype.kind == "f":
            bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
            quality["rows_with_missing"] = int(bad.sum())
            if bad.any():
                quality["warnings"].append(f"{int(bad.sum())} image(s) with NaN/inf pixels were not scored")
                keep = np.flatnonzero(~bad)
                x = x[keep]
            if len(x) and float(np.nanmax(x)) <= 1.0:
                quality["warnings"].append(
                    "pixel values are all <= 1.0: the data looks scaled to [0, 1] while the model expects 0..255"
                )
        if len(x) and (x.min() < 0 or x.max() > 255):
            quality["warnings"].append("pixel values outside 0..255 were clipped")
            x = np.clip(x, 0, 255)
        if len(x) == 0:
            raise DataError("empty window: no image could be scored (all had NaN pixels)")
        return Prepared(raw=x, quality=quality, keep=keep)

    def _prepare_table(self, batch: Any, columns: list[str]) -> Prepared:
        if isinstance(batch, np.ndarray):
            if batch.ndim != 2 or batch.shape[1] != len(columns):
                raise DataError(
                    f"production data: got an array of shape {batch.shape}; expected {self.schema()}"
                )
            batch = pd.DataFrame(batch, columns=columns)
        if not isinstance(batch, pd.DataFrame):
            raise DataError(f"production data: got {type(batch).__name__}; expected {self.schema()}")
        missing = [c for c in columns if c not in batch.columns]
        if missing:
            raise DataError(f"production data: missing column(s) {missing}; expected {self.schema()}")
        if len(batch) == 0:
            raise DataError(f"empty window: 0 rows; expected {self.schema()}")
        df = batch[columns]
        na = df.isna()
        quality: dict[str, Any] = {
            "n_rows": int(len(df)),
            "n_missing_values": int(na.to_numpy().sum()),
            "rows_with_missing": int(na.any(axis=1).sum()),
            "missing_by_feature": {c: int(v) for c, v in na.sum().items() if v},
            "warnings": [],
        }
        extra = [c for c in batch.columns if c not in columns]
        if extra:
            quality["warnings"].append(f"extra column(s) ignored: {extra[:10]}")
        ref_missing = dict(zip(self.profile.info.feature_names, self.profile.info.missing_rate, strict=False))
        for c, v in quality["missing_by_feature"].items():
            rate = v / len(df)
            if rate > ref_missing.get(c, 0.0) + 0.05:
                quality["warnings"].append(
                    f"column {c!r}: {rate:.0%} missing (reference {ref_missing.get(c, 0.0):.0%})"
                )
        for c in df.columns:
            if c not in self.profile.info.categories and not pd.api.types.is_numeric_dtype(df[c]):
                bad = pd.to_numeric(df[c], errors="coerce").isna() & ~df[c].isna()
                if bad.any():
                    quality["warnings"].append(
                        f"column {c!r}: {int(bad.sum())} non-numeric value(s) treated as missing"
                    )
        return Prepared(raw=df, quality=quality, keep=np.arange(len(df)))

    # -- scoring --------------------------------------------------------------------------------
    def sample(self, prepared: Prepared, labels: Any = None) -> Sample:
        """Features, reduced embeddings and probabilities of a prepared batch (one forward pass)."""
        info = self.profile.info
        feats = summary_features(info, prepared.raw)
        x = model_input(info, prepared.raw)
        for j, name in enumerate(info.input_columns):
            if name in info.categories:  # unseen categories are missing for the model
                col = x[:, j]
                col[col >= len(info.categories[name])] = np.nan
        emb, proba = forward_all(self.model, x)
        y = None
        if labels is not None:
            y = np.asarray(labels)
            if len(y) != prepared.quality.get("n_rows", len(y)):
                raise DataError(f"labels: {len(y)} given for {prepared.quality.get('n_rows')} samples")
            y = y[prepared.keep] if prepared.keep is not None else y
        return Sample(features=feats, embeddings=self.profile.reduce(emb), proba=proba, labels=y)

    def _evaluate(
        self,
        win: Sample,
        quality: dict[str, Any],
        rng: np.random.Generator,
        stream: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        info = self.profile.info
        ref = self.profile.reference
        ctx = self.profile.context(rng)
        ctx.effects = self.effects
        tests: dict[str, DriftTest] = {t.name: t for t in self.tests}
        if win.labels is not None:
            tests.update({t.name: t for t in self.label_tests})
        with single_threaded_blas():
            results = run_tests(list(tests.values()), ref, win, ctx)
        p_values = {k: float(r.p_value) for k, r in results.items()}
        unlabeled = {k: p for k, p in p_values.items() if not tests[k].needs_labels}
        min_p = min(unlabeled.values()) if unlabeled else 1.0
        thr = self.profile.threshold_for(len(win))
        alert = "alarm" if min_p <= thr["alarm"] else "warn" if min_p <= thr["warn"] else "ok"
        evidence = []
        for k, r in sorted(results.items(), key=lambda kv: kv[1].p_value):
            if r.p_value <= thr["warn"]:
                evidence.append(
                    f"{k}: p={r.p_value:.2g} ({'; '.join(filter(None, [tests[k].headline(), r.said]))})"
                )
        for k, p in p_values.items():
            if tests[k].needs_labels and p <= info.alpha:
                evidence.append(f"{k}: p={p:.2g}: {tests[k].label_evidence or tests[k].description}")
                if alert == "ok":
                    alert = "warn"
        if quality.get("warnings"):
            evidence += [f"data quality: {w}" for w in quality["warnings"]]
            if alert == "ok":
                alert = "warn"
        # the estimate's own probabilities: recalibrated on the held-out rows when the profile says so, at
        # the mapped threshold (the same decisions)
        cal = self.recalibration
        est = (
            estimate(
                win.proba if cal is None else cal.proba(win.proba),
                info.problem_type,
                info.threshold if cal is None else cal.threshold(info.threshold),
                info.metrics,
                rng=rng,
            )
            if win.proba is not None
            else {}
        )
        if cal is not None:
            est = cal.correct(est)
        # confidence-based estimation (CBPE) assumes the reference's confidence-accuracy relation holds
        # in the window; evidence that the window differs from the reference at the marginal alarm
        # level (about alpha of in-distribution windows) is evidence it may not, so the point estimate
        # is withheld there and random labels are asked for instead
        level = thr.get("alarm_marginal", thr["alarm"])
        differs = sorted((p, k) for k, p in unlabeled.items() if p <= level)
        # the stream since the reference is evidence too: once its evidence reaches the level over runs
        # (1/stream_alpha, as the drift tests above use their marginal level), the stream may not be the
        # reference's distribution, and no later window's estimate is trusted (until a new reference);
        # the stream ALARM waits for the per-deployment level (stream_delta)
        # (``stream_evidence: per_deployment``: only the alarm withholds it; ``budget``: the evidence at
        # stream_alpha * stream_evidence_delta, which the stream test records as evidence_at, rule W17)
        evidence_at = (
            stream.get("evidence_at") if stream and info.stream_evidence != "per_deployment" else None
        )
        drifted = bool(stream and (stream.get("alarm") or evidence_at is not None))
        # a domain classifier between the reference and the window: a covariate shift the per-feature
        # tests miss, and importance weights whose effective sample size says whether the reference
        # can still speak for this window at all
        domain, weighted = self._domain(win, rng) if est else (None, {})
        domain_why = []
        flags = ["drift"] if differs else []
        level_d = info.domain_level
        # a second reference no deployment's draw decides: the training rows' model-free features; the
        # two tests share the per-deployment domain level (a union: the training rows' test at its share,
        # the held-out test at the rest), so its guarantee holds
        train_check = None
        level_t = None
        if est and level_d is not None and self.profile.train_features is not None:
            level_t = level_d * info.train_reference_share
            level_d = level_d - level_t
            train_check = train_reference_check(self.profile.train_features, win.features, rng)
        if domain is not None and level_d is not None and domain.p_value <= level_d:
            flags.append("domain")
            domain_why.append(
                f"the window's inputs differ from the reference's (domain {domain.test.replace('_', '-')} test "
                f"p={domain.p_value:.2g}, classifier AUC {domain.auc:.2f})"
            )
        if train_check is not None and level_t is not None and train_check.p_value <= level_t:
            if "domain" not in flags:
                flags.append("domain")
            domain_why.append(
                f"the window's inputs differ from {train_check.n_train} training rows' (mean-shift test of the "
                f"summary features p={train_check.p_value:.2g})"
            )
        # the stream's first window (its rows start before the first look) has only its own rows as
        # evidence; first_window_alpha flags it at a looser level, once per reference
        first = info.first_window_alpha
        if (
            domain is not None
            and first is not None
            and "domain" not in flags
            and stream is not None
            and int(stream.get("n", 0)) - len(win) < info.stream_look
            and domain.p_value <= first
        ):
            flags.append("first_window")
            domain_why.append(
                f"the stream's first window differs from the reference (domain {domain.test.replace('_', '-')} "
                f"test p={domain.p_value:.2g} <= {first:g}, the first window's level)"
            )
        # rule F19: the window that holds a stream look is flagged, that window only, when the look's p-value
        # is under the look flag's level; the sticky evidence above withholds every later window from its
        # own (stricter) level, this flag costs an in-distribution stream one window per low look
        look = self._look_flag(stream, len(win))
        if est and look is not None:
            flags.append("stream_look")
            domain_why.append(look)
        # rule W20: a weak network's shift can move normal rows just over the decision threshold, which no
        # window-level drift or domain test sees; the share of barely-positive calls against the held-out rows'
        low = (
            low_positive_reason(info.low_positive_flag, self.profile.domain.proba, win.proba, info.threshold)
            if est and info.problem_type == "binary" and self.profile.domain is not None
            else None
        )
        if low is not None:
            flags.append("low_positive")
            domain_why.append(low)
        if domain is not None and domain.ess_fraction < info.min_ess_fraction:
            flags.append("ess")
            domain_why.append(
                f"importance weights are extreme: {domain.ess:.0f} of {domain.n_reference} reference rows effectively "
                f"speak for the window (ESS fraction {domain.ess_fraction:.2f} < {info.min_ess_fraction:g})"
            )
        if drifted:
            flags.append("stream")
        reliable = bool(est) and not differs and not drifted and not domain_why
        reason = ""
        if est and not reliable:
            which = ", ".join([*(f"{k} p={p:.2g}" for p, k in differs[:3]), *domain_why])
            if drifted:
                assert stream is not None
                which = ", ".join(
                    x
                    for x in (
                        which,
                        f"stream e-value {stream['max_e_value']:.3g} since row "
                        f"{evidence_at or stream['alarm_at']}",
                    )
                    if x
                )
            reason = (
                f"withheld: the data differ from the reference ({which}), so the confidence-accuracy "
                "relation the label-free estimate assumes may not hold here; measure it on randomly chosen labels"
            )
            evidence.append(f"label-free estimate {reason}")
        out: dict[str, Any] = {
            "n": int(len(win)),
            "alert": alert,
            "estimate_reliable": reliable,
            "estimate_reason": reason,
            "estimate_flags": flags if est else [],
            "p_values": p_values,
            "min_p": float(min_p),
            "thresholds": thr,
            "guarantee": self.profile.guarantee_for(len(win)),
            "estimated": {m: v["value"] for m, v in est.items()} if reliable else {},
            "estimated_interval": {m: [v["low"], v["high"]] for m, v in est.items()} if reliable else {},
            "estimate_withheld": {m: v["value"] for m, v in est.items()} if not reliable else {},
            "spot_check": spot_check(est, reliable),
            "domain": domain.model_dump() if domain is not None else None,
            "train_reference": train_check.model_dump() if train_check is not None else None,
            "estimate_calibration": cal.record() if cal is not None else None,
            "estimate_weighted": weighted,
            "reference_performance": dict(info.reference_performance),
            "evidence": evidence,
            "data_quality": quality,
            "tests": {
                k: {"statistic": r.statistic, "effect": r.effect, "details": r.details}
                for k, r in results.items()
            },
        }
        if "features" in results:
            out["top_features"] = [
                {k: d[k] for k in ("feature", "p_value", "psi") if k in d}
                for d in results["features"].details[:5]
            ]
        # production's class mix from the decisions alone, with a generator of its own (the draws above stay)
        mix = (
            estimate_class_mix(
                self.profile.domain.proba,
                self.profile.domain.labels,
                win.proba,
                info.problem_type,
                info.threshold,
                seed=[self.seed, len(win), 41],
            )  # fmt: skip
            if self.profile.domain is not None and win.proba is not None
            else None
        )
        out["class_mix"] = mix.model_dump() if mix is not None else None
        # shown when the decisions' shares differ from the reference's at the level that withholds the
        # label-free estimate (the calibrated predicted-class test): what the mix moved to, if only it moved
        if mix is not None and any(k == "predicted_class" for _, k in differs):
            evidence.append(mix.sentence(list(info.label_names)))
        if win.labels is not None and win.proba is not None:
            real = realized(info.metrics, win.labels, win.proba, info.problem_type, info.threshold)
            out["realized"] = real
            point = out["estimated"] or out["estimate_withheld"]
            out["estimate_gap"] = {m: point[m] - v for m, v in real.items() if m in point}
        return out

    def _domain(self, win: Sample, rng: np.random.Generator) -> tuple[DomainCheck | None, dict[str, float]]:
        """The domain check and (binary tasks) the importance-weighted calibration's estimate; none when
        the profile has no labeled reference probabilities or the check is switched off."""
        info, ref = self.profile.info, self.profile.domain
        if (
            (info.domain_alpha is None and info.min_ess_fraction <= 0)
            or ref.proba is None
            or win.proba is None
            or info.problem_type not in ("binary", "multiclass", "ordinal")
            or min(len(ref), len(win)) < 10
        ):
            return None, {}
        check, w = domain_check(ref, win, info.problem_type, rng)
        weighted: dict[str, float] = {}
        labels = ref.labels
        if info.problem_type == "binary" and labels is not None and len(np.unique(labels)) == 2:
            p = weighted_platt(ref.proba, labels, w, win.proba)
            est = estimate(p, info.problem_type, info.threshold, info.metrics, rng=rng)
            weighted = {m: v["value"] for m, v in est.items()}
        return check, weighted

    def evaluate(
        self,
        win: Sample,
        quality: dict[str, Any] | None = None,
        seed: Any = None,
        stream: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Check an already scored window (features and probabilities computed elsewhere, e.g. from a
        request log): the same result as :meth:`check`, without touching the model. ``stream``: the
        stream test's status after the window (its evidence at the level over runs, ``evidence_at``, or
        its alarm withholds the label-free estimate)."""
        rng = np.random.default_rng(self.seed if seed is None else seed)
        return self._evaluate(win, quality or {"n_rows": len(win), "warnings": []}, rng, stream)

    def check(self, batch: Any, labels: Any = None) -> dict[str, Any]:
        """Check one window: alert level, p-value per test, estimated (and realized) performance."""
        prepared = self.prepare(batch)
        win = self.sample(prepared, labels)
        if len(win) < MIN_WINDOW:
            raise DataError(
                f"window of {len(win)} samples: at least {MIN_WINDOW} are needed for the drift tests"
            )
        return self._evaluate(win, prepared.quality, np.random.default_rng(self.seed))

    def stream_test(self) -> StreamTest | ReferenceStreamTest:
        """A stream test starting at the reference: the profile's ``stream_test`` (``reference``:
        ``closedloop.monitoring.stream_reference``; ``conformal``: ``closedloop.monitoring.stream``)."""
        return new_stream_test(self.profile, self.seed)

    def stream_update(
        self, test: StreamTest | ReferenceStreamTest, win: Sample, last: bool = False
    ) -> dict[str, Any]:
        """Feed a window's rows to the stream test; its status after them, as a dict. ``last``: the
        stream ends with these rows (a file read offline), so the fixed-reference test takes a last
        look at them even between looks (:meth:`ReferenceStreamTest.finish`)."""
        info = self.profile.info
        if isinstance(test, ReferenceStreamTest):
            test.update(win)
            return (test.finish() if last else test.status()).model_dump()
        return test.update(stream_scores(win.proba, info.problem_type, info.threshold)).model_dump()

    def check_stream(self, data: Any, window: int = 200, labels: Any = None) -> MonitorResult:
        """Split ``data`` into consecutive windows of ``window`` samples and check each (a last window
        shorter than half the size is merged into the one before). The stream test follows all the
        rows, in order, beside the per-window alerts; the fixed-reference test takes a last look at the
        end of the data (its end is known before any row is read), which the last window sees."""
        if window < MIN_WINDOW:
            raise DataError(f"--window {window}: at least {MIN_WINDOW} samples per window are needed")
        prepared = self.prepare(data)
        full = self.sample(prepared, labels)
        n = len(full)
        bounds = list(range(0, n, window))
        if len(bounds) > 1 and n - bounds[-1] < window // 2:
            bounds.pop()
        if not bounds:
            raise DataError("empty stream: no samples")
        windows = []
        stream = self.stream_test()
        row_ids = prepared.keep if prepared.keep is not None else np.arange(n)
        for i, start in enumerate(bounds):
            end = bounds[i + 1] if i + 1 < len(bounds) else n
            if end - start < MIN_WINDOW:
                raise DataError(f"{n} samples: too few for a window (at least {MIN_WINDOW} needed)")
            idx = np.arange(start, end)
            quality = _window_quality(prepared.quality, self.profile.info.kind, prepared.raw, idx)
            status = self.stream_update(stream, full.take(idx), last=i == len(bounds) - 1)
            res = self._evaluate(full.take(idx), quality, np.random.default_rng([self.seed, i]), status)
            res["stream"] = status
            windows.append(
                {"index": i, "start": int(row_ids[start]), "end": int(row_ids[end - 1]) + 1, **res}
            )
        return MonitorResult(
            windows=windows,
            window=window,
            alpha=self.profile.info.alpha,
            quality=prepared.quality,
            stream=stream.status().model_dump(),
            guarantee=self.profile.info.guarantee,
            stream_evidence=self.profile.info.stream_evidence,
            stream_evidence_delta=self.profile.info.stream_evidence_delta,
        )

    def _look_flag(self, stream: dict[str, Any] | None, rows: int) -> str | None:
        """The look flag's reason when the stream's last look was taken on one of the window's ``rows`` (the
        last rows of the stream) at a p-value at or under ``stream_look_flag``'s level; None otherwise."""
        level = self.profile.info.stream_look_flag
        if level is None or not stream or stream.get("p_value") is None or not stream.get("looks"):
            return None
        k, n = int(stream["looks"]), int(stream.get("n", 0))
        # looks at every look_rows rows; a finished stream's last look at its end (stream_reference.finish)
        at = min(n, k * int(stream.get("look_rows") or self.profile.info.stream_look))
        if n - rows >= at:
            return None  # the last look is older than this window
        limit = self.profile.info.stream_alpha * spend(k) if level == "over_runs" else float(level)
        p = float(stream["p_value"])
        if p > limit:
            return None
        which = "the level over runs" if level == "over_runs" else "the look flag's level"
        return f"the stream's look {k} at row {at} (p={p:.2g} <= {limit:.2g}, {which})"

    # -- flywheel and shadow mode ---------------------------------------------------------------
    def review_queue(
        self,
        data: Any,
        k: int = 50,
        out_dir: str | Path | None = None,
        strategy: str | None = None,
        review: Any = None,
    ) -> pd.DataFrame:
        """Choose the ``k`` samples most worth labeling with the profile's review strategy (or
        ``strategy`` / a ``ReviewConfig``); optionally export them for labeling."""
        from closedloop.monitoring.flywheel import build_queue, export_queue
        from closedloop.monitoring.selection import ReviewConfig, get_strategy

        cfg: ReviewConfig = review or self.profile.info.review
        if strategy is not None and strategy != cfg.strategy:
            get_strategy(strategy)  # unknown name: ConfigError with a "did you mean"
            cfg = ReviewConfig(strategy=strategy, control_fraction=cfg.control_fraction)
        prepared = self.prepare(data)
        win = self.sample(prepared)
        queue = build_queue(self.profile, win, prepared.keep, k=k, review=cfg, seed=self.seed)
        if out_dir is not None:
            export_queue(queue, prepared.raw, prepared.keep, self.profile, Path(out_dir), proba=win.proba)
        return queue

    @staticmethod
    def shadow(champion: Monitor, challenger: Monitor, batch: Any) -> dict[str, Any]:
        """Run both models on the same batch: disagreement and each model's estimated performance."""
        from closedloop.monitoring.drift.predictions import predicted_classes

        out: dict[str, Any] = {}
        preds = {}
        for name, mon in (("champion", champion), ("challenger", challenger)):
            prepared = mon.prepare(batch)
            s = mon.sample(prepared)
            info = mon.profile.info
            est = estimate(s.proba, info.problem_type, info.threshold, info.metrics)
            preds[name] = (s.proba, info)
            out[name] = {
                "estimated": {m: v["value"] for m, v in est.items()},
                "estimated_interval": {m: [v["low"], v["high"]] for m, v in est.items()},
                "reference_performance": info.reference_performance,
            }
        (pa, ia), (pb, ib) = preds["champion"], preds["challenger"]
        if len(pa) != len(pb):
            raise DataError("shadow mode: the two models scored different numbers of samples")
        out["n"] = int(len(pa))
        if ia.problem_type in ("binary", "multiclass", "ordinal"):
            ca = predicted_classes(pa, ia.problem_type, ia.threshold)
            cb = predicted_classes(pb, ib.problem_type, ib.threshold)
            out["disagreement"] = float(np.mean(ca != cb))
            out["disagreement_count"] = int(np.sum(ca != cb))
        out["mean_abs_probability_difference"] = (
            float(np.abs(pa - pb).mean()) if pa.shape == pb.shape else None
        )
        return out


SPOT_CHECK_MARGIN = 0.05
"""Half-width of the 95% interval a spot check of random labels should give realized accuracy."""


def spot_check(est: dict[str, Any], reliable: bool) -> dict[str, Any]:
    """How many randomly chosen labels would measure realized accuracy within +-0.05 (95%, normal
    approximation), planned at the estimated accuracy when the estimate holds and at the worst case
    (0.5) when it does not; asked for when the estimate is withheld."""
    if "acc" not in est:
        return {}
    p = float(est["acc"]["value"]) if reliable else 0.5
    p = min(max(p, 0.5), 0.999) if not reliable else min(max(p, 0.001), 0.999)
    n = int(np.ceil(1.96**2 * p * (1 - p) / SPOT_CHECK_MARGIN**2))
    return {
        "labels_for_acc_within": SPOT_CHECK_MARGIN,
        "labels_needed": n,
        "planned_at_accuracy": p,
        "asked": not reliable,
        "note": "randomly chosen rows only: labels picked by uncertainty are biased and never enter realized metrics",
    }


def _window_quality(full: dict[str, Any], kind: str, raw: Any, idx: np.ndarray) -> dict[str, Any]:
    """Data-quality findings restricted to one window (tables: recount missing values)."""
    if kind != "table":
        q = {"n_rows": int(len(idx)), "warnings": []}
        return q
    df = raw.iloc[idx]
    na = df.isna()
    q = {
        "n_rows": int(len(df)),
        "n_missing_values": int(na.to_numpy().sum()),
        "rows_with_missing": int(na.any(axis=1).sum()),
        "missing_by_feature": {c: int(v) for c, v in na.sum().items() if v},
        "warnings": [
            w
            for w in full.get("warnings", [])
            if "missing" in w and any(c in w for c in na.columns if na[c].any())
        ],
    }
    return q


@dataclass
class MonitorResult:
    """The result of :meth:`Monitor.check_stream` (what ``closedloop monitor --out`` writes)."""

    windows: list[dict[str, Any]]
    window: int
    alpha: float
    quality: dict[str, Any] = field(default_factory=dict)
    stream: dict[str, Any] = field(default_factory=dict)
    """The stream test after the last row (``StreamStatus``): beside the per-window alerts."""
    guarantee: str = ""
    """What the alarms promise (the profile's sentence)."""
    stream_evidence: str = "over_runs"
    """The stream level that withholds the estimate (``ProfileInfo.stream_evidence``; the timeline draws it)."""
    stream_evidence_delta: float | None = None
    """``stream_evidence: budget``: its factor of alpha (``ProfileInfo.stream_evidence_delta``)."""

    def summary(self) -> dict[str, Any]:
        alerts = [w["alert"] for w in self.windows]
        return {
            "n_windows": len(alerts),
            "n_alarm": alerts.count("alarm"),
            "n_warn": alerts.count("warn"),
            "n_ok": alerts.count("ok"),
            "alarm_rate": alerts.count("alarm") / max(len(alerts), 1),
            "stream_alarm": bool(self.stream.get("alarm", False)),
            "stream_alarm_at": self.stream.get("alarm_at"),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "alpha": self.alpha,
            "summary": self.summary(),
            "stream": self.stream,
            "guarantee": self.guarantee,
            "stream_evidence": self.stream_evidence,
            "stream_evidence_delta": self.stream_evidence_delta,
            "data_quality": self.quality,
            "windows": self.windows,
        }

    def plot(self, path: str | Path) -> Path:
        """Drift timeline: min-p per window against the alarm/warn thresholds, and the estimates."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        idx = [w["index"] for w in self.windows]
        fig, axes = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
        ax = axes[0]
        keys = sorted({k for w in self.windows for k in w["p_values"]})
        for k in keys:
            ax.plot(
                idx, [max(w["p_values"].get(k, np.nan), 1e-6) for w in self.windows], ".-", lw=0.8, label=k
            )
        ax.plot(
            idx,
            [w["thresholds"]["alarm"] for w in self.windows],
            "r--",
            lw=1,
            label="alarm threshold (min-p)",
        )
        ax.plot(
            idx, [w["thresholds"]["warn"] for w in self.windows], "--", color="orange", lw=1, label="warn"
        )
        for w in self.windows:
            if w["alert"] != "ok":
                ax.axvspan(
                    w["index"] - 0.5,
                    w["index"] + 0.5,
                    color="red" if w["alert"] == "alarm" else "orange",
                    alpha=0.12,
                )
        ax.set_yscale("log")
        ax.set_ylabel("p-value")
        ax.legend(fontsize=6, ncol=2)
        if all(w.get("stream") for w in self.windows):  # the stream test beside the windows
            twin = ax.twinx()
            # the fixed-reference test's statistic is w_k / p_k at its last look (alarm at 1/alpha, as the
            # conformal test's e-value): a step that moves at each look, not at each window
            reference = self.windows[0]["stream"].get("test") == "reference"
            name = "stream statistic (spent share / p)" if reference else "stream e-value"
            twin.plot(
                idx,
                [max(w["stream"]["e_value"], 1e-3) for w in self.windows],
                "k-",
                lw=1.5,
                label=name,
                drawstyle="steps-post" if reference else "default",
            )
            first = self.windows[0]["stream"]
            per_deployment = first.get("delta") is not None
            twin.axhline(
                first["threshold"],
                color="k",
                ls=":",
                lw=1,
                label="stream alarm (1/(alpha*delta), per deployment)"
                if per_deployment
                else "stream alarm (1/alpha)",
            )
            if per_deployment and self.stream_evidence == "over_runs":
                # the level over runs still withholds the estimate (StreamStatus.evidence_at)
                twin.axhline(
                    1 / first["alpha"], color="grey", ls="-.", lw=1, label="estimate withheld (1/alpha)"
                )
            elif per_deployment and self.stream_evidence == "budget" and self.stream_evidence_delta:
                # a budget between the two withholds it (StreamStatus.evidence_at, rule W17)
                f = self.stream_evidence_delta
                twin.axhline(
                    1 / (first["alpha"] * f),
                    color="grey",
                    ls="-.",
                    lw=1,
                    label=f"estimate withheld (1/(alpha*{f:g}))",
                )
            twin.set_yscale("log")
            twin.set_ylabel(name)
            twin.legend(fontsize=6, loc="lower right")
        ax = axes[1]
        for m in sorted({m for w in self.windows for m in w["estimated"]}):
            ax.plot(idx, [w["estimated"].get(m, np.nan) for w in self.windows], ".-", label=f"estimated {m}")
            if any("realized" in w for w in self.windows):
                ax.plot(
                    idx,
                    [w.get("realized", {}).get(m, np.nan) for w in self.windows],
                    "x:",
                    label=f"realized {m}",
                )
        ax.set_xlabel("window")
        ax.set_ylabel("metric")
        ax.legend(fontsize=6)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path
