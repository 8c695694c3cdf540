"""Near duplicates judged against the data's own density: a dense dataset is not an overlap; near
copies planted in it are, with the pairs that make the excess; exact copies stay exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.audit.test_audit_stage import run

from closedloop.core.errors import DataError
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.stages.audit.near_density import near_excess


def dense_images(n: int = 1500, seed: int = 0) -> DatasetBundle:
    """Images from 40 prototypes with small noise: many samples have a close neighbour in every split."""
    rng = np.random.default_rng(seed)
    protos = rng.uniform(0, 255, (40, 8, 8, 1))
    k = rng.integers(0, 40, n)
    X = np.clip(protos[k] + rng.normal(0, 6, (n, 8, 8, 1)), 0, 255).round().astype(np.uint8)
    y = k % 2
    a, b = int(n * 0.6), int(n * 0.8)
    meta = DatasetMeta(name="dense", source="synthetic", kind="images", label_names=["0", "1"])
    return DatasetBundle(
        meta=meta,
        splits={"train": Split(X[:a], y[:a]), "val": Split(X[a:b], y[a:b]), "test": Split(X[b:], y[b:])},
    )


def plant(b: DatasetBundle, n: int, sd: float, seed: int = 1) -> tuple[DatasetBundle, set[int]]:
    rng = np.random.default_rng(seed)
    te, src = b.splits["test"], rng.choice(len(b.train), n, replace=False)
    copies = (
        np.clip(b.train.X[src] + rng.normal(0, sd, b.train.X[src].shape), 0, 255).round().astype(np.uint8)
    )
    test = Split(np.concatenate([te.X, copies]), np.concatenate([te.y, b.train.y[src]]))
    return DatasetBundle(meta=b.meta, splits={"train": b.train, "val": b.val, "test": test}), set(
        range(len(te), len(te) + n)
    )


def test_dense_data_is_not_an_overlap_but_the_old_constant_would_say_so(tmp_path: Path) -> None:
    b = dense_images()
    _, out = run(b, tmp_path, checks=["duplicates"])  # stop_on default: duplicates:error; must not stop
    m = out.audit.results["duplicates"]["metrics"]
    d = out.audit.duplicates
    tt = d[(d.split_a == "train") & (d.split_b == "test") & (d.kind == "near")]
    assert len(tt) > 0.5 * len(b.splits["test"])  # the fixed threshold alone calls most of test an overlap
    assert m["near_density"]["train-test"]["n_excess"] <= 3
    assert m["overlap"]["train-test"] <= 3
    sev = {
        f["severity"]
        for f in out.audit.findings
        if f["check"] == "duplicates" and "train/test" in f["message"]
    }
    assert sev == {"info"}
    assert not tt.excess.all()


def test_planted_near_copies_in_dense_data_are_an_overlap_with_their_pairs(tmp_path: Path) -> None:
    leaked, truth = plant(dense_images(), 15, sd=1.0)
    with pytest.raises(DataError, match="train/test overlap"):
        run(leaked, tmp_path / "a", checks=["duplicates"])
    _, out = run(leaked, tmp_path / "b", checks=["duplicates"], stop_on=[], drop_duplicates=True)
    d = out.audit.duplicates
    flagged = set(d[(d.split_a == "train") & (d.split_b == "test") & d.excess].index_b)
    assert len(flagged & truth) / len(truth) >= 0.9
    f = next(f for f in out.audit.findings if "train/test overlap" in f["message"])
    assert f["severity"] == "error" and f["evidence"]["p_value"] < 0.001 and f["evidence"]["examples"]
    # the fix drops the train sources of the excess pairs, not every train sample that has a close test sample
    assert out.audit.fixes[0]["n_dropped"] < (d.kind == "near").sum()


def test_exact_copies_stay_exact_and_are_left_out_of_the_density_comparison() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(200, 4)).astype(np.float32)
    query = np.concatenate([ref[:5], rng.normal(size=(50, 4)).astype(np.float32)])
    hashes = [r.tobytes() for r in ref]
    exact = np.array([True] * 5 + [False] * 50)
    ne = near_excess(ref, query, hashes, exact, 0.05, 1000, rng)
    assert ne.n_query == 50 and ne.judged[:5].sum() == 0
    # copies inside the reference do not count as its density, and the null is drawn from the reference
    # samples without an exact copy there (a held-out sample is judged only when it has none in the
    # reference; under a random split the two are exchangeable): duplicate half the reference
    twice = np.concatenate([ref, ref[:100]])
    ne2 = near_excess(twice, query, [r.tobytes() for r in twice], exact, 0.05, 1000, rng)
    assert ne.n_null == 200 and ne2.n_null == 100


def test_the_excess_pairs_are_ranked_by_the_look_that_found_the_excess() -> None:
    """Query 0 is a copy (the smallest distance, but its source has a near twin: a middling ratio);
    query 1 is natural (farther, in a sparse region: a small ratio). One excess sample: distance look ->
    the copy; relative look -> the smallest ratio."""
    from closedloop.stages.audit.near_density import NearExcess

    def ne(cut: float | None) -> NearExcess:
        return NearExcess(
            threshold=0.125, ratio_cut=cut, n_query=10, n_close=3, n_null=100, n_null_close=20, p_value=0.001,
            dist=np.array([0.01, 0.08, 0.1, 0.5]), index=np.arange(4), ratio=np.array([0.6, 0.2, 0.9, np.inf]),
            judged=np.ones(4, bool),
        )  # fmt: skip

    assert ne(None).n_excess == 1 and ne(None).excess_queries(0.05).tolist() == [0]
    assert ne(0.7).excess_queries(0.05).tolist() == [1]
    assert ne(None).excess_queries(0.0001).tolist() == []  # not significant: nothing marked


def _split_leak(n_copies: int, seed: int = 0, n_test: int | None = None, val: bool = True) -> DatasetBundle:
    """Spread-out random images; val and test each get ``n_copies`` (test: ``n_test`` if given) noisy
    copies of train images: too few for either split's own look (two hypergeometric draws of 122 of 622),
    enough pooled."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, (740, 8, 8, 1)).astype(np.float64)
    parts = {"train": X[:500], "val": X[500:620] if val else X[:0], "test": X[620:740]}
    for name in ("val", "test"):
        n = n_copies if name == "val" or n_test is None else n_test
        src = rng.choice(500, n if len(parts[name]) else 0, replace=False)
        copies = X[src] + rng.normal(0, 3.0, X[src].shape)
        parts[name] = np.concatenate([parts[name], copies])
    splits = {
        k: Split(np.clip(v, 0, 255).round().astype(np.uint8), np.arange(len(v)) % 2) for k, v in parts.items()
    }
    meta = DatasetMeta(name="leak", source="synthetic", kind="images", label_names=["0", "1"])
    return DatasetBundle(meta=meta, splits=splits)


