"""The reference profile: what production data is compared against.

Built from the deployed model's outputs on validation rows it did not train on (the held-out split
the train stage recorded; never test): half of them are the reference sample, and re-splits of all
of them supply in-distribution windows on which the alarm thresholds are calibrated, so the
per-window false alarm rate is the configured ``alpha`` on unseen data, not on data the model
memorized (``info.source["evaluated_on"]`` says which rows were used).

Layout::

    <dir>/profile.json     schema, tests, thresholds per window size, reliability, distributions
    <dir>/arrays.npz       reference features, PCA-reduced embeddings, probabilities, labels,
                           the PCA basis (mean, components), and ``stream_<score>``: the stream
                           test's scores on every held-out row (``closedloop.monitoring.stream``),
                           and ``domain_<field>``: every held-out row's features, embeddings,
                           probabilities and labels, the rows the domain check compares a window with
                           (``closedloop.monitoring.domain``; absent in profiles built before: the
                           reference sample is used), and ``train_features``: a sample of training
                           rows' summary features (``closedloop.monitoring.train_reference``; absent
                           when ``train_reference_rows`` is 0 and in profiles built before)

Loading needs neither the training data nor the model; the monitor finds the model by the weights
hash recorded here (``model_sha256``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from closedloop.core.artifacts import Artifact
from closedloop.core.config import PluginSpec
from closedloop.core.io import atomic_path, read_json, to_json, write_text_atomic
from closedloop.monitoring.drift.base import DriftContext, Sample
from closedloop.monitoring.features import image_feature_names, image_features, table_features
from closedloop.monitoring.low_positive import LowPositiveFlag
from closedloop.monitoring.selection import ReviewConfig

DOMAIN_MAX_ROWS = 1000
"""Most held-out rows kept for the domain check (a random subset beyond; bounds its cost per window)."""
FORMAT_VERSION = 3
"""3: per-deployment alarm thresholds (``delta``) and the stream test's held-out scores; 2: images
gained the ``intensity_blockiness`` feature. Older profiles must be rebuilt."""


class ProfileInfo(BaseModel):
    """The JSON part of a :class:`ReferenceProfile`."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format_version: int = FORMAT_VERSION
    kind: Literal["images", "table"]
    input_shape: list[int]
    """(H, W, C) or (F,): the schema production data must match."""
    input_columns: list[str] = Field(default_factory=list)
    """Tables: the feature columns the model reads, in order."""
    categories: dict[str, list[str]] = Field(default_factory=dict)
    """Tables: reference categories of each categorical column."""
    feature_names: list[str]
    """Monitored per-sample features (images: intensity statistics; tables: the columns)."""
    categorical: list[int] = Field(default_factory=list)
    problem_type: str
    n_outputs: int
    label_names: list[str]
    threshold: float
    """Decision threshold on P(positive) for binary tasks (0.5 when the model has none)."""
    metrics: list[str]
    """Metrics estimated without labels."""
    tests: list[str | PluginSpec]
    """Drift tests by name or ``{name, params}`` (as configured)."""
    alpha: float
    warn_alpha: float
    thresholds: dict[str, dict[str, float]]
    """Window size -> {"alarm": t, "warn": t, "alarm_marginal": t} on the min-p over the unlabeled
    tests: ``alarm`` at the per-deployment level (``alpha * delta``), ``alarm_marginal`` at ``alpha``."""
    delta: float | None = None
    """The per-deployment guarantee's confidence: the alarm's false-alarm rate is at most ``alpha`` for
    this reference with probability at least ``1 - delta`` (None: ``alpha`` holds on average over
    references only)."""
    guarantee: str = ""
    """The guarantee in one sentence and what it rests on (the report and ``closedloop monitor`` show it)."""
    stream_alpha: float = 0.05
    """False-alarm rate of the stream test over the whole stream (``closedloop.monitoring.stream``)."""
    stream_delta: float | None = None
    """Per-deployment stream alarm: its false-alarm rate over the whole stream is at most ``stream_alpha``
    for this reference with probability at least ``1 - stream_delta`` (the alarm spends ``stream_alpha *
    stream_delta``). None (profiles built before): ``stream_alpha`` over runs only."""
    stream_test: Literal["reference", "conformal"] = "conformal"
    """``reference``: every row since the reference against the fixed held-out rows, alpha spent over
    looks (``monitoring.stream_reference``); ``conformal``: the conformal martingales (profiles built
    before this field keep it)."""
    stream_look: int = 200
    """Rows between the reference stream test's looks."""
    stream_look_test: Literal["classifier", "mean_shift"] = "classifier"
    """The p-value the reference stream test's looks use (``monitoring.stream_reference.LOOK_TESTS``;
    profiles built before this field keep ``classifier``)."""
    stream_spending: Literal["harmonic", "geometric", "first3_even", "first3_late"] = "harmonic"
    """How the reference stream test's looks share the alarm's alpha (``monitoring.stream_reference.SPENDINGS``;
    profiles built before this field keep ``harmonic``)."""
    domain_alpha: float | None = 0.05
    """The domain flag's false-flag budget (``monitoring.domain``)."""
    domain_delta: float | None = None
    """Per-deployment domain flag: the flag's false-flag rate is at most ``domain_alpha`` for this
    reference with probability at least ``1 - domain_delta`` (flag at p <= ``domain_alpha *
    domain_delta``, Markov's inequality). None: flag at p <= ``domain_alpha`` (on average over references)."""
    first_window_alpha: float | None = None
    """The stream's first window is also flagged at domain p <= this level (None: off, and in profiles
    built before)."""
    stream_evidence: Literal["over_runs", "per_deployment", "budget"] = "over_runs"
    """The stream level that withholds the label-free estimate: the level over runs (``evidence_at``; and
    profiles built before), the per-deployment alarm's, or ``budget``: ``stream_alpha *
    stream_evidence_delta`` (``evidence_at`` recorded there)."""
    stream_evidence_delta: float | None = None
    """``stream_evidence: budget``: the factor of ``stream_alpha`` at which the stream's evidence withholds
    the estimate (None otherwise, and in profiles built before)."""
    stream_look_flag: Literal["over_runs"] | float | None = None
    """The window that holds a stream look is also flagged, that window only, when the look's p-value is at
    or under this level: ``over_runs`` (``stream_alpha / (k (k + 1))`` at look ``k``) or a number (that level
    at every look). None: off (and profiles built before; rule F19)."""
    low_positive_flag: LowPositiveFlag | None = None
    """The window is also flagged when it holds more barely-positive calls than the held-out rows
    (``monitoring.low_positive``, binary tasks; rule W20). None: off (and profiles built before)."""
    train_reference_rows: int = 0
    """Training rows whose summary features the domain flag also tests each window against
    (``closedloop.monitoring.train_reference``; it then splits the domain level with the held-out test).
    0: off (and in profiles built before)."""
    train_reference_share: float = 0.5
    """Share of the domain level the training-rows test spends when ``train_reference_rows`` is on (the
    held-out test spends the rest; 0.5 in profiles built before)."""
    estimate_calibration: str = "none"
    """``heldout_platt``: the label-free estimate is computed on probabilities recalibrated by Platt scaling
    on the held-out rows (``closedloop.monitoring.recalibrate``); ``heldout_bias`` / ``heldout_platt_bias``:
    without / with that map, the accuracy estimate is moved by its own error on the held-out rows;
    ``none`` (and profiles built before): as the model gives them."""
    min_ess_fraction: float = 0.25
    """Importance weights leaving fewer effective reference rows than this fraction flag the estimate."""
    calibration: dict[str, Any]
    bandwidth: float
    permutations: int
    pca_dims: int
    embedding_dim: int
    reference_size: int
    calibration_size: int
    model_sha256: str
    reference_performance: dict[str, float] = Field(default_factory=dict)
    reliability: dict[str, Any] = Field(default_factory=dict)
    prediction_distribution: list[float] = Field(default_factory=list)
    label_distribution: list[float] = Field(default_factory=list)
    missing_rate: list[float] = Field(default_factory=list)
    source: dict[str, Any] = Field(default_factory=dict)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    """How ``closedloop monitor --review K`` chooses the queue unless ``--strategy`` overrides it."""

    @property
    def domain_level(self) -> float | None:
        """The domain p-value at which the estimate is flagged: ``domain_alpha * domain_delta`` for the
        per-deployment budget, ``domain_alpha`` without it, None when the domain flag is off."""
        if self.domain_alpha is None:
            return None
        return self.domain_alpha * (self.domain_delta if self.domain_delta is not None else 1.0)


