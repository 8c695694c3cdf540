"""Near duplicates judged against the data's own density.

A fixed distance threshold says "close", not "copied": on a dense dataset (small ultrasound or fundus
images, a table of a few discrete columns) many samples have a neighbour under any fixed threshold
*inside one split*, where no leak is possible. So a query split (test) is compared with the reference
split's own spacing (train): the share of test samples with a train neighbour within a threshold
against the share of train samples with another train sample that close (leave-one-out, exact copies
merged so they do not count as density). Only an *excess* of close test samples is an overlap, tested
with a one-sided Fisher exact test, in two looks: distance alone (under the configured "close"
distance), and distance relative to the neighbour's own spacing (a copy sits much closer to its source
than the source's other neighbours do; a sample in a dense region does not), cut at the reference's
own 1% quantile of that ratio - on very dense data almost every sample is "close", so copies only
stand out relative to the local spacing. The smaller p-value counts, Bonferroni-corrected for the
looks; with re-deals (session 14's design effect), the looks are paid for by their joint null on the
same re-deals instead (:func:`_joint_p`, session 15). The pairs that most likely make the excess are the close test samples ranked by that look: the
smallest distance (distance look) or the smallest ratio (relative look).

A table that repeats rows by itself (a few discrete columns) lies on a grid: natural rows without an
exact twin sit at least one grid step from their neighbour, and nearly all are "close" under any
threshold that a step passes. There a third look (``nonzero_look``) sets exact twins and ties at
distance 0 aside on both sides and counts query rows *strictly* closer than the reference's own
``density_quantile`` of its non-zero nearest-neighbour distances: a noisy copy falls off the grid,
below the smallest step the data takes (nwtco: planted copies 0.0004-0.025, natural rows >= 0.0316).
Where many columns each take few values, a copy's small noise adds up over the columns to more than
that smallest step (Car: 57 float columns, copies at 0.056-0.085, the cut 0.058), but its *shape* still
differs: a noisy copy differs a little in every column, a natural close pair by whole steps in a few.
The fourth look (``columns_look``) counts, for each close pair (0 < distance <= ``threshold``), the
columns in which the two rows differ, and calls close only pairs that differ in more columns than the
reference's own close pairs do (above their ``1 - density_quantile`` quantile).

The looks above are counts against the random-split null, and a few copies among few rows cannot
beat it (diabetes: 4 copies among 93 test rows; a random deal splits all four copy pairs with chance
0.0217). In a table whose rows are all distinct an *exact* copy needs no such test, and neither does a
copy a little off: the near-exact look (:func:`near_exact_cut`) reads the lower tail of the reference's
own nearest-neighbour distances as a power law and calls a query row a near-exact copy when it sits so
close that the data's own spacing predicts fewer than ``alpha`` such rows by chance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import fisher_exact, multivariate_normal, norm
from sklearn.neighbors import NearestNeighbors

ON_THE_CUT = 1e-4
"""Relative width of the non-zero look's cut: a distance this close to the cut counts as on it."""
TAIL_MIN_ROWS = 10
"""The near-exact look reads the reference's lower tail from at least this many smallest distances."""
MOVED = 1e-6
"""A column differs between two rows when their standardized values differ by more than this (equal
raw values standardize to the same float32; the planted noise is 1e-2)."""


@dataclass(frozen=True)
class NearExactRule:
    """How the near-exact look reads the reference's lower tail (docs/audit.md, session 18): from its
    ``k`` smallest leave-one-out nearest-neighbour distances, ``k = max(TAIL_MIN_ROWS, ceil(k_share
    n))``; ``bound``: Hill's exponent lowered to its one-sided 95% bound (the cautious side)."""

    k_share: float = 0.0
    bound: bool = False

    def rows(self, n: int) -> int:
        return max(TAIL_MIN_ROWS, int(np.ceil(self.k_share * n)))