def test_val_and_test_pooled_show_a_split_excess_that_neither_shows_alone(tmp_path: Path) -> None:
    # three copies in each (two each until session 14: four pairs pooled were p 0.023 by Fisher's test,
    # 0.031 with the design effect of random re-deals - a pair is one unit of evidence, not two samples)
    _, out = run(_split_leak(3), tmp_path / "a", checks=["duplicates"])  # a warning: the run goes on
    nd = out.audit.results["duplicates"]["metrics"]["near_density"]
    assert nd["train-test"]["p_value"] >= 0.0125 and nd["train-val"]["p_value"] >= 0.0125  # each's share
    assert nd["train-held-out"]["p_value"] < 0.025 and nd["train-held-out"]["n_excess"] == 6
    f = next(f for f in out.audit.findings if f["message"].startswith("train/held-out"))
    assert f["severity"] == "warning" and "not made by source" in f["message"]
    assert f["evidence"]["warns_below"] == 0.025  # half of warn_alpha: the pooled look's share
    ev = f["evidence"]
    assert ev["held_out_close_rate"] > ev["train_within_rate"] and {e["split"] for e in ev["examples"]} == {
        "val",
        "test",
    }
    assert ev["per_split"]["val"]["excess_pairs"] == 3 and ev["per_split"]["test"]["excess_pairs"] == 3
    assert "(3 in val, 3 in test) are marked excess" in f["message"]
    # a split whose own look already warns is not repeated by the pooled look; pooled: false turns it off
    _, out = run(_split_leak(6), tmp_path / "b", checks=["duplicates"], stop_on=[])
    assert not [f for f in out.audit.findings if f["message"].startswith("train/held-out")]
    cfg = {"name": "duplicates", "params": {"pooled": False}}
    _, out = run(_split_leak(2), tmp_path / "c", checks=[cfg])
    assert "train-held-out" not in out.audit.results["duplicates"]["metrics"]["near_density"]


