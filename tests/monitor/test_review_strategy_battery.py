"""Every registered review strategy passes the public battery (check_review_strategy), and the battery
fails a strategy that breaks the contract, naming it."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.monitoring.selection import STRATEGIES, QueueStrategy
from closedloop.monitoring.selection_checks import check_review_strategy

BUILT_IN = ("priority", "random", "power", "kcenter", "typical", "diverse")


def test_every_built_in_strategy_is_in_the_battery() -> None:
    assert set(BUILT_IN) <= set(STRATEGIES.names())


@pytest.mark.parametrize("key", BUILT_IN)
def test_review_strategy_battery(key: str) -> None:
    lines = check_review_strategy(key)
    assert len(lines) == 3 and lines[-1].startswith(f"{key}: a pool without embeddings")


def test_the_battery_fails_a_strategy_that_picks_twice() -> None:
    class Twice(QueueStrategy):
        key = "battery_twice"
        description = "the top sample, again and again (broken on purpose)"

        def select(self, cands, k, rng):  # noqa: ANN001, ANN202
            return np.zeros(min(k, len(cands)), dtype=np.int64)

    with pytest.raises(AssertionError, match="battery_twice: a pool of 7, 5 asked: a sample picked twice"):
        check_review_strategy(Twice)