class ReferenceProfile(Artifact):
    """Reference statistics and calibrated thresholds for drift monitoring (layout in the module doc)."""

    def __init__(
        self,
        info: ProfileInfo,
        reference: Sample,
        pca_mean: np.ndarray,
        pca_components: np.ndarray,
        stream: dict[str, np.ndarray] | None = None,
        domain: Sample | None = None,
        train_features: np.ndarray | None = None,
    ) -> None:
        self.info = info
        self.reference = reference
        self.domain = domain if domain is not None else reference
        """The rows the domain check tells a window from: every held-out row (up to
        ``DOMAIN_MAX_ROWS``), not only the reference half. The domain check needs no re-split
        calibration, so the rows the thresholds were calibrated on can speak too: twice the rows, a
        stronger classifier (measured in ``benchmarks/tune_monitor_domain.py``)."""
        self.train_features = None if train_features is None else np.asarray(train_features, np.float32)
        """A sample of training rows' summary features (model-free inputs), the domain flag's second
        reference; None when off."""
        self.pca_mean = np.asarray(pca_mean, dtype=np.float32)
        self.pca_components = np.asarray(pca_components, dtype=np.float32)
        self.stream = dict(stream or {})
        """Stream-test score -> its values on every held-out row (the rows production is ranked against)."""

    # -- helpers used by the monitor -----------------------------------------------------------
    def reduce(self, emb: np.ndarray) -> np.ndarray:
        """Penultimate features -> the profile's PCA space."""
        return ((np.asarray(emb, np.float32) - self.pca_mean) @ self.pca_components.T).astype(np.float32)

    def context(self, rng: np.random.Generator) -> DriftContext:
        i = self.info
        return DriftContext(
            problem_type=i.problem_type,
            threshold=i.threshold,
            feature_names=i.feature_names,
            categorical=i.categorical,
            bandwidth=i.bandwidth,
            permutations=i.permutations,
            rng=rng,
        )

    def threshold_for(self, n: int) -> dict[str, float]:
        """Alarm/warn thresholds for a window of ``n`` samples: interpolated in log(n) between the
        calibrated sizes, clamped at the ends."""
        sizes = sorted(int(k) for k in self.info.thresholds)
        if not sizes:
            return {"alarm": self.info.alpha, "warn": self.info.warn_alpha}
        x = np.log([max(s, 1) for s in sizes])
        out = {}
        levels = ["alarm", "warn"] + (
            ["alarm_marginal"] if all("alarm_marginal" in self.info.thresholds[str(s)] for s in sizes) else []
        )
        for level in levels:
            y = np.log([max(self.info.thresholds[str(s)][level], 1e-12) for s in sizes])
            out[level] = float(np.exp(np.interp(np.log(max(n, 1)), x, y)))
        return out

    def guarantee_for(self, n: int) -> str:
        """Whether the per-deployment guarantee covers a window of ``n`` rows, in one sentence."""
        sizes = sorted(int(k) for k in self.info.thresholds)
        if self.info.delta is None:
            return f"none per deployment: the alarm rate is {self.info.alpha:.0%} on average over references"
        if "fallback" in self.info.calibration or not sizes:
            return "none: the held-out pool was too small to calibrate any window size"
        if n > max(sizes) or n < min(sizes):
            return (
                f"extrapolated: thresholds are calibrated for windows of {min(sizes)} to {max(sizes)} rows, "
                f"this window has {n}"
            )
        return (
            f"false-alarm rate <= {self.info.alpha:.0%} for this reference with probability >= "
            f"{1 - self.info.delta:.0%}"
        )

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        write_text_atomic(directory / "profile.json", to_json(self.info.model_dump(mode="json")))
        arrays: dict[str, np.ndarray] = {
            "features": self.reference.features,
            "pca_mean": self.pca_mean,
            "pca_components": self.pca_components,
        }
        for name in ("embeddings", "proba", "labels"):
            val = getattr(self.reference, name)
            if val is not None:
                arrays[name] = val
        for name, val in self.stream.items():
            arrays[f"stream_{name}"] = np.asarray(val, dtype=np.float64)
        if self.domain is not self.reference:
            for name in ("features", "embeddings", "proba", "labels"):
                val = getattr(self.domain, name)
                if val is not None:
                    arrays[f"domain_{name}"] = val
        if self.train_features is not None:
            arrays["train_features"] = self.train_features
        with atomic_path(directory / "arrays.npz") as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, directory: Path) -> Self:
        from closedloop.core.errors import RunDirError

        directory = Path(directory)
        if not (directory / "profile.json").is_file():
            raise RunDirError(
                f"{directory}: no reference profile (profile.json) here. Build one by adding "
                "'- kind: monitor' after the train stage in the pipeline YAML and running it."
            )
        meta = read_json(directory / "profile.json")
        if meta.get("format_version") != FORMAT_VERSION:
            raise RunDirError(
                f"{directory}: reference profile format {meta.get('format_version')} is not supported "
                f"(expected {FORMAT_VERSION}: per-deployment alarm thresholds and the stream test need it); "
                "rebuild it by rerunning the pipeline's monitor stage ('closedloop run CONFIG' reruns only that "
                "stage and what follows)"
            )
        info = ProfileInfo.model_validate(meta)
        with np.load(directory / "arrays.npz", allow_pickle=False) as z:
            arrs = {k: z[k] for k in z.files}
        ref = Sample(
            features=arrs["features"],
            embeddings=arrs.get("embeddings"),
            proba=arrs.get("proba"),
            labels=arrs.get("labels"),
        )
        stream = {k.removeprefix("stream_"): v for k, v in arrs.items() if k.startswith("stream_")}
        domain = None
        if "domain_features" in arrs:
            domain = Sample(
                features=arrs["domain_features"],
                embeddings=arrs.get("domain_embeddings"),
                proba=arrs.get("domain_proba"),
                labels=arrs.get("domain_labels"),
            )
        return cls(
            info, ref, arrs["pca_mean"], arrs["pca_components"], stream, domain, arrs.get("train_features")
        )

    def files(self, directory: Path) -> dict[str, str]:
        return {"profile": "profile.json", "arrays": "arrays.npz"}


