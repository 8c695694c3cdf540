"""Issue 19: which flags withhold the in-distribution windows of single unlucky deployments (diagnosis I21).

Development sets only (saved per-window sets of ``tune_monitor_test_windows``'s protocol and F19's, sessions
19-20; every training in them has been read by monitor runs). For each deployment whose in-distribution windows
are flagged above 10 % under main's shipped defaults (``bench_monitor_defaults.shipped``, replayed from the saved
numbers), it prints which evidence flags each of them (drift tests at their marginal level, the held-out domain
test, the sticky stream budget, the stream alarm, the look flag, low ESS), the smallest p-values, and what is
special about its 262 held-out rows, read from its own windows against the training's other deployments: the
deployment's own marginal drift threshold (from re-splits of its held-out rows), the median over its
in-distribution windows of drift min-p over that threshold, of the held-out domain p-value and, in sets saved
with ``train_reference_rows`` (rule T20), of the training-rows domain p-value (the same windows against 2,000
training rows, a reference no deployment's draw decides). A deployment whose windows look unlike its held-out
rows but like the training rows has an unlucky held-out draw, not an unlucky stream.

Run: PYTHONPATH=src .venv/bin/python benchmarks/diag_monitor_indist_i21.py /tmp/trainref20/dev/*.json ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

KINDS = ("drift", "domain", "stream", "alarm", "look", "ess")
"""The replayed evidences (``bench_monitor_defaults.margins_shipped``); ``stream`` is the sticky budget."""


def window_causes(st: dict[str, Any], i: int, cand: dict[str, Any], alpha: float, delta: float) -> list[str]:
    """The evidences that flag window ``i`` of stream ``st`` under ``cand`` (empty: not flagged)."""
    from bench_monitor_defaults import margins_shipped

    m = margins_shipped(st, i, cand, alpha, delta)
    return [k for k in KINDS if m.get(k, float("inf")) <= 1.0]


def dominant(causes: list[list[str]]) -> str:
    """The cause of a deployment's flagged windows: the evidence that flags most of them."""
    counts = {k: sum(k in c for c in causes) for k in KINDS}
    return max(counts, key=lambda k: counts[k])


def deployment_rows(streams: list[dict[str, Any]], cand: dict[str, Any], alpha: float, delta: float) -> dict:
    """Per deployment: its in-distribution windows' causes and the medians that describe its held-out draw."""
    out: dict[int, dict[str, Any]] = {}
    for st in streams:
        if st["kind"] != "null":
            continue
        row = out.setdefault(
            st["d"], {"causes": [], "drift": [], "domain": [], "train": [], "marginal": [], "looks": []}
        )
        row["looks"].append(min((p, k) for k, (_, p) in enumerate(st["looks"], start=1)))
        for i, w in enumerate(st["windows"]):
            row["causes"].append(window_causes(st, i, cand, alpha, delta))
            row["drift"].append(w["min_p"] / w["marginal"])
            row["domain"].append(w["domain_p"])
            row["marginal"].append(w["marginal"])
            if "train_p" in w:
                row["train"].append(w["train_p"])
    return out


def med(v: list[float]) -> float:
    return float(np.median(v)) if v else float("nan")


def diagnose_set(
    name: str, streams: list[dict[str, Any]], cand: dict, alpha: float, delta: float
) -> list[str]:
    """Print every deployment above 10 % and return their dominant causes."""
    from tune_monitor_test_windows import FLAG_TARGET

    rows = deployment_rows(streams, cand, alpha, delta)
    rate = {d: float(np.mean([bool(c) for c in r["causes"]])) for d, r in rows.items()}
    found = []
    for d, r in rows.items():
        if rate[d] <= FLAG_TARGET:
            continue
        others = [o for e, o in rows.items() if e != d]
        cause = dominant([c for c in r["causes"] if c])
        found.append(cause)
        counts = ", ".join(f"{k} {n}" for k in KINDS if (n := sum(k in c for c in r["causes"])) > 0)
        alone = ", ".join(f"{k} {n}" for k in KINDS if (n := sum(c == [k] for c in r["causes"])) > 0)
        flagged = [(i, c) for i, c in enumerate(r["causes"]) if c]
        per_window = " ".join(f"{i + 1}:{'+'.join(c)}" for i, c in flagged)
        looks = "; ".join(f"stream {o}: p {p:.2g} at look {k}" for o, (p, k) in enumerate(r["looks"]))
        train = (
            f"; training-rows domain p median {med(r['train']):.3f} (others {med([x for o in others for x in o['train']]):.3f})"
            if r["train"]
            else ""
        )
        print(
            f"[{name}] d{d}: {rate[d]:.0%} of {len(r['causes'])} in-distribution windows flagged; dominant "
            f"cause {cause}; windows flagged by (any) {counts}; by that flag alone {alone or 'none'}; smallest "
            f"look p {looks}"
        )
        print(f"    windows (stream 0: 1-10, stream 1: 11-20) {per_window}")
        print(
            f"    its held-out draw: marginal drift threshold {med(r['marginal']):.4f} (others' median "
            f"{med([x for o in others for x in o['marginal']]):.4f}); drift min-p over it, median "
            f"{med(r['drift']):.2f} (others {med([x for o in others for x in o['drift']]):.2f}); held-out "
            f"domain p median {med(r['domain']):.3f} (others {med([x for o in others for x in o['domain']]):.3f})"
            f"{train}"
        )
    return found


