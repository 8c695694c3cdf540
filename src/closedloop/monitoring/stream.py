"""Evidence that accumulates over the stream: a conformal test martingale per monitored score.

A mild shift can hide in every window of 200 and still be plain in the whole stream. Each production
row gets a score per stream statistic (the model's confidence; for binary tasks also its probability
of the positive class) and an **online conformal p-value**: the rank of its score among the
held-out reference rows and every production row seen before it (ties broken at random). If the
stream is exchangeable with the held-out rows (no shift), these p-values are independent and
uniform (Vovk, Nouretdinov & Gammerman 2003), so any bet that is fixed before a row arrives and pays
on average 1 under the uniform distribution makes a test martingale. The bet here is a histogram
of the p-values seen so far, mixed half and half with the uniform density (the "plug-in" betting
function): under a persistent shift the p-values pile up at one end, the histogram learns where,
and the wealth grows. The stream statistic is the mean of the martingales (a mean of test
martingales is one), and by Ville's inequality

    P(the stream statistic ever reaches 1/alpha) <= alpha,

whatever the number of looks: the stream alarm's false-alarm rate over the whole stream is at most
``alpha`` over runs (draws of the reference rows and of the stream). The rows must arrive in an order
that does not depend on their values (arrival time is such an order).

What it rests on: the held-out reference rows and the in-distribution production rows are
exchangeable (same distribution, independent), and the model and the score are fixed before the
stream starts. A reset (a new reference from a verified production period) starts a new martingale.

Per deployment (``delta``): the alarm at ``1 / (alpha * delta)`` instead, so the rate over runs is at
most ``alpha * delta`` and, by Markov's inequality over references, one reference's own rate exceeds
``alpha`` with probability at most ``delta`` (``closedloop.monitoring.stream_reference`` says why a
reference's luck matters).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from closedloop.monitoring.drift.predictions import confidences

BINS = 10
"""Histogram bins of the default betting function."""
CHUNK = 512
"""Rows ranked at once (pairwise comparisons within a chunk; the sorted set is merged once per chunk)."""
MIX = 0.5
"""Weight of the learned histogram in the default bet (the rest is the uniform density: a bad bet
loses at most half the wealth per row)."""
BETS: tuple[tuple[int, float], ...] = ((BINS, MIX),)
"""The betting functions, (histogram bins, weight of the histogram), each giving one martingale per
score; the stream statistic is the mean of them all (a mean of test martingales is one, so Ville's
bound needs no correction for their number)."""


def per_deployment_level(alpha: float, delta: float | None) -> float:
    """The level the stream's alarm spends: ``alpha * delta`` per deployment (``alpha`` for this
    reference with probability ``>= 1 - delta``), ``alpha`` over runs when ``delta`` is None."""
    return alpha * (1.0 if delta is None else delta)


def check_evidence(evidence: float) -> None:
    """The stream evidence's factor of alpha (``evidence_at``): in (0, 1]."""
    if not 0 < evidence <= 1:
        raise ValueError(f"stream evidence={evidence}: expected a factor of alpha in (0, 1]")


def promise(alpha: float, delta: float | None) -> str:
    """What the stream alarm's false-alarm rate is bounded by, in words (status and CLI show it)."""
    if delta is None:
        return f"false-alarm rate <= {alpha:g} over runs (draws of the reference and the stream), however often it is read"
    return (
        f"false-alarm rate <= {alpha:g} for this reference with probability >= {1 - delta:g} over the draw of "
        f"the held-out rows (<= {alpha * delta:g} over runs; Markov's inequality), however often it is read"
    )


def stream_scores(proba: np.ndarray | None, problem_type: str, threshold: float) -> dict[str, np.ndarray]:
    """The per-row scores the stream test follows: computed from the served probabilities only, so
    the offline monitor and the torch-free live monitor follow the same statistic."""
    if proba is None or problem_type == "regression" or len(proba) == 0:
        return {}
    p = np.asarray(proba, dtype=np.float64)
    out = {"confidence": confidences(p, problem_type, threshold).astype(np.float64)}
    if problem_type == "binary":
        out["positive_probability"] = (p[:, -1] if p.ndim == 2 else p).astype(np.float64)
    return out