NEAR_EXACT_CANDIDATES = {
    "k10": NearExactRule(0.0, False),
    "k10_bound": NearExactRule(0.0, True),
    "k5pct": NearExactRule(0.05, False),
    "k5pct_bound": NearExactRule(0.05, True),
}
"""The candidates declared in docs/audit.md (session 18) before the development run that chose."""
NEAR_EXACT = NEAR_EXACT_CANDIDATES["k5pct_bound"]
"""The shipped rule, chosen by the declared rule on development data (docs/results/
audit_nearexact_s18_dev.txt): the most cautious eligible candidate (the two unbounded ones put
near-exact rows on 3-34 of 200 random re-splits of diabetes, breast_cancer or synthetic)."""


@dataclass(frozen=True)
class NearExactCut:
    """The near-exact look's cut for one comparison and the tail it came from."""

    cut: float
    """A judged query row closer than this to the reference is a near-exact copy."""
    exponent: float
    """m: the lower tail's power (Hill's estimate, capped at the number of columns; bounded if asked)."""
    rows: int
    """k: how many of the smallest reference distances the tail was read from."""
    edge: float
    """t: the (k+1)-th smallest reference distance, where the power law is anchored."""
    smallest: float
    """The reference's smallest own nearest-neighbour distance (for the message)."""


def near_exact_cut(
    null: np.ndarray, n_query: int, alpha: float, n_columns: int, rule: NearExactRule
) -> NearExactCut | None:
    """The distance under which fewer than ``alpha`` of ``n_query`` natural rows are expected, from the
    reference's own leave-one-out nearest-neighbour distances ``null``: their lower tail read as a power
    law F(r) = (k / n) (r / t)^m below t = r(k+1) (in m dimensions the chance of a neighbour within r
    grows as r^m), m by Hill's estimator on the k smallest, at most ``n_columns`` (a density in D
    dimensions has no steeper tail); then ``n_query F(cut) = alpha``. None where the tail cannot be read:
    fewer than 2k distances, or ties at 0 (a grid: the non-zero look's business)."""
    r = np.sort(np.asarray(null, float))
    k = rule.rows(len(r))
    if n_query < 1 or len(r) < 2 * k or r[0] <= 0:
        return None
    t = float(r[k])
    spread = float(np.sum(np.log(t / r[:k])))
    if spread <= 0:  # the k smallest all equal t: no tail to read
        return None
    m = min(k / spread, float(n_columns))
    if rule.bound:
        m *= max(0.0, 1 - 1.645 / np.sqrt(k))
    if m <= 0:
        return None
    cut = t * (alpha * len(r) / (n_query * k)) ** (1 / m)
    return NearExactCut(cut=float(cut), exponent=float(m), rows=k, edge=t, smallest=float(r[0]))