def heldout_draws(f: str, nets: str, rates: dict[int, float]) -> list[tuple[float, float, float, float]]:
    """The set's deployments rebuilt from its settings (the same draws, ``tune_monitor_stream_look
    .deployment_draws``): each one's 262 held-out rows against the 2,000 training rows' summary features (the
    training-rows test, a check a profile could run when it is built), and against the rest of the unseen pool,
    which no deployment has (its model scores: two-sample KS, and the mean positive score); one line each,
    beside its in-distribution windows flagged (``rates``). Returns (rate, p training rows, p KS, mean shift)."""
    from scipy.stats import ks_2samp
    from tune_monitor_stream_look import deployment_draws

    from closedloop.monitoring.train_reference import train_reference_check
    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    s = json.loads(Path(f).read_text())["settings"]
    args = argparse.Namespace(
        nets=nets, remove=s["remove"], half=s["half"], first_draw=s["first_draw"], pool=s["pool"],
        draws=len(rates), stop_at=None,
    )  # fmt: skip
    cfg = BuildMonitorProfileConfig(window_sizes=[200], train_reference_rows=2000)
    tr = deployment_draws(args, s["seed"], cfg)
    out = []
    for dr in tr.draws:
        if dr.d not in rates:
            continue
        held = dr.profile.domain
        chk = train_reference_check(
            dr.profile.train_features, held.features, np.random.default_rng([21, dr.d])
        )
        p_train = chk.p_value if chk is not None else float("nan")
        rest = dr.full.proba[dr.rest][:, -1]
        ks = float(ks_2samp(held.proba[:, -1], rest).pvalue)
        shift = float(held.proba[:, -1].mean() - rest.mean())
        out.append((rates[dr.d], p_train, ks, shift))
        print(
            f"  [t{s['seed']} d{dr.d}] in-distribution windows flagged {rates[dr.d]:.0%}; held-out rows against "
            f"the training rows p {p_train:.4f}; against the rest of the unseen pool: scores KS p {ks:.4f}, "
            f"mean score {shift:+.4f}",
            flush=True,
        )
    return out


def main() -> None:
    from bench_monitor_defaults import before_t21, shipped

    ap = argparse.ArgumentParser()
    ap.add_argument("saved", nargs="+", help="saved per-window sets")
    ap.add_argument(
        "--heldout",
        default=None,
        metavar="NETS",
        help="also rebuild each deployment from the trainings' workdirs in NETS and test its held-out draw",
    )
    args = ap.parse_args()
    cfg = before_t21()
    cand = shipped(cfg)
    alpha, delta = cfg.stream_alpha, cfg.stream_delta
    print(
        "diagnosis i21: in-distribution windows flagged above 10% in single deployments under main's shipped "
        f"defaults (replayed); which flag withholds them, and their held-out draw; {len(args.saved)} sets"
    )
    causes: list[str] = []
    held: list[tuple[float, float, float, float]] = []
    n_dep = 0
    for f in args.saved:
        data = json.loads(Path(f).read_text())
        s = data["settings"]
        name = f"t{s['seed']} {s['half']} {s['first_draw']}"
        n_dep += len({st["d"] for st in data["streams"]})
        causes += diagnose_set(name, data["streams"], cand, alpha, delta)
        if args.heldout:
            rows = deployment_rows(data["streams"], cand, alpha, delta)
            rates = {d: float(np.mean([bool(c) for c in r["causes"]])) for d, r in rows.items()}
            held += heldout_draws(f, args.heldout, rates)
    by = ", ".join(f"{k} {causes.count(k)}" for k in KINDS if causes.count(k))
    print(
        f"summary: {len(causes)} of {n_dep} deployments in {len(args.saved)} sets have more than 10% of their "
        f"in-distribution windows flagged; dominant cause: {by}"
    )

    if held:
        heldout_summary(held)


def heldout_summary(held: list[tuple[float, float, float, float]]) -> None:
    """The held-out draws of deployments above 10 % against the others: medians, and how many fall under 0.05."""
    from tune_monitor_test_windows import FLAG_TARGET

    for label, keep in (("above 10%", True), ("the others", False)):
        rows = [h for h in held if (h[0] > FLAG_TARGET) == keep]
        if not rows:
            continue
        p_tr, p_ks, sh = (np.array([h[i] for h in rows]) for i in (1, 2, 3))
        print(
            f"held-out draws of deployments {label} ({len(rows)}): against the training rows p median "
            f"{np.median(p_tr):.3f}, under 0.05 in {int((p_tr < 0.05).sum())}; against the rest of the unseen "
            f"pool scores KS p median {np.median(p_ks):.3f}, under 0.05 in {int((p_ks < 0.05).sum())}; mean score "
            f"shift median {np.median(sh):+.4f}, |shift| median {np.median(np.abs(sh)):.4f}"
        )


if __name__ == "__main__":
    main()