def reference_stream_scores(
    proba: np.ndarray | None, problem_type: str, threshold: float
) -> dict[str, np.ndarray]:
    """The scores a profile's stream test follows (held-out rows' values): :func:`stream_scores`
    without the confidence of a binary task, a function of P(positive) whose martingale could only
    halve the mean of martingales (on the development half of PneumoniaMNIST's test split, detection
    within 600 rows 95% with it, 98% without: ``benchmarks/tune_monitor_stream.py p1``). Profiles
    built before keep both (``StreamTest`` follows the scores its profile names)."""
    scores = stream_scores(proba, problem_type, threshold)
    if problem_type == "binary":
        scores.pop("confidence", None)
    return scores


class StreamStatus(BaseModel):
    """The stream test's state after the rows seen so far (what CLI, JSON, ``GET /monitor`` show)."""

    model_config = ConfigDict(extra="forbid")

    alarm: bool
    """True once the stream statistic has reached ``threshold`` (it stays raised until a reset)."""
    e_value: float
    """The stream statistic now: the mean of the martingales (1 at the start; large = evidence of shift)."""
    max_e_value: float
    threshold: float
    """1 / (alpha * delta), or 1 / alpha without delta."""
    alpha: float
    delta: float | None = None
    """Per deployment: the rate is at most ``alpha`` for this reference with probability ``>= 1 - delta``
    (the alarm spends ``alpha * delta``). None: ``alpha`` over runs only (profiles built before)."""
    n: int
    """Production rows seen since the reference (or the last reset)."""
    alarm_at: int | None = None
    """Row count at which the stream alarm was first raised."""
    evidence_at: int | None = None
    """Row count at which the evidence first reached ``1 / (alpha * evidence)``: the level over runs
    (``evidence`` 1, without ``delta``; the same as ``alarm_at`` when ``delta`` is None) or a budget
    between it and the alarm's (``stream_evidence: budget``, rule W17). The label-free estimate is
    withheld from there on, as the drift tests' marginal level withholds it (unless the profile says only
    the alarm withholds it); the alarm waits for the per-deployment level. None for statuses saved before
    it existed."""
    evidence: float = 1.0
    """The factor of ``alpha`` at which ``evidence_at`` is recorded (1: over runs; statuses saved before)."""
    by_score: dict[str, float] = Field(default_factory=dict)
    """Each score's martingale now."""
    reference_rows: int = 0
    """Held-out rows the first production row was ranked against."""
    test: str = "conformal"
    """Which stream test: ``conformal`` (this module's martingales; the reference grows with the
    stream) or ``reference`` (``closedloop.monitoring.stream_reference``: every row so far against
    the fixed held-out reference, alpha spent over looks)."""
    look_test: str | None = None
    """``reference`` test: which p-value its looks test with (``classifier`` or ``mean_shift``,
    ``closedloop.monitoring.stream_reference``); None for the conformal test and statuses saved before."""
    spending: str | None = None
    """``reference`` test: how its looks share the alarm's alpha (``stream_reference.SPENDINGS``); None for
    the conformal test and statuses saved before (the harmonic shares)."""
    p_value: float | None = None
    """``reference`` test: the p-value at the last look."""
    looks: int = 0
    """``reference`` test: looks taken so far (one per ``look_rows`` rows)."""
    look_rows: int = 0
    rests_on: str = (
        "held-out reference rows and in-distribution production rows are exchangeable; rows arrive in an "
        "order that does not depend on their values; false-alarm rate <= alpha over runs, however often it is read"
    )
    """What the alarm promises and what that rests on, in words."""