@dataclass
class NearExcess:
    """Query -> reference nearest neighbours and the excess over the reference's own density."""

    threshold: float
    """The distance under which two samples are close."""
    ratio_cut: float | None
    """When the relative look gave the smaller p-value: close also means a distance at most this
    fraction of the neighbour's own spacing (the reference's ``density_quantile`` of that ratio)."""
    n_query: int
    """Query samples judged (those with an exact copy in the reference are left to the exact check)."""
    n_close: int
    """Of those, with a reference neighbour within ``threshold``."""
    n_null: int
    """Reference samples (distinct contents, at most ``max_null``) whose leave-one-out neighbour was measured."""
    n_null_close: int
    p_value: float
    """One-sided Fisher exact test (Bonferroni over the thresholds looked at): are query samples close
    to the reference more often than reference samples are?"""
    dist: np.ndarray
    """Per query sample: distance to its nearest reference sample."""
    index: np.ndarray
    """Per query sample: index of that reference sample (in the reference split)."""
    ratio: np.ndarray
    """Per query sample: ``dist`` over that reference sample's own nearest-neighbour distance (inf
    for queries farther than ``threshold``, where it is not needed)."""
    judged: np.ndarray
    """Per query sample: True when it has no exact copy in the reference (the non-zero look also sets
    aside those at distance 0)."""
    nonzero_cut: float | None = None
    """When the non-zero look gave the smallest p-value: close means 0 < distance < this, the
    reference's ``quantile`` of its own non-zero nearest-neighbour distances."""
    quantile: float = 0.01
    design_effect: float | None = None
    """When re-deals were measured: the reported look's design effect (:func:`_redealt_p`)."""
    looks_counted: float = 1.0
    """How many looks the p-value paid for: the number of looks (Bonferroni), or less when the looks
    were combined by their joint null measured on the re-deals (:func:`_joint_p`)."""
    columns_cut: float | None = None
    """When the columns look gave the smallest p-value: close means 0 < distance <= ``threshold`` and
    the nearest reference row differs in more than this many columns (the reference's own
    ``1 - quantile`` quantile of that count among its close pairs)."""
    moved: np.ndarray | None = None
    """Per query sample: how many columns differ from its nearest reference sample (columns look)."""
    near_exact: NearExactCut | None = None
    """The near-exact look's cut, where it applies (a table whose rows are all distinct)."""

    @property
    def near_exact_rows(self) -> np.ndarray:
        """Indices of judged query samples closer to the reference than the near-exact cut."""
        if self.near_exact is None:
            return np.empty(0, int)
        return np.flatnonzero(self.judged & (self.dist < self.near_exact.cut))

    @property
    def criterion(self) -> str:
        """What "close" meant, in words, for the audit's messages."""
        if self.nonzero_cut is not None:
            return (
                f"0 < embedding distance < {self.nonzero_cut:.4g}, the reference's own {self.quantile:.0%} quantile "
                "of non-zero nearest-neighbour distances; exact twins and ties set aside"
            )
        if self.columns_cut is not None:
            return (
                f"0 < embedding distance <= {self.threshold:g} and differing from that neighbour in more than "
                f"{self.columns_cut:.4g} columns, the reference's own {1 - self.quantile:.0%} quantile among its "
                "close pairs (a noisy copy differs a little in every column, a natural neighbour in a few); "
                "exact twins and ties set aside"
            )
        how = f"embedding distance <= {self.threshold:g}"
        if self.ratio_cut is not None:
            how += f" and <= {self.ratio_cut:.2f} x that neighbour's own nearest-neighbour distance"
        return how

    @property
    def close(self) -> np.ndarray:
        """Per query sample: judged and close under the reported look."""
        c = self.judged & (self.dist <= self.threshold)
        if self.nonzero_cut is not None:
            return c & (self.dist > 0) & (self.dist < self.nonzero_cut)
        if self.columns_cut is not None and self.moved is not None:
            return c & (self.dist > 0) & (self.moved > self.columns_cut)
        return c & (self.ratio <= self.ratio_cut) if self.ratio_cut is not None else c

    @property
    def query_rate(self) -> float:
        return self.n_close / max(self.n_query, 1)

    @property
    def null_rate(self) -> float:
        return self.n_null_close / max(self.n_null, 1)

    @property
    def excess(self) -> float:
        """Share of query samples that are close beyond what the reference's density predicts."""
        return max(0.0, self.query_rate - self.null_rate)

    @property
    def n_excess(self) -> int:
        return int(round(self.excess * self.n_query))

    def excess_queries(self, alpha: float) -> np.ndarray:
        """Indices of the ``n_excess`` close query samples most likely to be copies, when the excess is
        significant at ``alpha``; else empty. Ranked by the look that found the excess: the smallest
        distance when distance alone did (a copy sits closer to its source than natural neighbours do,
        even where the source has a near twin: ranking by relative distance there missed BreastMNIST's
        planted copies, recall 0.79 -> 0.92 in benchmarks/bench_audit_density.py), the smallest relative
        distance when the relative look did."""
        if self.p_value >= alpha or self.n_excess == 0:
            return np.empty(0, int)
        close = np.flatnonzero(self.close)
        d, r = self.dist[close], self.ratio[close]
        order = np.lexsort((r, d)) if self.ratio_cut is None else np.lexsort((d, r))
        return close[order[: self.n_excess]]


