"""The export stage's metric figures agree with the stats package's."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.stages.export.evaluate import all_metrics, compare_metric
from closedloop.stats.metrics import compute_metric


def test_an_ordinal_variant_is_judged_by_its_rank_metrics() -> None:
    """An ordinal task whose primary metric was mae or qwk could not be exported: the export's own metric table
    knew neither, so the variant's comparison had no metric to compare on."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    P = rng.dirichlet(np.ones(4), 300)
    P[np.arange(300), y] += 0.6
    got = all_metrics(["qwk", "mae", "rmse", "acc"], y, P, "ordinal", None)
    for name in ("qwk", "mae", "rmse", "acc"):
        assert got[name] == pytest.approx(compute_metric(name, y, P, "ordinal"), abs=1e-12)
    # a variant that moves some predictions one rank up loses on mae: a positive loss, lower is better
    Q = np.roll(P, 1, axis=1)
    worse = np.where((rng.random(300) < 0.3)[:, None], Q, P)
    cmp = compare_metric("mae", y, worse, P, "ordinal", None, n_boot=50)
    assert cmp.diff > 0 and cmp.loss > 0
    assert "qwk" not in all_metrics(["qwk", "acc"], y, P, "multiclass", None)
