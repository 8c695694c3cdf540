"""``check_review_strategy``: the battery every review strategy passes (like the drift tests' battery).

``tests/monitor/test_review_strategy_battery.py`` runs it over every built-in strategy; run it on
your own (docs/extending.md does)::

    >>> from closedloop.monitoring.selection_checks import check_review_strategy
    >>> check_review_strategy("priority")[-1]
    'priority: a pool without embeddings: served'

It raises ``AssertionError`` naming the strategy and what failed, and returns what it checked, one line
per part (the last says whether a pool without embeddings is served or declined with a clear error).
"""

from __future__ import annotations

import numpy as np
from pydantic import ValidationError

from closedloop.core.errors import ConfigError
from closedloop.monitoring.selection import (
    STRATEGIES,
    Candidates,
    QueueStrategy,
    ReviewConfig,
    get_strategy,
    select,
)

POOLS = (1, 7, 60)
"""Pool sizes the battery asks for picks from (one sample, fewer than some k, many)."""
ASKED = (1, 5, 64)
"""Queue lengths asked for (64: more than every pool holds)."""


def pool(n: int, *, embeddings: bool = True, seed: int = 0) -> Candidates:
    """A synthetic unlabeled pool of ``n``: priorities in (0, 1) with a tie, 4-d embeddings and 10
    already-labeled samples' embeddings (or none of either)."""
    rng = np.random.default_rng(seed)
    priority = rng.uniform(0.01, 0.99, n)
    if n > 2:
        priority[1] = priority[2]  # a tie: the order between equals must still be decided
    if not embeddings:
        return Candidates(priority)
    return Candidates(priority, rng.normal(size=(n, 4)), rng.normal(size=(10, 4)))


def check_review_strategy(strategy: str | type[QueueStrategy]) -> list[str]:
    """Check a review strategy (a registered key, an import path or the class) on synthetic pools.

    Naming: its key and its import path resolve to the class, and an unknown parameter fails when the review
    config is read, naming it. Picks: for every pool size and queue length, ``min(k, n)`` distinct
    integer indices into the pool, the same again with the same seed; through :func:`select` (a random
    control slice first) the queue still has ``min(k, n)`` distinct samples. A pool without embeddings
    is served the same way, or declined with one :class:`ConfigError` (a strategy that needs them).
    """
    cls = get_strategy(strategy) if isinstance(strategy, str) else strategy
    name = cls.key
    assert get_strategy(name) is cls, f"{name}: its key resolves to {get_strategy(name)!r}"
    path = f"{cls.__module__}:{cls.__qualname__}"
    if "<locals>" not in path:  # a class defined inside a function has no import path
        assert STRATEGIES.resolve(path, where="review strategy") is cls, (
            f"{name}: {path!r} does not resolve to it"
        )
    try:
        ReviewConfig(strategy=name, params={"no_such_option": 1})
    except ValidationError as exc:
        assert "no_such_option" in str(exc), f"{name}: the config error does not name the key: {exc}"
    else:
        raise AssertionError(f"{name}: an unknown parameter was accepted")
    done = [f"{name}: resolves by key and import path; an unknown parameter is refused, named"]
    for n in POOLS:
        for k in ASKED:
            picks = _picks(cls, pool(n), k, seed=3)
            want = min(k, n)
            said = f"{name}: a pool of {n}, {k} asked"
            assert picks.dtype.kind in "iu", f"{said}: indices of dtype {picks.dtype}, not integers"
            assert len(picks) == want, f"{said}: {len(picks)} picks, not {want}"
            assert len(np.unique(picks)) == want, f"{said}: a sample picked twice ({picks.tolist()})"
            assert picks.min() >= 0 and picks.max() < n, (
                f"{said}: an index outside the pool ({picks.tolist()})"
            )
            again = _picks(cls, pool(n), k, seed=3)
            assert np.array_equal(picks, again), f"{said}: different picks with the same seed"
            queue = select(pool(n), k, ReviewConfig(strategy=name, control_fraction=0.2), seed=1)
            assert len(np.unique(queue.indices)) == want, (
                f"{said}: the queue (with its control slice) is not {want}"
            )
    done.append(
        f"{name}: {len(POOLS) * len(ASKED)} pools and lengths: min(k, n) distinct picks, the same again"
    )
    try:
        picks = _picks(cls, pool(7, embeddings=False), 3, seed=3)
    except ConfigError as exc:
        done.append(f"{name}: a pool without embeddings: declined ({exc})")
    else:
        assert len(np.unique(picks)) == 3, f"{name}: a pool without embeddings: {picks.tolist()}"
        done.append(f"{name}: a pool without embeddings: served")
    return done


def _picks(cls: type[QueueStrategy], cands: Candidates, k: int, *, seed: int) -> np.ndarray:
    return np.asarray(cls().select(cands, k, np.random.default_rng(seed)))