# -- computing what the tests look at -------------------------------------------------------------
def forward_all(model: Any, raw: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features and calibrated probabilities in one pass (``head(features(x))``)."""
    import torch  # not at module level: the serving process loads profiles and never imports torch

    from closedloop.models.trained import logits_to_proba

    module = model.raw_module()
    head = getattr(model.network, "head", None)
    feats, logits = [], []
    with torch.no_grad():
        for i in range(0, len(raw), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(raw[i : i + batch_size], dtype=np.float32))
            f = module.features(xb)
            z = head(f) if head is not None else module(xb)
            feats.append(f.float().reshape(len(xb), -1).numpy())
            logits.append(z.float().numpy())
    if not feats:
        width = 1 if model.problem_type in ("binary", "regression") else model.n_outputs
        return np.zeros((0, 0), np.float32), np.zeros((0, width))
    emb = np.concatenate(feats)
    proba = logits_to_proba(np.concatenate(logits), model.problem_type, model.temperature)
    return emb, proba


def summary_features(info: ProfileInfo, X: Any) -> np.ndarray:
    if info.kind == "images":
        return image_features(X)
    return table_features(X, info.input_columns, info.categories)


def model_input(info: ProfileInfo, X: Any) -> np.ndarray:
    """Raw model input: float32 images (N,H,W,C) or the table as float32 (categoricals as codes)."""
    if info.kind == "images":
        return np.asarray(X, dtype=np.float32)
    return table_features(X, info.input_columns, info.categories).astype(np.float32)


def table_from_inputs(info: ProfileInfo, X: np.ndarray) -> pd.DataFrame:
    """The table a logged model input came from: the inverse of :func:`model_input` for tables
    (numeric columns as logged; categorical codes back to the reference categories, an unseen or
    missing code as missing), so logged rows can become a new reference (``--set-reference``)."""
    if info.kind != "table":
        raise ValueError(f"table_from_inputs: the profile is for {info.kind}, not a table")
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(info.input_columns):
        raise ValueError(
            f"logged table inputs of shape {X.shape}: expected (N, {len(info.input_columns)}) for columns "
            f"{info.input_columns}"
        )
    cols: dict[str, Any] = {}
    for j, name in enumerate(info.input_columns):
        if name in info.categories:
            cats = list(info.categories[name])
            codes = X[:, j]
            ok = np.isfinite(codes) & (codes >= 0) & (codes < len(cats))
            values = [cats[int(c)] if good else None for c, good in zip(codes, ok, strict=True)]
            cols[name] = pd.Categorical(values, categories=cats)
        else:
            cols[name] = X[:, j]
    return pd.DataFrame(cols)


def table_schema(df: pd.DataFrame) -> tuple[list[str], dict[str, list[str]]]:
    cats = {
        str(c): [str(v) for v in df[c].cat.categories]
        for c in df.columns
        if isinstance(df[c].dtype, pd.CategoricalDtype)
    }
    return [str(c) for c in df.columns], cats


def image_names(shape: list[int]) -> list[str]:
    return image_feature_names(int(shape[-1]))