def near_excess(
    ref: np.ndarray,
    query: np.ndarray,
    ref_hashes: list[bytes],
    query_exact: np.ndarray,
    threshold: float,
    max_null: int,
    rng: np.random.Generator,
    density_quantile: float = 0.01,
    nonzero_look: bool = False,
    query_hashes: list[bytes] | None = None,
    redeals: int = 0,
    redeal_below: float = 0.0,
    redeal_max_rows: int = 20000,
    joint: bool = True,
    columns_look: bool = False,
    near_exact: NearExactRule | None = None,
    near_exact_alpha: float = 0.001,
) -> NearExcess:
    """Compare query -> ref nearest-neighbour distances with ref -> ref ones (leave one out).

    ``query_exact`` marks query samples with an exact copy in ``ref`` (judged by the exact check).
    ``nonzero_look``: also the non-zero look (for a table that repeats rows by itself).
    ``columns_look``: also the columns look (a close pair that differs in more columns than the
    reference's own close pairs do; for a table that repeats rows by itself).
    ``redeals`` (with ``query_hashes``): when the smallest p (x looks) is under ``redeal_below``, the
    chosen look's design effect is measured on that many random re-deals of ref + query at their sizes
    (:func:`_redeal_null`) and its p-value corrected by it (:func:`_redealt_p`); not above
    ``redeal_max_rows`` rows in all (each re-deal is a full neighbour search).
    ``joint``: with re-deals, the looks are paid for by their joint null (:func:`_joint_p`), not x looks,
    and re-deals start when the smallest p itself (not x looks) is under ``redeal_below``.
    ``near_exact``: also the near-exact look's cut (:func:`near_exact_cut`) at ``near_exact_alpha``,
    from the same null rows (for a table whose rows are all distinct); it is not one of the counted looks.
    Memory O(n): a brute nearest-neighbour index, queried in chunks by scikit-learn.
    """
    looks = _Looks(threshold, max_null, density_quantile, nonzero_look, columns_look)
    m = _measure(ref, query, ref_hashes, query_exact, rng, looks)
    pvals = {kind: _fisher(c) for kind, c in m.looks.items()}
    kind = min(pvals, key=lambda k: (pvals[k], list(pvals).index(k)))  # ties: the first look
    p, effect = pvals[kind], None
    p_final, counted = min(1.0, p * len(pvals)), float(len(pvals))  # Bonferroni over the looks
    small = len(ref) + len(query) <= redeal_max_rows  # each re-deal is a full search: bounded cost
    # joint: the looks may count as fewer than their number, so any p under the level may warn
    gate = p if joint else p * len(pvals)
    if redeals > 1 and query_hashes is not None and small and gate < redeal_below:
        # the look (and so the pairs of the excess) stays Fisher's choice; only its p-value is corrected
        # its own generator: the caller's draws (the next comparison's null) stay as without re-deals
        own = np.random.default_rng((len(ref), len(query), redeals))
        null = _redeal_null(ref, query, ref_hashes, query_hashes, own, looks, redeals)
        effect = null.effects.get(kind, 1.0)
        p = _redealt_p(p, effect)
        p_final = min(1.0, p * len(pvals))
        if joint:
            p_final = _joint_p(p, list(pvals), null)
            counted = p_final / p
    n_query, n_null, n_close, n_null_close, cut = m.looks[kind]
    exact_cut = None
    if near_exact is not None:
        exact_cut = near_exact_cut(m.null_d, int(m.judged.sum()), near_exact_alpha, ref.shape[1], near_exact)
    return NearExcess(
        threshold=threshold,
        ratio_cut=cut if kind == "ratio" else None,
        n_query=n_query,
        n_close=n_close,
        n_null=n_null,
        n_null_close=n_null_close,
        p_value=p_final,
        dist=m.dist,
        index=m.index,
        ratio=m.ratio,
        judged=m.judged,
        nonzero_cut=cut if kind == "nonzero" else None,
        quantile=density_quantile,
        design_effect=effect,
        looks_counted=counted,
        columns_cut=cut if kind == "columns" else None,
        moved=m.moved,
        near_exact=exact_cut,
    )