class StreamTest:
    """Online conformal p-values and plug-in betting martingales, one per score (module doc)."""

    def __init__(
        self,
        calibration: dict[str, np.ndarray],
        alpha: float = 0.05,
        seed: Any = 0,
        bets: tuple[tuple[int, float], ...] = BETS,
        delta: float | None = None,
        evidence: float = 1.0,
    ) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"stream alpha={alpha}: expected a value in (0, 1)")
        if delta is not None and not 0 < delta < 1:
            raise ValueError(f"stream delta={delta}: expected a value in (0, 1) or None")
        check_evidence(evidence)
        bad = [b for b in bets if int(b[0]) < 1 or not 0 < float(b[1]) <= 1]
        if not bets or bad:
            raise ValueError(
                f"stream bets {list(bets)}: expected (bins >= 1, histogram weight in (0, 1]) pairs, at least one"
            )
        self.bets = tuple((int(b), float(m)) for b, m in bets)
        self.alpha = float(alpha)
        self.delta = None if delta is None else float(delta)
        self.level = per_deployment_level(self.alpha, self.delta)
        self.evidence = float(evidence)
        self.rng = np.random.default_rng(seed)
        self.names = sorted(calibration)
        self._sorted = {k: np.sort(np.asarray(calibration[k], dtype=np.float64)) for k in self.names}
        self.reference_rows = min((len(v) for v in self._sorted.values()), default=0)
        self._counts = {(k, j): np.zeros(b) for k in self.names for j, (b, _) in enumerate(self.bets)}
        self._log_m = {(k, j): 0.0 for k in self.names for j in range(len(self.bets))}
        self.n = 0
        self.alarm_at: int | None = None
        self.evidence_at: int | None = None
        self.max_e = 1.0

    def _pvalues(self, name: str, scores: np.ndarray) -> np.ndarray:
        """Online conformal p-values of ``scores`` (in order): each row ranked among the reference and
        all rows before it (ties at random), then added to the ranked set."""
        out = np.empty(len(scores))
        for start in range(0, len(scores), CHUNK):
            chunk = scores[start : start + CHUNK]
            seen = self._sorted[name]
            right = np.searchsorted(seen, chunk, side="right")
            left = np.searchsorted(seen, chunk, side="left")
            earlier = np.tri(len(chunk), k=-1, dtype=bool)  # [j, i]: row i came before row j
            above = ((chunk[None, :] > chunk[:, None]) & earlier).sum(axis=1)
            tied = ((chunk[None, :] == chunk[:, None]) & earlier).sum(axis=1)
            greater = len(seen) - right + above
            equal = right - left + tied
            u = self.rng.uniform(size=len(chunk))
            out[start : start + len(chunk)] = (greater + u * (equal + 1)) / (
                len(seen) + np.arange(len(chunk)) + 1
            )
            self._sorted[name] = np.sort(np.concatenate([seen, chunk]))
        return out

    def update(self, scores: dict[str, np.ndarray]) -> StreamStatus:
        """Feed the next rows (in arrival order); returns the status after them."""
        if not self.names:
            return self.status()
        missing = [k for k in self.names if k not in scores]
        if missing:
            raise ValueError(f"stream test: scores {missing} are missing")
        n_new = len(scores[self.names[0]])
        logs = {key: np.empty(n_new) for key in self._log_m}
        for k in self.names:
            p = self._pvalues(k, np.asarray(scores[k], dtype=np.float64))
            for jb, (bins, mix) in enumerate(self.bets):
                counts = self._counts[(k, jb)]
                lm = self._log_m[(k, jb)]
                out = logs[(k, jb)]
                for j, pj in enumerate(p):
                    b = min(int(pj * bins), bins - 1)
                    density = (
                        bins * (counts[b] + 1) / (counts.sum() + bins)
                    )  # predictable: past p-values only
                    lm += float(np.log((1 - mix) + mix * density))
                    counts[b] += 1
                    out[j] = lm
                self._log_m[(k, jb)] = lm
        # the mean of the martingales, row by row (for the first crossing)
        stacked = np.stack(list(logs.values()))
        top = stacked.max(axis=0)
        mean_e = np.exp(top) * np.exp(stacked - top).mean(axis=0)
        crossed = np.flatnonzero(mean_e >= 1 / self.level)
        if self.alarm_at is None and len(crossed):
            self.alarm_at = self.n + int(crossed[0]) + 1
        seen = np.flatnonzero(mean_e >= 1 / (self.alpha * self.evidence))
        if self.evidence_at is None and len(seen):
            self.evidence_at = self.n + int(seen[0]) + 1
        self.max_e = max(self.max_e, float(mean_e.max()) if len(mean_e) else 1.0)
        self.n += n_new
        return self.status()

    def e_value(self) -> float:
        if not self.names:
            return 1.0
        return float(np.mean([np.exp(v) for v in self._log_m.values()]))

    def by_score(self) -> dict[str, float]:
        """Each score's wealth: the mean of its bets' martingales."""
        return {
            k: float(np.mean([np.exp(self._log_m[(k, j)]) for j in range(len(self.bets))]))
            for k in self.names
        }

    def status(self) -> StreamStatus:
        return StreamStatus(
            alarm=self.alarm_at is not None,
            e_value=self.e_value(),
            max_e_value=self.max_e,
            threshold=1 / self.level,
            alpha=self.alpha,
            delta=self.delta,
            n=self.n,
            alarm_at=self.alarm_at,
            evidence_at=self.evidence_at,
            evidence=self.evidence,
            by_score=self.by_score(),
            reference_rows=self.reference_rows,
            rests_on=(
                "held-out reference rows and in-distribution production rows are exchangeable; rows arrive in "
                f"an order that does not depend on their values; {promise(self.alpha, self.delta)}"
            ),
        )