def test_copies_in_test_alone_warn_at_the_splits_share_of_the_level(tmp_path: Path) -> None:
    """Four copies in test only: diluted in the pool, found by test's own look at its quarter of
    warn_alpha (weighted Bonferroni), said once; the four planted pairs are the ones marked."""
    leak = _split_leak(0, n_test=4)
    _, out = run(leak, tmp_path / "a", checks=["duplicates"])
    nd = out.audit.results["duplicates"]["metrics"]["near_density"]
    assert 0.001 <= nd["train-test"]["p_value"] < 0.0125 < nd["train-held-out"]["p_value"]
    own = next(f for f in out.audit.findings if f["message"].startswith("train/test"))
    assert own["severity"] == "warning" and own["evidence"]["warns_below"] == 0.0125
    assert not any(f["message"].startswith("train/held-out") for f in out.audit.findings)
    d = out.audit.duplicates
    assert set(d[(d.split_b == "test") & d.excess].index_b) == {120, 121, 122, 123}  # the planted copies
    cfg = {"name": "duplicates", "params": {"pooled": False}}
    _, out = run(leak, tmp_path / "b", checks=[cfg])
    own = next(f for f in out.audit.findings if f["message"].startswith("train/test"))
    assert own["severity"] == "warning" and own["evidence"]["warns_below"] == 0.05


def test_without_val_the_held_out_look_is_test_alone(tmp_path: Path) -> None:
    """An empty validation split (a bundle the Python API may pass): test alone is the held-out look."""
    from closedloop.core.stage import RunContext
    from closedloop.stages.audit import AuditDataset
    from closedloop.stages.task import DefineTaskConfig, build_task_spec

    leak = _split_leak(0, n_test=4, val=False)
    task = build_task_spec(DefineTaskConfig(), _split_leak(0, n_test=4))
    ctx = RunContext(stage_name="audit", stage_dir=tmp_path, seed=0)
    out = AuditDataset(checks=["duplicates"]).execute({"data": leak, "task": task}, ctx)
    nd = out.audit.results["duplicates"]["metrics"]["near_density"]
    assert "train-val" not in nd and nd["train-held-out"]["p_value"] == nd["train-test"]["p_value"] < 0.05
    pooled = next(f for f in out.audit.findings if f["message"].startswith("train/held-out"))
    assert pooled["message"].startswith("train/held-out: 4 of 124 test samples")
    assert (
        list(pooled["evidence"]["per_split"]) == ["test"]
        and "test scores may be optimistic" in pooled["message"]
    )


def test_bad_pooled_value_names_the_field() -> None:
    from closedloop.core.errors import ConfigError
    from closedloop.stages.audit import AuditDataset

    with pytest.raises(ConfigError, match="pooled"):
        AuditDataset(checks=[{"name": "duplicates", "params": {"pooled": "both"}}])