@dataclass
class _Measured:
    """One comparison's distances and, per look, (query rows, null rows, close query, close null, cut)."""

    dist: np.ndarray
    index: np.ndarray
    ratio: np.ndarray
    judged: np.ndarray
    looks: dict[str, tuple[int, int, int, int, float | None]]
    moved: np.ndarray | None = None
    null_d: np.ndarray | None = None


@dataclass(frozen=True)
class _Looks:
    """How one comparison looks: the distance cut, the null's size, the density quantile, the non-zero look."""

    threshold: float
    max_null: int
    density_quantile: float
    nonzero_look: bool
    columns_look: bool = False


def _measure(
    ref: np.ndarray,
    query: np.ndarray,
    ref_hashes: list[bytes],
    query_exact: np.ndarray,
    rng: np.random.Generator,
    looks: _Looks,
) -> _Measured:
    """The looks' counts for one split of the data into reference and query."""
    threshold, max_null = looks.threshold, looks.max_null
    density_quantile, nonzero_look = looks.density_quantile, looks.nonzero_look
    copies: dict[bytes, int] = {}
    distinct: list[int] = []  # exact copies inside ref are one sample: a copy is not density
    for i, h in enumerate(ref_hashes):
        if h not in copies:
            copies[h] = 0
            distinct.append(i)
        copies[h] += 1
    keep = np.asarray(distinct, int)
    # The null is drawn from reference samples that have no exact copy in the reference: a held-out
    # sample is judged only when it has none, and under a random split the two are exchangeable. A
    # value the reference repeats would, left out once, still have its twin (set aside, like a query's).
    single = np.flatnonzero([copies[ref_hashes[i]] == 1 for i in distinct])
    U = ref[keep]
    nn = NearestNeighbors(n_neighbors=min(2, len(U)), algorithm="brute").fit(U)
    d, u = nn.kneighbors(query, n_neighbors=1)
    dist, pos = d[:, 0], u[:, 0]
    judged = ~np.asarray(query_exact, bool)
    ratio = np.full(len(dist), np.inf)
    null_d, null_r, null_k = np.empty(0), np.empty(0), np.empty(0)
    moved = (np.abs(query - U[pos]) > MOVED).sum(axis=1) if looks.columns_look else None
    if len(U) >= 3:
        # each matched reference sample's own spacing: distance to its nearest *other* distinct sample
        # (only for close queries: the ratio matters only under ``threshold``)
        matched = np.unique(pos[dist <= threshold])
        spacing = np.full(len(U), np.inf)
        if len(matched):
            spacing[matched] = nn.kneighbors(U[matched], n_neighbors=2)[0][:, 1]
        ratio = dist / np.maximum(spacing[pos], 1e-12)
        if len(single):
            pick = single[rng.choice(len(single), min(len(single), max_null), replace=False)]
            null_d, null_r, b = _leave_one_out(nn, U, pick)
            if looks.columns_look:
                null_k = (np.abs(U[pick] - U[b]) > MOVED).sum(axis=1)
    # a look: "distance" | "ratio" | "nonzero", with its cut; each gives query/null close counts
    cuts: dict[str, float | None] = {"distance": None}
    if len(null_d):
        cuts["ratio"] = float(np.quantile(null_r, density_quantile))
    null_nz = null_d[null_d > 0]  # ties at 0 are set aside like exact twins: equal is not near
    if nonzero_look and len(null_nz):
        # strictly below the cut, with float32 rounding of the embedding left on the cut: one month of
        # nwtco's age comes out 0.031578-0.031580, and 3 of 233 natural rows one step away counted close
        cuts["nonzero"] = float(np.quantile(null_nz, density_quantile)) * (1 - ON_THE_CUT)
    null_pairs = null_k[(null_d > 0) & (null_d <= threshold)] if len(null_k) else null_k
    if looks.columns_look and len(null_pairs):
        # the reference's own close pairs differ in this many columns at most (but a 1% tail): Car's
        # natural close pairs differ in 6 columns (the six prices), its noisy copies in 56-57
        cuts["columns"] = float(np.quantile(null_pairs, 1 - density_quantile))
    looks = {}
    for kind, cut in cuts.items():
        q_in, r_in = judged, np.ones(len(null_d), bool)
        q_close = judged & (dist <= threshold)
        r_close = null_d <= threshold
        if kind == "ratio":
            q_close &= ratio <= cut
            r_close &= null_r <= cut
        elif kind == "nonzero":
            q_in, r_in = judged & (dist > 0), null_d > 0
            q_close &= q_in & (dist < cut)
            r_close &= r_in & (null_d < cut)
        elif kind == "columns":
            q_in, r_in = judged & (dist > 0), null_d > 0
            q_close &= q_in & (moved > cut)
            r_close &= r_in & (null_k > cut)
        looks[kind] = (int(q_in.sum()), int(r_in.sum()), int(q_close.sum()), int(r_close.sum()), cut)
    return _Measured(
        dist=dist, index=keep[pos], ratio=ratio, judged=judged, looks=looks, moved=moved, null_d=null_d
    )


