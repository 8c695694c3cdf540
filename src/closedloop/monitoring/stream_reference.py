"""The stream test against a fixed reference: every row since the reference, tested at looks that spend alpha.

The conformal martingale (``closedloop.monitoring.stream``) ranks each production row among the held-out
rows *and every production row before it*: once a few hundred shifted rows have arrived they outnumber
the reference, later shifted rows rank among them, and the evidence stops growing. This test keeps the
reference fixed. Every ``look_rows`` rows (look ``k`` at ``k * look_rows`` rows) it runs the exact domain
check (``closedloop.monitoring.domain``: a cross-fitted classifier between the held-out rows and all the
production rows so far, one Mann-Whitney test per fold, Bonferroni) and raises the stream alarm when

    p_k <= alpha * w_k,    w_k = 1 / (k (k + 1))    (sum over k = 1, 2, ... is 1).

(``spending``: other fixed shares summing to 1, ``SPENDINGS``; the monitor stage's default since session 19
is ``first3_late``, 0.2, 0.2, 0.5 at the first three looks; the bound below is the same for each.)

Each p_k is exact when the held-out rows and the production rows are exchangeable, so by the union bound

    P(the alarm is ever raised) <= sum_k alpha * w_k = alpha,

however many looks are taken and however often the status is read (``look_test``: the classifier's
p-value, or ``mean_shift``, the domain check's permutation test with enough relabellings for the look's
level, stopped early; both exact, so the bound is the same): the false-alarm rate over the whole
stream is at most ``alpha`` over runs (draws of the reference and of the stream). Reading the status
between looks shows the last look. The reported statistic is ``max_k w_k / p_k``: it reaches ``c`` with
probability at most ``1 / c`` under no shift, and the alarm is at ``1 / alpha`` (``1 / (alpha * delta)``
per deployment, below; the same scale as the conformal test's e-value).

Rows beyond ``max_rows`` enter by reservoir sampling (each of the rows so far equally likely to be kept,
decided without looking at their values), so a look costs the same however long the stream is and the
p-values stay exact.

**Per deployment** (``delta``). That bound is over runs, i.e. over draws of the reference too. For one
deployment it is not: the longer the stream, the more the rows so far stand for the population, and a
look tests mostly how far *this* reference's few hundred rows happen to be from it. An unlucky
reference alarms on nearly every in-distribution stream (measured: the same 2 of 20 references alarmed
in both sessions that ran them, ``docs/results/monitor_first_window.txt``). With ``delta`` the looks spend ``alpha * delta`` instead: the false-alarm rate
over runs is then at most ``alpha * delta``, and since it is the mean over references of each
reference's own rate, Markov's inequality gives

    P_reference(this reference's false-alarm rate over the whole stream > alpha) <= delta,

the same per-deployment form as the per-window alarm (``BuildMonitorProfileConfig.delta``). It costs
power only at the looks' level, and the shifts a stream must catch are far below it
(``docs/results/monitor_stream_deployment.txt``).

What it rests on: the held-out rows are exchangeable with in-distribution production rows, the model is
fixed, and rows arrive in an order that does not depend on their values. A reset (a new reference
from a verified period) starts a new test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from closedloop.monitoring.domain import MIN_ROWS, PERMUTATIONS, domain_check
from closedloop.monitoring.drift.base import Sample
from closedloop.monitoring.stream import (
    StreamStatus,
    StreamTest,
    check_evidence,
    per_deployment_level,
    promise,
)

if TYPE_CHECKING:
    from closedloop.monitoring.profile import ReferenceProfile

LOOK_ROWS = 200
"""Rows between looks (the default window size)."""
MAX_ROWS = 2000
"""Production rows a look tests at most (a uniform reservoir of the rows so far beyond this)."""
PROBLEMS = ("binary", "multiclass", "ordinal")
"""Tasks with class probabilities (the domain check's inputs)."""
LOOK_TESTS = ("classifier", "mean_shift")
"""The p-value each look tests with (``stream_look_test``): ``classifier``, the domain check's
cross-fitted classifier (a Mann-Whitney test per fold, Bonferroni over the two); ``mean_shift``, its
permutation test of the mean shift (the window's p-value), with enough relabellings to reach the look's
level, stopped early by Besag and Clifford's rule."""
STOP_AFTER = 10
"""``mean_shift`` looks: relabellings stop once this many reach the observed statistic (the p-value is
then ``10 / l``; a look without a shift stops after a few dozen relabellings)."""


def look_permutations(level: float, k: int, spending: str = "harmonic") -> int:
    """Relabellings of a ``mean_shift`` look ``k`` at stream level ``level``: the smallest p-value
    ``1 / (B + 1)`` is half the look's threshold ``level * w_k`` (``spend(k, spending)``), at least the
    window test's ``PERMUTATIONS``.

    >>> look_permutations(0.005, 1), look_permutations(0.005, 3)
    (1999, 4799)
    """
    return max(PERMUTATIONS, int(np.ceil(2.0 / (level * spend(k, spending)))) - 1)


def _harmonic(k: int) -> float:
    return 1.0 / (k * (k + 1))


def _first_three(shares: tuple[float, float, float]) -> Any:
    """The first three looks (600 rows at the default look of 200: the issue's horizon) get ``shares``;
    the rest, ``1 - sum(shares)``, goes to the later looks harmonically (``(1 - s) / ((k - 3) (k - 2))``)."""
    rest = 1.0 - sum(shares)

    def w(k: int) -> float:
        return shares[k - 1] if k <= 3 else rest / ((k - 3) * (k - 2))

    return w


SPENDINGS = {
    "harmonic": _harmonic,
    "geometric": lambda k: 0.5**k,
    "first3_even": _first_three((0.3, 0.3, 0.3)),
    "first3_late": _first_three((0.2, 0.2, 0.5)),
}
"""How the looks share the stream alarm's alpha (``stream_spending``): look ``k``'s share ``w_k``, summing to
1 over all looks and fixed before any row is seen, so the union bound (and the per-deployment Markov bound)
holds for each. ``harmonic`` (the default): ``1 / (k (k + 1))``, 0.5, 0.167, 0.083 at the first three looks;
``geometric``: ``2^-k``, 0.5, 0.25, 0.125; ``first3_even``: 0.3 each at the first three looks, 0.1 over the
later ones; ``first3_late``: 0.2, 0.2, 0.5, then 0.1 over the later ones. The estimate-withholding evidence
(``evidence_at``) keeps the harmonic shares whatever the alarm's (its budget, rule W17, was chosen with them)."""


def spend(k: int, spending: str = "harmonic") -> float:
    """The share of alpha spent at look ``k`` (1-based) by ``spending`` (``SPENDINGS``)."""
    if spending not in SPENDINGS:
        raise ValueError(f"stream spending={spending!r}: expected one of {', '.join(SPENDINGS)}")
    return SPENDINGS[spending](k)


class ReferenceStreamTest:
    """Domain checks of all rows so far against a fixed reference, alpha spent over looks (module doc)."""

    def __init__(
        self,
        reference: Sample,
        problem_type: str,
        alpha: float = 0.05,
        seed: Any = 0,
        look_rows: int = LOOK_ROWS,
        max_rows: int = MAX_ROWS,
        delta: float | None = None,
        look_test: str = "classifier",
        evidence: float = 1.0,
        spending: str = "harmonic",
    ) -> None:
        if spending not in SPENDINGS:
            raise ValueError(f"stream spending={spending!r}: expected one of {', '.join(SPENDINGS)}")
        if look_test not in LOOK_TESTS:
            raise ValueError(f"stream look_test={look_test!r}: expected one of {', '.join(LOOK_TESTS)}")
        if not 0 < alpha < 1:
            raise ValueError(f"stream alpha={alpha}: expected a value in (0, 1)")
        if delta is not None and not 0 < delta < 1:
            raise ValueError(f"stream delta={delta}: expected a value in (0, 1) or None")
        check_evidence(evidence)
        if look_rows < MIN_ROWS:
            raise ValueError(f"stream look_rows={look_rows}: expected at least {MIN_ROWS} rows between looks")
        if max_rows < look_rows:
            raise ValueError(f"stream max_rows={max_rows}: expected at least look_rows={look_rows}")
        if problem_type not in PROBLEMS:
            raise ValueError(
                f"reference stream test: problem type {problem_type!r} has no class probabilities "
                f"(expected one of {', '.join(PROBLEMS)})"
            )
        if reference.proba is None or len(reference) < MIN_ROWS:
            raise ValueError(
                f"reference stream test: the reference needs probabilities and at least {MIN_ROWS} rows "
                f"(it has {len(reference)})"
            )
        self.reference = reference
        self.problem_type = problem_type
        self.alpha = float(alpha)
        self.delta = None if delta is None else float(delta)
        self.level = per_deployment_level(self.alpha, self.delta)
        # the level that withholds the estimate: alpha over runs, or a budget alpha * evidence (rule W17)
        self.evidence = float(evidence)
        self.look_rows = int(look_rows)
        self.max_rows = int(max_rows)
        self.look_test = look_test
        self.spending = spending
        self.p_classifier: float | None = None  # the last look's classifier p-value (both tests compute it)
        self.rng = np.random.default_rng(seed)
        self.reference_rows = len(reference)
        self.n = 0
        self.looks = 0
        self.alarm_at: int | None = None
        self.evidence_at: int | None = (
            None  # p_k <= alpha * evidence * w_k (withholds the estimate; evidence 1: over runs)
        )
        self.stat = 1.0
        self.max_stat = 1.0
        self.p_value: float | None = None
        self._kept: Sample | None = None  # the reservoir (at most max_rows rows)
        self._looked_at = 0  # rows at the last look (a second finish() on the same rows adds no look)

    def _keep(self, rows: Sample) -> None:
        """Add rows to the reservoir (row ``t`` replaces a kept one with probability ``max_rows / (t + 1)``)."""
        features = rows.features if rows.features.ndim == 2 else np.zeros((len(rows), 0))
        rows = Sample(features=features, embeddings=rows.embeddings, proba=rows.proba)
        if self._kept is None:
            self._kept = rows.take(np.arange(0))
        room = max(0, self.max_rows - len(self._kept))
        head, tail = rows.take(np.arange(min(room, len(rows)))), np.arange(min(room, len(rows)), len(rows))
        self._kept = _concat(self._kept, head)
        if len(tail):
            t = self.n + tail  # each row's index in the stream
            slot = np.floor(self.rng.uniform(size=len(tail)) * (t + 1)).astype(int)
            hit = slot < self.max_rows
            for j, i in zip(slot[hit], tail[hit], strict=True):  # in order: a later row wins a slot
                _assign(self._kept, int(j), rows, int(i))
        self.n += len(rows)

    def _look(self) -> None:
        assert self._kept is not None
        self.looks += 1
        self._looked_at = self.n
        w = spend(self.looks, self.spending)  # the alarm's share at this look
        w_evidence = spend(
            self.looks
        )  # the evidence keeps the harmonic shares (rule W17 was chosen with them)
        # a mean-shift look gets relabellings to reach half of the smaller of the two thresholds
        b = (
            max(
                look_permutations(self.level, self.looks, self.spending),
                look_permutations(self.alpha * self.evidence, self.looks),
            )
            if self.look_test == "mean_shift"
            else 0
        )
        if self.alarm_at is not None and self.evidence_at is not None:
            # raised alarms stay raised: later looks need no small p-values, and a look's cost grows as
            # k^2 relabellings times the rows (a shifted live stream would otherwise slow down every look)
            b = min(b, PERMUTATIONS)
        check, _ = domain_check(
            self.reference, self._kept, self.problem_type, self.rng, permutations=b, stop_after=STOP_AFTER
        )
        self.p_classifier = max(check.p_classifier, 1e-300)
        self.p_value = max(check.p_value, 1e-300)
        self.stat = w / self.p_value
        self.max_stat = max(self.max_stat, self.stat)
        if self.alarm_at is None and self.p_value <= self.level * w:
            self.alarm_at = self.n
        if self.evidence_at is None and self.p_value <= self.alpha * self.evidence * w_evidence:
            self.evidence_at = self.n

    def update(self, rows: Sample) -> StreamStatus:
        """Feed the next rows (in arrival order; probabilities needed, summary features and embeddings
        used when both sides have them); looks at every multiple of ``look_rows``."""
        if rows.proba is None:
            raise ValueError("reference stream test: the rows have no probabilities")
        start = 0
        while start < len(rows):
            to_look = self.look_rows - self.n % self.look_rows
            piece = np.arange(start, min(len(rows), start + to_look))
            self._keep(rows.take(piece))
            start += len(piece)
            if self.n % self.look_rows == 0:
                self._look()
        return self.status()

    def finish(self) -> StreamStatus:
        """A last look at the rows so far when the stream ends between looks (an offline stream: a file
        of 312 rows with looks every 200 would otherwise test only its first 200). The end of a file is
        fixed before any of its rows is read, so the look schedule still does not depend on the
        values and the union bound holds: this look spends the next share, ``alpha / (k (k + 1))``.
        Rows fed after it keep the schedule (the next look at the next multiple of ``look_rows``). A
        stream that ended on a look, or with fewer rows than the check needs, is left as it is."""
        if self.n % self.look_rows and self.n >= MIN_ROWS and self._looked_at != self.n:
            self._look()
        return self.status()

    def status(self) -> StreamStatus:
        return StreamStatus(
            alarm=self.alarm_at is not None,
            e_value=self.stat,
            max_e_value=self.max_stat,
            threshold=1 / self.level,
            alpha=self.alpha,
            delta=self.delta,
            n=self.n,
            alarm_at=self.alarm_at,
            evidence_at=self.evidence_at,
            evidence=self.evidence,
            by_score={"domain": self.stat},
            reference_rows=self.reference_rows,
            test="reference",
            look_test=self.look_test,
            spending=self.spending,
            p_value=self.p_value,
            looks=self.looks,
            look_rows=self.look_rows,
            rests_on=(
                "held-out reference rows and in-distribution production rows are exchangeable; rows arrive in "
                f"an order that does not depend on their values; every {self.look_rows} rows an exact domain "
                f"check ({_LOOK_WORDS[self.look_test]}) of the rows so far against the fixed reference spends {spent_words(self.delta, self.spending)} at "
                f"look k; {promise(self.alpha, self.delta)}"
            ),
        )


def new_stream_test(profile: ReferenceProfile, seed: Any = 0) -> StreamTest | ReferenceStreamTest:
    """The stream test a profile names (``ProfileInfo.stream_test``), starting at its reference. A
    ``reference`` test needs class probabilities on the held-out rows; without them (regression) the
    conformal test follows what the profile has."""
    info, ref = profile.info, profile.domain
    usable = info.problem_type in PROBLEMS and ref.proba is not None and len(ref) >= MIN_ROWS
    evidence = evidence_factor(info)
    if info.stream_test == "reference" and usable:
        return ReferenceStreamTest(
            ref,
            info.problem_type,
            info.stream_alpha,
            seed,
            info.stream_look,
            delta=info.stream_delta,
            look_test=info.stream_look_test,
            evidence=evidence,
            spending=info.stream_spending,
        )
    return StreamTest(
        profile.stream, info.stream_alpha, seed=seed, delta=info.stream_delta, evidence=evidence
    )


def evidence_factor(info: Any) -> float:
    """The factor of ``stream_alpha`` at which a profile's stream evidence is recorded: its budget
    ``stream_evidence_delta`` under ``stream_evidence: budget``, else 1 (the level over runs)."""
    delta = getattr(info, "stream_evidence_delta", None)
    return float(delta) if info.stream_evidence == "budget" and delta is not None else 1.0


_LOOK_WORDS = {
    "classifier": "cross-fitted classifier, Mann-Whitney per fold",
    "mean_shift": "mean-shift permutation test",
}


def spent_words(delta: float | None, spending: str = "harmonic") -> str:
    """What look ``k`` spends, in words: ``alpha*delta/(k(k+1))`` for the harmonic shares."""
    a = "alpha" if delta is None else "alpha*delta"
    return f"{a}{_SPENDING_WORDS[spending]}"


_SPENDING_WORDS = {
    "harmonic": "/(k(k+1))",
    "geometric": "/2^k",
    "first3_even": " x (0.3 at each of looks 1-3, then 0.1/((k-3)(k-2)))",
    "first3_late": " x (0.2, 0.2, 0.5 at looks 1-3, then 0.1/((k-3)(k-2)))",
}


def _concat(a: Sample, b: Sample) -> Sample:
    def cat(x: np.ndarray | None, y: np.ndarray | None) -> np.ndarray | None:
        return None if x is None or y is None else np.concatenate([x, y])

    return Sample(
        features=np.concatenate([a.features, b.features]),
        embeddings=cat(a.embeddings, b.embeddings),
        proba=cat(a.proba, b.proba),
    )


def _assign(kept: Sample, slot: int, rows: Sample, i: int) -> None:
    kept.features[slot] = rows.features[i]
    if kept.embeddings is not None and rows.embeddings is not None:
        kept.embeddings[slot] = rows.embeddings[i]
    if kept.proba is not None and rows.proba is not None:
        kept.proba[slot] = rows.proba[i]