def _discrete_table(n: int = 1500, planted: int = 0, seed: int = 0) -> DatasetBundle:
    """Four columns of 6 levels each (1,296 possible rows): about half the train rows repeat another by
    chance, and so do test rows; ``planted`` extra test rows are copies of train rows."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.integers(0, 6, (n, 4)).astype(float), columns=list("abcd"))
    y = (X.a + rng.normal(0, 1, n) > 2.5).astype(int).to_numpy()
    src = rng.choice(int(n * 0.6), planted, replace=False)
    return planted_bundle("discrete", X, y, src, X.iloc[src])[0]


def test_a_table_that_repeats_rows_by_itself_is_not_an_exact_overlap(tmp_path: Path) -> None:
    """Exact copies in a table of few discrete columns are judged against train's own repetition (nwtco:
    71% of test rows equal a train row, 69.5% of train rows another train row: it was an overlap error
    that stopped the run); planted copies beyond that rate are still an error; images are unchanged."""
    _, out = run(_discrete_table(), tmp_path / "a", checks=["duplicates"])  # must not stop
    f = next(
        f
        for f in out.audit.findings
        if f["message"].startswith("train/test") and "equal a train" in f["message"]
    )
    assert f["severity"] == "info" and "repeats rows by itself" in f["message"]
    ev = f["evidence"]
    assert ev["test_copy_rate"] > 0.3 and ev["train_repeat_rate"] > 0.3 and ev["p_value"] > 0.05
    d = out.audit.duplicates
    assert not d[(d.kind == "exact") & (d.split_a == "train") & (d.split_b != "train")].excess.any()
    assert out.audit.results["duplicates"]["metrics"]["overlap"]["train-test"] == 0
    with pytest.raises(DataError, match=r"train/test overlap: .* are exact copies \(vs .* repeats rows"):
        run(_discrete_table(planted=150), tmp_path / "b", checks=["duplicates"])


def _grid_table(n: int = 2500, planted: int = 0, seed: int = 0) -> tuple[DatasetBundle, set[int]]:
    """nwtco-like: three columns of 2-3 levels and an age in whole months, 3% missing (train repeats rows
    by itself; a row without a twin sits a month or more from its neighbour); ``planted`` extra test rows are
    train rows with their age moved by noise of sd 1% of its sd (off the grid, never an exact copy)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = pd.DataFrame({c: rng.integers(0, k, n).astype(float) for c, k in (("a", 2), ("b", 3), ("c", 3))})
    X["age"] = np.clip(rng.normal(40, 25, n), 0, 180).round()
    X.loc[rng.random(n) < 0.03, "age"] = np.nan  # imputed by the median: ties at 0 in the embedding
    y = (X.a + rng.normal(0, 1, n) > 0.5).astype(int).to_numpy()
    a = int(n * 0.6)
    src = rng.choice(np.flatnonzero(X.age.iloc[:a].notna()), planted, replace=False)
    copies = X.iloc[src].copy()
    copies["age"] += rng.normal(0, 0.01 * X.age.iloc[:a].std(), planted)
    return planted_bundle("grid", X, y, src, copies)


def planted_bundle(name: str, X, y: np.ndarray, src: np.ndarray, copies) -> tuple[DatasetBundle, set[int]]:  # type: ignore[no-untyped-def]
    """Train, val, test = X's rows in order at 60/20/20, with ``copies`` (of train rows ``src``, labels
    theirs) appended to test; returns the bundle and the copies' positions in test."""
    import pandas as pd

    n, planted = len(X), len(src)
    a, b = int(n * 0.6), int(n * 0.8)
    test_X = pd.concat([X.iloc[b:], copies]) if planted else X.iloc[b:]
    test_y = np.concatenate([y[b:], y[src]]) if planted else y[b:]
    meta = DatasetMeta(name=name, source="synthetic", kind="table", label_names=["0", "1"])
    splits = {
        "train": Split(X.iloc[:a].reset_index(drop=True), y[:a]),
        "val": Split(X.iloc[a:b].reset_index(drop=True), y[a:b]),
        "test": Split(test_X.reset_index(drop=True), test_y),
    }
    return DatasetBundle(meta=meta, splits=splits), set(range(n - b, n - b + planted))