def _fisher(look: tuple[int, int, int, int, float | None]) -> float:
    """One-sided Fisher exact p of a look's counts (query rows, null rows, close query, close null)."""
    nq, nr, a, b, _ = look
    if not (nq and nr):
        return 1.0
    return float(fisher_exact([[a, nq - a], [b, nr - b]], alternative="greater").pvalue)


def _redealt_p(p: float, effect: float) -> float:
    """Fisher's p with the design effect: its normal score shrunk by ``sqrt(effect)`` (the difference's
    standard deviation over re-deals against Fisher's). Never below ``p`` (effect >= 1)."""
    return max(p, float(norm.sf(float(norm.isf(p)) / np.sqrt(max(effect, 1.0)))))


@dataclass
class _RedealNull:
    """What the re-deals measured: per look its design effect, and the looks' close-rate differences
    re-deal by re-deal (NaN where a look had no rows in a re-deal)."""

    effects: dict[str, float]
    diffs: dict[str, np.ndarray]


def _redeal_null(
    ref: np.ndarray,
    query: np.ndarray,
    ref_hashes: list[bytes],
    query_hashes: list[bytes],
    rng: np.random.Generator,
    looks: _Looks,
    redeals: int,
) -> _RedealNull:
    """Per look: how much more the close-rate difference (query minus null) varies over random re-deals
    of ref + query (at their sizes: the random split the test's null stands for) than Fisher's test
    assumes for independent rows, at least 1; and the differences themselves (for :func:`_joint_p`).

    Closeness belongs to pairs, not rows: a close pair inside the reference counts twice in the null
    (each end is the other's neighbour), and a close pair feeds the null when both ends land in the
    reference but the query rate when a split separates them, so the two rates move against each other
    from split to split; identical query rows absent from the reference move together. On nwtco's random
    re-splits the difference varied 1.2-1.4x as much as Fisher's variance, and the looks warned in 6.0%
    of splits at a shared level of 5% (docs/audit.md)."""
    pool = np.concatenate([ref, query])
    hashes = list(ref_hashes) + list(query_hashes)
    n_ref = len(ref)
    diffs: dict[str, np.ndarray] = {}
    fisher_var: dict[str, list[float]] = {}
    for t in range(redeals):
        perm = rng.permutation(len(pool))
        r, q = perm[:n_ref], perm[n_ref:]
        r_h = [hashes[i] for i in r]
        in_ref = set(r_h)
        q_exact = np.fromiter((hashes[i] in in_ref for i in q), bool, len(q))
        m = _measure(pool[r], pool[q], r_h, q_exact, rng, looks)
        for kind, (nq, nr, a, b, _) in m.looks.items():
            if not (nq and nr):
                continue
            p0 = (a + b) / (nq + nr)
            diffs.setdefault(kind, np.full(redeals, np.nan))[t] = a / nq - b / nr
            fisher_var.setdefault(kind, []).append(p0 * (1 - p0) * (1 / nq + 1 / nr))
    effects = {}
    for kind, d in diffs.items():
        d = d[np.isfinite(d)]
        expected = float(np.mean(fisher_var[kind]))
        effects[kind] = max(1.0, float(np.var(d, ddof=1)) / expected) if len(d) > 1 and expected > 0 else 1.0
    return _RedealNull(effects=effects, diffs=diffs)


