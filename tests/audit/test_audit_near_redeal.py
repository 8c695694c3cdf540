"""The near-duplicate test's p-value corrected by the design effect measured on random re-deals.

Closeness belongs to pairs, not samples: a close pair inside train counts twice in the null, and a pair
feeds the null when both ends land in train but the query rate when a split separates them. Fisher's
test, which treats samples as independent, is then overconfident (nwtco's random re-splits warned in
6.0% at a shared level of 5%). The re-deals measure how much more the close-rate difference varies
over random splits than Fisher assumes, and the p-value is corrected by it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.audit.test_audit_near_density import dense_images, plant
from tests.audit.test_audit_stage import run

from closedloop.stages.audit.near_density import _Looks, _redeal_null, near_excess


@pytest.fixture(autouse=True)
def one_openmp_thread():
    """Thousands of small nearest-neighbour queries: with two pytest workers on two cores, scikit-learn's
    OpenMP threads oversubscribe the CPU, and when other work shares the machine their spin-waits made one
    test run past its 300 s timeout (18 s on a quiet machine; CI, session 28). One thread per worker."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def paired(n_pairs: int = 300, seed: int = 0) -> np.ndarray:
    """Points that come in close pairs (0.02 apart), the pairs far from each other."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0, 10, (n_pairs, 4))
    return np.concatenate([c, c + rng.normal(0, 0.01, c.shape)])


def split(X: np.ndarray, seed: int, n_ref: int = 360):
    perm = np.random.default_rng(seed).permutation(len(X))
    r, q = perm[:n_ref], perm[n_ref:]
    h = [x.tobytes() for x in X]
    return X[r], X[q], [h[i] for i in r], [h[i] for i in q]


def test_close_pairs_make_the_difference_vary_more_than_fisher_assumes() -> None:
    ref, q, rh, qh = split(paired(), 0)
    eff = _redeal_null(ref, q, rh, qh, np.random.default_rng(1), _Looks(0.1, 1000, 0.01, False), 50).effects
    # about 2: whether a pair sits inside the reference or is split decides both rates at once; the
    # difference is one count (the pairs split apart), not 600 independent samples
    assert eff["distance"] > 1.5


@pytest.mark.slow  # 120 splits, re-deals in 13 (Bonferroni) and 15 (joint) of them; 7 warn either way
def test_on_random_splits_of_paired_data_fisher_warns_too_often_and_the_corrected_p_less() -> None:
    X = paired()
    fisher = corrected = joint = 0
    n = 120
    for s in range(n):
        ref, q, rh, qh = split(X, 100 + s)
        args = (ref, q, rh, np.zeros(len(q), bool), 0.1, 1000, np.random.default_rng(0))
        a = near_excess(*args)
        fisher += a.p_value < 0.05
        kw = {"query_hashes": qh, "redeals": 30, "redeal_below": 0.05}
        if a.p_value < 0.05:  # the corrected p is never below Fisher's (checked here too)
            b = near_excess(*args, **kw, joint=False)
            assert b.p_value >= a.p_value and (b.ratio_cut, b.n_close) == (a.ratio_cut, a.n_close)
            corrected += b.p_value < 0.05
        if a.p_value / a.looks_counted < 0.05:  # the joint null may count the looks as fewer
            c = near_excess(*args, **kw)
            joint += c.p_value < 0.05
    assert fisher / n >= 0.1  # 13 of 120 at a nominal 5%: the pairs make Fisher overconfident
    assert corrected / n <= 0.06  # 7 of 120 (a binomial 95% interval for 5% of 120 reaches 10%)
    assert joint / n <= 0.06


def test_the_correction_runs_only_when_it_could_matter_and_within_its_row_bound() -> None:
    ref, q, rh, qh = split(paired(), 7)
    no_copy = np.zeros(len(q), bool)
    args = (ref, q, rh, no_copy, 0.1, 1000, np.random.default_rng(0))
    plain = near_excess(*args)
    assert near_excess(*args, query_hashes=qh, redeals=30, redeal_below=0.0).design_effect is None
    on = near_excess(*args, query_hashes=qh, redeals=30, redeal_below=1.1)
    assert on.design_effect is not None and on.design_effect >= 1.0
    # the chosen look's p only rises; the joint null may then count the looks as fewer than 2
    assert on.p_value / on.looks_counted >= plain.p_value / 2 and on.looks_counted <= 2.0
    bonf = near_excess(*args, query_hashes=qh, redeals=30, redeal_below=1.1, joint=False)
    assert bonf.p_value >= plain.p_value and bonf.looks_counted == 2.0
    off = near_excess(*args, query_hashes=qh, redeals=30, redeal_below=1.1, redeal_max_rows=100)
    assert off.design_effect is None and off.p_value == plain.p_value


def test_planted_copies_stay_an_error_and_the_design_effect_reaches_metrics_summary_and_message(
    tmp_path: Path,
) -> None:
    leaked, truth = plant(dense_images(), 15, sd=1.0)
    stage, out = run(leaked, tmp_path, checks=["duplicates"], stop_on=[])
    m = out.audit.results["duplicates"]["metrics"]
    assert m["null_redeals"] == 50 and m["redeal_max_rows"] == 20000 and m["combine_looks"] == "joint"
    assert stage.summarize(out)["near_null_redeals"] == 50
    assert stage.summarize(out)["near_combine_looks"] == "joint"
    assert m["near_density"]["train-test"]["design_effect"] >= 1.0
    assert 1.0 <= m["near_density"]["train-test"]["looks_counted"] <= 2.0
    f = next(f for f in out.audit.findings if "train/test overlap" in f["message"])
    assert (
        f["severity"] == "error" and "design effect" in f["message"] and f["evidence"]["design_effect"] >= 1
    )
    assert "looks counted as" in f["message"] and f["evidence"]["looks_counted"] <= 2.0
    d = out.audit.duplicates
    flagged = set(d[(d.split_a == "train") & (d.split_b == "test") & d.excess].index_b)
    assert len(flagged & truth) / len(truth) >= 0.9
    off = {"name": "duplicates", "params": {"null_redeals": 0}}
    _, out0 = run(leaked, tmp_path / "off", checks=[off], stop_on=[])
    m0 = out0.audit.results["duplicates"]["metrics"]
    assert m0["null_redeals"] == 0 and m0["near_density"]["train-test"]["design_effect"] is None
    assert m0["near_density"]["train-test"]["looks_counted"] == 2.0  # no re-deals: Bonferroni


def test_bad_null_redeals_names_the_field() -> None:
    from closedloop.core.errors import ConfigError
    from closedloop.stages.audit import AuditDataset

    with pytest.raises(ConfigError, match="null_redeals"):
        AuditDataset({"checks": [{"name": "duplicates", "params": {"null_redeals": -1}}]})


def _null(diffs: dict[str, np.ndarray]):
    from closedloop.stages.audit.near_density import _RedealNull

    return _RedealNull(effects=dict.fromkeys(diffs, 1.0), diffs=diffs)


def test_looks_that_move_together_over_the_re_deals_count_as_one_and_independent_ones_as_sidak() -> None:
    from closedloop.stages.audit.near_density import _joint_p

    rng = np.random.default_rng(0)
    x, y, z = rng.normal(size=(3, 2000))
    p = 0.01
    sidak = 1 - (1 - p) ** 2
    # the same close pairs in both looks: Bonferroni's x2 would pay for a look that adds nothing
    assert _joint_p(p, ["distance", "ratio"], _null({"distance": x, "ratio": x})) == pytest.approx(
        p, rel=0.02
    )
    assert _joint_p(p, ["distance", "ratio"], _null({"distance": x, "ratio": y})) == pytest.approx(
        sidak, rel=0.05
    )
    three = _joint_p(p, ["distance", "ratio", "nonzero"], _null({"distance": x, "ratio": x, "nonzero": z}))
    assert three == pytest.approx(sidak, rel=0.05)
    # a look that never varied, or was missing from the re-deals: taken as independent (the cautious side)
    flat = _joint_p(p, ["distance", "ratio"], _null({"distance": x, "ratio": np.zeros(2000)}))
    assert flat == pytest.approx(sidak, rel=0.05)
    assert _joint_p(p, ["distance", "ratio"], _null({"distance": x})) == pytest.approx(sidak, rel=0.05)
    # between the one look's p and Bonferroni's, whatever the correlation
    anti = _joint_p(p, ["distance", "ratio"], _null({"distance": x, "ratio": -x}))
    assert p <= anti <= 2 * p
    assert _joint_p(p, ["distance"], _null({"distance": x})) == p


def copies_in_sparse_points(k: int = 5, seed: int = 0):
    """Sparse points (no natural close pairs) and a query with ``k`` near copies of reference points."""
    rng = np.random.default_rng(seed)
    ref, q = rng.uniform(0, 1, (300, 6)), rng.uniform(0, 1, (100, 6))
    q = np.concatenate([q, ref[rng.choice(300, k, replace=False)] + rng.normal(0, 0.002, (k, 6))])
    return ref, q, [x.tobytes() for x in ref], [x.tobytes() for x in q]


def test_the_joint_null_pays_less_than_bonferroni_for_the_same_look_counts_and_design_effect() -> None:
    ref, q, rh, qh = copies_in_sparse_points()
    args = (ref, q, rh, np.zeros(len(q), bool), 0.1, 1000, np.random.default_rng(0))
    kw = {"query_hashes": qh, "redeals": 50, "redeal_below": 0.05}
    joint, bonf = near_excess(*args, **kw), near_excess(*args, **kw, joint=False)
    # the same re-deals: the same look, counts and design effect; only the price of the looks differs
    assert (joint.ratio_cut, joint.n_close, joint.design_effect) == (
        bonf.ratio_cut,
        bonf.n_close,
        bonf.design_effect,
    )
    assert bonf.looks_counted == 2.0 and 1.0 <= joint.looks_counted < 1.95
    assert bonf.p_value / 2 <= joint.p_value < bonf.p_value
    # without re-deals both are Bonferroni over the looks
    plain = near_excess(*args)
    assert plain.looks_counted == 2.0 and plain.design_effect is None


def test_bad_combine_looks_names_the_field() -> None:
    from closedloop.core.errors import ConfigError
    from closedloop.stages.audit import AuditDataset

    with pytest.raises(ConfigError, match="combine_looks"):
        AuditDataset({"checks": [{"name": "duplicates", "params": {"combine_looks": "sidak"}}]})