def test_noisy_copies_in_a_table_that_repeats_rows_are_found_below_its_own_smallest_step(
    tmp_path: Path,
) -> None:
    """nwtco's planted copies had recall 0.000: natural rows sit on a grid (exact twins, or a step away),
    under max_distance nearly all rows are close. The non-zero look sets twins aside and counts rows
    closer than train's own 1% quantile of non-zero neighbour distances; off the look, they are missed."""
    from closedloop.core.blocks import KeyValues, Section

    clean, _ = _grid_table()
    stage, out = run(clean, tmp_path / "a", checks=["duplicates"])
    m = out.audit.results["duplicates"]["metrics"]
    assert m["nonzero_look"] is True and m["overlap"]["train-test"] == 0
    assert stage.summarize(out)["near_nonzero_look"] is True  # summary.json and the report say it applied
    sec = next(
        b for b in stage.report(out, tmp_path / "a") if isinstance(b, Section) and b.title == "duplicates"
    )
    assert any(isinstance(k, KeyValues) and k.items.get("nonzero_look") is True for k in sec.blocks)
    assert not [f for f in out.audit.findings if f["severity"] != "info" and "exact" not in f["message"]]
    leaked, truth = _grid_table(planted=25)
    with pytest.raises(DataError, match=r"train/test overlap: .*0 < embedding distance < .*non-zero"):
        run(leaked, tmp_path / "b", checks=["duplicates"])
    _, out = run(leaked, tmp_path / "c", checks=["duplicates"], stop_on=[])
    d = out.audit.duplicates
    flagged = set(d[(d.split_a == "train") & (d.split_b == "test") & d.excess].index_b)
    assert len(flagged & truth) >= 0.9 * len(truth) and len(flagged - truth) <= 2
    nd = out.audit.results["duplicates"]["metrics"]["near_density"]["train-test"]
    assert nd["nonzero_cut"] == pytest.approx(
        1 / np.nanstd(clean.train.X.age), abs=1e-4
    )  # one month, standardized
    off = {"name": "duplicates", "params": {"nonzero_look": False}}
    _, out = run(leaked, tmp_path / "d", checks=[off], stop_on=[])  # the two looks before: missed
    d = out.audit.duplicates
    flagged = set(d[(d.split_a == "train") & (d.split_b == "test") & d.excess].index_b)
    assert (
        len(flagged & truth) < 0.5 * len(truth)
        and out.audit.results["duplicates"]["metrics"]["nonzero_look"] is False
    )


def test_the_non_zero_look_sets_ties_at_zero_aside_and_is_off_unless_asked() -> None:
    """Rows equal in the embedding but not in content (a missing value imputed by the median) are ties
    at 0: they do not make the cut 0 (as they made the relative look's), and a query tie is not a copy."""
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 40, (300, 2)).astype(np.float32)
    ref[:20] = ref[20]  # 21 rows tied in the embedding, distinct contents
    hashes = [i.to_bytes(4, "little") for i in range(len(ref))]
    # free grid points a step right of a row, rounded a hair under the step (nwtco: 0.031578 vs 0.031580)
    taken = {tuple(r) for r in ref.tolist()}
    free = [(x, y) for x in range(1, 40) for y in range(40) if (x, y) not in taken and (x - 1, y) in taken]
    step = np.float32(free[:20]) - np.float32([0.00002, 0.0])
    query = np.concatenate([ref[:3], ref[100:110] + 0.01, step, rng.integers(0, 40, (60, 2))]).astype(
        np.float32
    )
    exact = np.zeros(len(query), bool)
    on = near_excess(ref, query, hashes, exact, 1.5, 1000, np.random.default_rng(0), nonzero_look=True)
    assert on.nonzero_cut == pytest.approx(1.0, rel=1e-3) and on.ratio_cut is None  # the grid step
    assert set(np.flatnonzero(on.close)) == set(range(3, 13)) and on.n_null_close == 0
    assert on.n_query == len(query) - int((on.dist == 0).sum())
    off = near_excess(ref, query, hashes, exact, 1.5, 1000, np.random.default_rng(0))
    assert off.nonzero_cut is None and off.p_value > on.p_value


def test_bad_nonzero_look_value_names_the_field() -> None:
    from closedloop.core.errors import ConfigError
    from closedloop.stages.audit import AuditDataset

    with pytest.raises(ConfigError, match="nonzero_look"):
        AuditDataset(checks=[{"name": "duplicates", "params": {"nonzero_look": "sometimes"}}])