def _joint_p(p: float, names: list[str], null: _RedealNull) -> float:
    """The reported look's corrected p paid for by the looks' joint null instead of x looks: the chance
    that the largest of the looks' normal scores reaches this look's (corrected) score, the scores
    jointly normal with the correlation of the looks' close-rate differences over the re-deals.

    The looks count the same close pairs (a copy is usually close by distance *and* by ratio), so their
    scores move together and Bonferroni's x looks pays for looks that add little: with perfectly
    correlated looks this is the one look's p, with independent ones Sidak's 1 - (1 - p)^looks (at most
    Bonferroni's). A look that did not vary over the re-deals (or had no rows in one) is taken as
    independent of the others, the cautious side. Never below ``p``, never above ``p`` x looks."""
    k = len(names)
    if k == 1 or p >= 1.0:
        return min(1.0, p)
    corr = np.eye(k)
    t = max((len(v) for v in null.diffs.values()), default=0)
    rows = np.column_stack([null.diffs.get(n, np.full(t, np.nan)) for n in names])
    rows = rows[np.isfinite(rows).all(axis=1)]
    sd = rows.std(axis=0) if len(rows) > 2 else np.zeros(k)
    varies = np.flatnonzero(sd > 0)
    if len(varies) > 1:
        corr[np.ix_(varies, varies)] = np.corrcoef(rows[:, varies], rowvar=False)
    z = float(norm.isf(p))
    # Genz's integration with a fixed seed: the same data give the same p
    inside = multivariate_normal.cdf(np.full(k, z), mean=np.zeros(k), cov=corr, allow_singular=True, rng=0)
    return float(min(k * p, max(p, 1.0 - inside), 1.0))


def _leave_one_out(
    nn: NearestNeighbors, U: np.ndarray, sample: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For sampled reference points ``a``: distance to their nearest other point ``b``, that distance
    over ``b``'s own spacing without ``a`` - what a query's distance and ratio are compared to - and ``b``."""
    d2, i2 = nn.kneighbors(U[sample], n_neighbors=2)
    self_first = i2[:, 0] == sample  # ties at distance 0 may list another point first
    b = np.where(self_first, i2[:, 1], i2[:, 0])
    d_ab = np.where(self_first, d2[:, 1], d2[:, 0])
    d3, i3 = nn.kneighbors(U[b], n_neighbors=3)
    other = (i3 != sample[:, None]) & (i3 != b[:, None])
    first = other.argmax(axis=1)
    s_b = d3[np.arange(len(b)), first]
    return d_ab, d_ab / np.maximum(s_b, 1e-12), b
