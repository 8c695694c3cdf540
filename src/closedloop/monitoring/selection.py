"""Selection strategies for the review queue: which samples to spend labels on.

Each strategy is one class plus a registry key (like the drift tests). It receives the pool's
priority scores (uncertainty and drift percentiles, see ``flywheel.build_queue``), the pool's
embeddings and the embeddings of what is already labeled (the reference), and returns ``k`` pool
indices. :func:`select` wraps every strategy the same way: it first draws a uniform random control
slice (``control_fraction`` of the queue, marked ``selected_by = "random_control"`` in ``queue.csv``)
so the queue's value can be measured later against an unbiased sample, then lets the strategy fill
the rest, treating the control picks as already chosen.

Near-duplicates are the reason the default is diversity-aware: ranking by priority alone spends
the queue on copies of one uncertain image, since copies share its score.

A new strategy: subclass :class:`QueueStrategy`, set ``key``, ``description`` (and ``Config`` for
its parameters) and implement ``select``; the class registers itself.

Over 400 lines but one idea (choosing what to label): each strategy is a short class; splitting them
would scatter one registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from closedloop.core.errors import ConfigError
from closedloop.core.registry import Registry

STRATEGIES = Registry("review strategy")
"""Every defined :class:`QueueStrategy` subclass, by ``key`` (the built-ins are defined below)."""

DEFAULT_STRATEGY = "power"
"""Chosen by ``benchmarks/bench_flywheel.py`` (see docs/monitor.md, "Choosing what to label")."""

CONTROL = "random_control"
"""``selected_by`` value of the random control slice."""


@dataclass
class Candidates:
    """What a strategy sees of the unlabeled pool."""

    priority: np.ndarray
    """(N,) higher = more worth labeling (mean of the uncertainty and drift percentiles)."""
    embeddings: np.ndarray | None = None
    """(N, d) model embeddings (the profile's PCA of the penultimate layer), for diversity."""
    reference: np.ndarray | None = None
    """(M, d) embeddings of samples already labeled (the reference sample, or the labeled set)."""

    def __len__(self) -> int:
        return len(self.priority)

    def take(self, idx: np.ndarray, also_known: np.ndarray | None = None) -> Candidates:
        """The candidates at ``idx``; ``also_known`` rows are added to the reference."""
        emb = None if self.embeddings is None else self.embeddings[idx]
        ref = self.reference
        if also_known is not None and len(also_known) and self.embeddings is not None:
            extra = self.embeddings[also_known]
            ref = extra if ref is None else np.concatenate([ref, extra])
        return Candidates(self.priority[idx], emb, ref)


class StrategyConfig(BaseModel):
    """Parameters of a strategy (none by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class QueueStrategy:
    """Base class: set ``key``, ``description``, optionally ``Config``; implement :meth:`select`."""

    key: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type[StrategyConfig]] = StrategyConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.key:
            raise TypeError(f"{cls.__qualname__}: a queue strategy needs a registry key")
        if cls.select is QueueStrategy.select:
            raise TypeError(f"{cls.__qualname__}: implement select(cands, k, rng)")
        if not cls.description:
            raise TypeError(f"{cls.__qualname__}: describe the strategy in 'description'")
        if not issubclass(cls.Config, StrategyConfig):
            raise TypeError(f"{cls.__qualname__}: Config must subclass StrategyConfig")
        try:
            STRATEGIES.register(cls.key)(cls)
        except ValueError as exc:
            raise TypeError(str(exc)) from None

    def __init__(self, config: StrategyConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    def select(self, cands: Candidates, k: int, rng: np.random.Generator) -> np.ndarray:
        """``min(k, len(cands))`` distinct indices into ``cands``, most valuable first."""
        raise NotImplementedError


# -- helpers ------------------------------------------------------------------------------------
def _top(priority: np.ndarray, k: int) -> np.ndarray:
    # stable: equal priorities keep pool order, so the result is deterministic
    return np.argsort(-priority, kind="stable")[:k]


def _min_sqdist(A: np.ndarray, B: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """For each row of A, the squared distance to the nearest row of B (chunked to bound memory)."""
    out = np.empty(len(A), dtype=np.float64)
    b2 = (B.astype(np.float64) ** 2).sum(axis=1)
    for s in range(0, len(A), chunk):
        a = A[s : s + chunk].astype(np.float64)
        d = (a**2).sum(axis=1)[:, None] + b2[None, :] - 2 * a @ B.T.astype(np.float64)
        out[s : s + chunk] = np.maximum(d.min(axis=1), 0.0)
    return out


def _embeddings(cands: Candidates) -> np.ndarray:
    if cands.embeddings is None:
        raise ConfigError(
            "this review strategy needs embeddings; the pool has none (use --strategy priority)"
        )
    return np.asarray(cands.embeddings, dtype=np.float64)


def _kmeans(X: np.ndarray, n: int, rng: np.random.Generator, weights: np.ndarray | None = None) -> Any:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=n, n_init=1, random_state=int(rng.integers(1 << 31))).fit(
        X, sample_weight=weights
    )


# -- strategies ---------------------------------------------------------------------------------
class PriorityStrategy(QueueStrategy):
    key = "priority"
    description = "the k highest priorities (uncertainty + drift percentiles); ignores near-duplicates"

    def select(self, cands: Candidates, k: int, rng: np.random.Generator) -> np.ndarray:
        return _top(cands.priority, k)


class RandomStrategy(QueueStrategy):
    key = "random"
    description = "uniform random sample of the pool (the baseline every strategy is measured against)"

    def select(self, cands: Candidates, k: int, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(len(cands))[:k]


class PowerConfig(StrategyConfig):
    beta: float = Field(4.0, ge=0)
    """Exponent on the priority: larger is closer to plain top-k, 0 is uniform random."""
    min_distance: float = Field(0.5, ge=0)
    """Skip near-duplicates: a draw closer than this fraction of the reference's median
    nearest-neighbour distance to a sample already chosen or labeled waits until the end (0: off)."""


class PowerStrategy(QueueStrategy):
    key = "power"
    description = (
        "stochastic power sampling: draw without replacement with probability ~ priority**beta, "
        "skipping near-duplicates of what is chosen or labeled"
    )
    Config = PowerConfig

    def select(self, cands: Candidates, k: int, rng: np.random.Generator) -> np.ndarray:
        # Gumbel-top-k on beta * log(priority) samples without replacement in proportion to priority**beta
        logp = self.config.beta * np.log(np.clip(cands.priority, 1e-12, None))
        order = _top(logp + rng.gumbel(size=len(cands)), len(cands))
        if self.config.min_distance <= 0 or cands.embeddings is None:
            return order[:k]
        return _skip_near_duplicates(order, cands, k, self.config.min_distance)


def _skip_near_duplicates(order: np.ndarray, cands: Candidates, k: int, frac: float) -> np.ndarray:
    """The first ``k`` of ``order`` that are not within ``frac`` x (median nearest-neighbour distance)
    of a sample taken before them or of the reference; skipped ones fill up the end if needed."""
    X = _embeddings(cands)
    ref = cands.reference if cands.reference is not None and len(cands.reference) >= 2 else None
    basis = np.asarray(ref if ref is not None else X[order[: min(len(order), 1000)]], np.float64)
    nn = np.sqrt(_min_sqdist_excluding_self(basis))
    r2 = (frac * float(np.median(nn))) ** 2
    near = _min_sqdist(X, ref) if ref is not None else np.full(len(X), np.inf)
    taken: list[int] = []
    skipped: list[int] = []
    for i in order:
        if len(taken) == k:
            break
        if near[i] < r2:
            skipped.append(int(i))
            continue
        taken.append(int(i))
        near = np.minimum(near, ((X - X[i]) ** 2).sum(axis=1))
    return np.array(taken + skipped[: k - len(taken)], dtype=np.int64)


def _min_sqdist_excluding_self(X: np.ndarray) -> np.ndarray:
    d = (X**2).sum(axis=1)[:, None] + (X**2).sum(axis=1)[None, :] - 2 * X @ X.T
    np.fill_diagonal(d, np.inf)
    return np.maximum(d.min(axis=1), 0.0)


class KCenterConfig(StrategyConfig):
    use_reference: bool = True
    """Count the already-labeled (reference) embeddings as covered centers."""


class KCenterStrategy(QueueStrategy):
    key = "kcenter"
    description = "k-center greedy on the embeddings: start at the top priority, then the farthest sample"
    Config = KCenterConfig

    def select(self, cands: Candidates, k: int, rng: np.random.Generator) -> np.ndarray:
        X = _embeddings(cands)
        k = min(k, len(X))
        ref = cands.reference if self.config.use_reference else None
        dist = _min_sqdist(X, ref) if ref is not None and len(ref) else np.full(len(X), np.inf)
        first = int(_top(cands.priority, 1)[0])  # seeded by priority
        chosen = [first]
        dist = np.minimum(dist, ((X - X[first]) ** 2).sum(axis=1))
        while len(chosen) < k:
            # farthest from everything covered; priority breaks ties (e.g. exact duplicates of a center)
            nxt = int(np.lexsort((-cands.priority, -dist))[0])
            chosen.append(nxt)
            dist = np.minimum(dist, ((X - X[nxt]) ** 2).sum(axis=1))
            dist[chosen] = -1.0
        return np.array(chosen, dtype=np.int64)


class TypicalConfig(StrategyConfig):
    n_neighbors: int = Field(20, ge=1)
    """Typicality = 1 / mean distance to this many nearest pool neighbours."""
    max_clusters: int = Field(500, ge=2)
    """Upper bound on clusters (labeled + queue), as in TypiClust."""
    use_reference: bool = True
    """Prefer clusters that hold no already-labeled (reference) sample."""


class TypicalStrategy(QueueStrategy):
    key = "typical"
    description = "typical samples (TypiClust): the densest point of each large cluster not yet labeled"
    Config = TypicalConfig

    def select(self, cands: Candidates, k: int, rng: np.random.Generator) -> np.ndarray:
        X = _embeddings(cands)
        n = len(X)
        k = min(k, n)
        ref = cands.reference if self.config.use_reference and cands.reference is not None else None
        m = 0 if ref is None else len(ref)
        both = X if ref is None else np.concatenate([X, np.asarray(ref, np.float64)])
        n_clusters = int(min(m + k, self.config.max_clusters + k, len(both)))
        labels = _kmeans(both, n_clusters, rng).labels_
        pool_lab, ref_lab = labels[:n], labels[n:]
        typ = _typicality(X, self.config.n_neighbors)
        covered = np.zeros(n_clusters, dtype=bool)
        covered[ref_lab] = True
        sizes = np.bincount(pool_lab, minlength=n_clusters)
        chosen: list[int] = []
        taken = np.zeros(n, dtype=bool)
        while len(chosen) < k:
            # the largest uncovered cluster first; once all are covered, start a new pass
            open_ = np.flatnonzero(~covered & (sizes > 0))
            if not len(open_):
                covered[:] = False
                sizes = np.bincount(pool_lab[~taken], minlength=n_clusters)
                continue
            c = open_[np.lexsort((open_, -sizes[open_]))[0]]
            members = np.flatnonzero((pool_lab == c) & ~taken)
            best = int(members[np.argmax(typ[members])])
            chosen.append(best)
            taken[best] = True
            covered[c] = True
            sizes[c] -= 1
        return np.array(chosen, dtype=np.int64)


def _typicality(X: np.ndarray, n_neighbors: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    kk = min(n_neighbors + 1, len(X))
    d, _ = NearestNeighbors(n_neighbors=kk).fit(X).kneighbors(X)
    return 1.0 / (d[:, 1:].mean(axis=1) + 1e-8) if kk > 1 else np.ones(len(X))


class DiverseConfig(StrategyConfig):
    prefilter: float = Field(10.0, ge=1)
    """Cluster ``prefilter * k`` high-priority samples."""
    sampling: Literal["top", "power"] = "top"
    """How those are found: the top priorities, or power sampling (``beta``) over the priorities."""
    beta: float = Field(4.0, ge=0)
    """Exponent of the power sampling."""


class DiverseStrategy(QueueStrategy):
    key = "diverse"
    description = (
        "priority with diversity: k-means (weighted by priority) over prefilter*k high-priority "
        "samples, then the highest-priority sample of each cluster"
    )
    Config = DiverseConfig

    def select(self, cands: Candidates, k: int, rng: np.random.Generator) -> np.ndarray:
        X = _embeddings(cands)
        k = min(k, len(X))
        m = int(np.ceil(self.config.prefilter * k))
        if self.config.sampling == "power":
            logp = self.config.beta * np.log(np.clip(cands.priority, 1e-12, None))
            top = _top(logp + rng.gumbel(size=len(cands)), m)
            top = top[np.argsort(-cands.priority[top], kind="stable")]
        else:
            top = _top(cands.priority, m)
        if len(top) <= k:
            return top[:k]
        w = cands.priority[top]
        labels = _kmeans(X[top], k, rng, weights=np.clip(w, 1e-6, None)).labels_
        # one pick per cluster (near-copies fall into one cluster), the best of each, best clusters first
        best = [int(top[labels == c][0]) for c in np.unique(labels)]  # top is sorted by priority
        picks = sorted(best, key=lambda i: (-cands.priority[i], i))
        if len(picks) < k:  # k-means left empty clusters (many identical points): fill by priority
            rest = [int(i) for i in top if int(i) not in set(picks)]
            picks += rest[: k - len(picks)]
        return np.array(picks[:k], dtype=np.int64)


# -- configuration and the common driver ----------------------------------------------------------
def get_strategy(name: str) -> type[QueueStrategy]:
    """A registered strategy key or an import path ``pkg.module:Class`` -> the strategy class; else a
    :class:`ConfigError` with a "did you mean"."""
    cls = STRATEGIES.resolve(str(name), where="review strategy")
    if not (isinstance(cls, type) and issubclass(cls, QueueStrategy)):
        raise ConfigError(f"review strategy: {name!r} is not a QueueStrategy subclass (got {cls!r})")
    return cls


class ReviewConfig(BaseModel):
    """How the review queue is chosen (``kind: monitor`` params ``review:``, or ``--strategy``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    strategy: str = DEFAULT_STRATEGY
    """Registered strategy (priority, power, kcenter, typical, diverse, random) or an import path
    ``my_pkg.module:MyStrategy``."""
    params: dict[str, float | int | bool | str] = Field(default_factory=dict)
    """The strategy's own parameters (validated by its ``Config``)."""
    control_fraction: float = Field(0.1, ge=0, le=0.5)
    """Share of the queue drawn uniformly at random (``selected_by = random_control``)."""

    @field_validator("strategy")
    @classmethod
    def _known(cls, v: str) -> str:
        try:
            get_strategy(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _check_params(self) -> ReviewConfig:
        try:
            get_strategy(self.strategy).Config(**self.params)
        except ValidationError as exc:
            bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"review strategy {self.strategy!r} params: {bad}") from None
        return self

    def build(self) -> QueueStrategy:
        cls = get_strategy(self.strategy)
        return cls(cls.Config(**self.params))

    def n_control(self, k: int) -> int:
        """Queue slots for the random control: at least one when the fraction is positive and k >= 2."""
        if self.control_fraction <= 0 or k < 2:
            return 0
        return int(min(k - 1, max(1, round(self.control_fraction * k))))


@dataclass
class Selection:
    """The chosen pool indices (strategy picks first, then the control) and who chose each."""

    indices: np.ndarray
    selected_by: list[str]


def select(cands: Candidates, k: int, config: ReviewConfig | None = None, seed: int = 0) -> Selection:
    """Choose ``min(k, len(cands))`` distinct samples: a random control slice, then the strategy."""
    config = config or ReviewConfig()
    n = len(cands)
    k = int(min(k, n))
    if k <= 0:
        return Selection(np.zeros(0, dtype=np.int64), [])
    rng = np.random.default_rng([seed, 17])
    n_ctl = config.n_control(k)
    control = np.sort(rng.choice(n, n_ctl, replace=False)) if n_ctl else np.zeros(0, dtype=np.int64)
    rest = np.setdiff1d(np.arange(n), control)
    picked = config.build().select(cands.take(rest, also_known=control), k - n_ctl, rng)
    picked = rest[np.asarray(picked, dtype=np.int64)]
    if len(np.unique(picked)) != len(picked) or len(picked) != k - n_ctl:
        raise RuntimeError(
            f"review strategy {config.strategy!r} returned {len(picked)} picks for {k - n_ctl}"
        )
    indices = np.concatenate([picked, control]).astype(np.int64)
    return Selection(indices, [config.strategy] * len(picked) + [CONTROL] * n_ctl)
