"""Issue 19, session 18 (rule E18): the unflagged in-distribution windows within 0.03.

The label-free estimate is CBPE on probabilities recalibrated by a Platt map fitted on the deployment's ~262
held-out rows (``estimate_calibration: heldout_platt``). This script scores candidate replacements on the same
windows as the shipped default (docs/monitor_decisions.md, "The unflagged in-distribution windows (session 18, rule E18)"):

* maps: ``heldout_platt`` (shipped), ``temperature`` (one parameter: ``sigmoid(a logit p)``), ``platt_ridge``
  (Platt shrunk toward the identity map, a Gaussian prior of precision 5 on ``(a - 1, b)``);
* flags: ``precision_95`` / ``precision_90``: the shipped estimate, flagged "cannot promise +-0.03 at this window
  size" when ``z * sqrt(sd_window^2 + sd_map^2) > 0.03`` (z 1.96 / 1.645): ``sd_window`` the realized accuracy's
  own sampling s.d. if the recalibrated probabilities hold (``sqrt(sum c(1 - c)) / n``), ``sd_map`` the Platt
  map's own noise on the window's accuracy estimate (delta method, the map's Fisher information on the
  held-out rows).

Modes:

* ``--dev``: development trainings (``--train-seeds``, default 0-12), the guarantee protocol's other-half
  in-distribution windows (deployments ``--first-draw`` 700 .., 100 windows each; generator ``[19, d, 1]`` as
  ``bench_monitor_guarantee.py --production other``), no monitor: every candidate's error and flag on the same
  windows (the shipped flags are the same for every map, and are not computed here). With ``--saved FILE ...``
  (``tune_monitor_test_windows.py --save`` sets) also the saved windows with their saved flags: each window's
  shipped error is recomputed and must equal the saved one (the replay is checked), then in-distribution
  windows flagged and test windows unflagged and off per candidate. ``--diagnose`` prints the diagnosis.
* ``--report``: the report trainings (``--train-seeds 13 14``, deployments ``--first-draw 800``) with the real
  monitor: its flags on the other-half windows and on test-distribution streams (3 windows of 200 with the
  stream's status, 2 orders per deployment), every candidate on the same windows; ``--save DIR`` keeps each
  training's windows (resume).

Run: PYTHONPATH=src .venv/bin/python benchmarks/tune_monitor_estimate_map.py --dev --nets /tmp/nets --saved ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

TOLERANCE = 0.03
POOL = 262
WINDOW = 200
RULE = (
    "rule E18 (declared in docs/monitor_decisions.md before any run on trainings 13, 14): candidates heldout_platt (shipped), "
    "temperature, platt_ridge, precision_95, precision_90, scored on the same windows; 1. eligible when (a) on the "
    "development guarantee windows the candidate's own flags are <= 5% of in-distribution windows in EVERY "
    "development training, (b) on the saved development sets in-distribution windows flagged (saved flags or the "
    "candidate's) <= 10% in every set, and (c) summed over the saved sets no more test windows are unflagged and "
    "off by > 0.03 than under heldout_platt; 2. the development choice is the eligible candidate with the largest "
    "pooled share of unflagged in-distribution guarantee windows within 0.03 of realized AUC and ACC, if it beats "
    "heldout_platt by >= 0.5 point pooled and is no more than 1 point below it in any development training; "
    "otherwise heldout_platt; 3. reported once on trainings 13, 14 (deployments 800-819) beside heldout_platt on the "
    "same windows; the choice replaces the default only if there its in-distribution windows flagged stay <= 10% "
    "in each training, it leaves no more test windows unflagged and off, and its pooled share of unflagged "
    "in-distribution windows within 0.03 is higher than heldout_platt's; otherwise the default stays"
)
MAPS = ("heldout_platt", "temperature", "platt_ridge")
FLAGS = {"precision_95": 1.96, "precision_90": 1.645}
CANDIDATES = (*MAPS, *FLAGS)


def _logit(p: np.ndarray) -> np.ndarray:
    from closedloop.monitoring.recalibrate import _logit as logit

    return logit(p)


def fit_map(name: str, p1: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(slope, intercept)`` of candidate map ``name`` fitted on held-out positive-class probabilities."""
    from scipy.optimize import minimize

    from closedloop.monitoring.recalibrate import fit_platt

    if name == "heldout_platt":  # the shipped fit itself
        pl = fit_platt(np.stack([1 - p1, p1], axis=1), y)
        return (1.0, 0.0) if pl is None else (pl.slope, pl.intercept)
    x, lam = _logit(p1), 5.0

    def nll(a: float, b: float) -> float:
        z = a * x + b
        return float(np.sum(np.logaddexp(0, z) - y * z))

    if name == "temperature":
        r = minimize(lambda v: nll(v[0], 0.0), [1.0])
        return float(r.x[0]), 0.0
    if name == "platt_ridge":  # shrunk toward the identity map (a, b) = (1, 0)
        r = minimize(lambda v: nll(v[0], v[1]) + 0.5 * lam * ((v[0] - 1) ** 2 + v[1] ** 2), [1.0, 0.0])
        return float(r.x[0]), float(r.x[1])
    raise ValueError(f"unknown map {name!r}")


def positive(m: tuple[float, float], p1: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(m[0] * _logit(p1) + m[1])))


class Deployment:
    """One deployment's maps (fitted on its held-out rows) and the Platt map's covariance (delta method)."""

    def __init__(self, p_pool: np.ndarray, y_pool: np.ndarray, threshold: float) -> None:
        self.threshold = threshold
        self.maps = {n: fit_map(n, p_pool[:, 1], y_pool) for n in MAPS}
        a, b = self.maps["heldout_platt"]
        x = _logit(p_pool[:, 1])
        p = 1.0 / (1.0 + np.exp(-(a * x + b)))
        w = p * (1 - p)
        info = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]])
        self.cov = np.linalg.pinv(info)
        self.n_errors = int(np.sum((p_pool[:, 1] >= threshold).astype(int) != y_pool))

    def window(self, proba: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        """Every candidate's |error| (AUC, ACC) on one window, the shipped estimate's s.d. parts, its flags."""
        from closedloop.monitoring.estimate import expected_auc_binary, realized

        real = realized(["auc", "acc"], y, proba, "binary", self.threshold)
        pred = proba[:, 1] >= self.threshold  # the deployed decisions (every map is increasing: the same)
        out: dict[str, Any] = {"real_acc": real["acc"], "real_auc": real["auc"]}
        for name, m in self.maps.items():
            p = positive(m, proba[:, 1])
            acc = float(np.mean(np.where(pred, p, 1 - p)))
            out[name] = {"auc": abs(expected_auc_binary(p) - real["auc"]), "acc": abs(acc - real["acc"])}
            if name == "heldout_platt":
                c = np.where(pred, p, 1 - p)
                x = _logit(proba[:, 1])
                sign = np.where(pred, 1.0, -1.0)
                g = np.array([np.mean(sign * p * (1 - p) * x), np.mean(sign * p * (1 - p))])
                out["sd_window"] = float(np.sqrt(np.sum(c * (1 - c))) / len(c))
                out["sd_map"] = float(np.sqrt(max(g @ self.cov @ g, 0.0)))
                out["acc_signed"] = acc - real["acc"]
        total = float(np.hypot(out["sd_window"], out["sd_map"]))
        for name, z in FLAGS.items():
            out[name] = {**out["heldout_platt"], "flag": bool(z * total > TOLERANCE)}
        return out


def off(w: dict[str, Any], cand: str) -> bool:
    return max(w[cand]["auc"], w[cand]["acc"]) > TOLERANCE


def own_flag(w: dict[str, Any], cand: str) -> bool:
    return bool(w[cand].get("flag", False))


# -- development ------------------------------------------------------------------------------------------
def load_training(nets: Path, seed: int, remove: int) -> dict[str, Any]:
    """The model's outputs on the unseen rows and both test halves, and the profile's threshold (once per
    training: the outputs do not depend on the draw)."""
    import dataclasses

    from bench_monitor_guarantee import deployment, test_halves

    from closedloop.data.bundle import Split
    from closedloop.monitoring.profile import forward_all, model_input
    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig, build_profile

    run, data, task, model, Xu, yu = deployment(nets / f"t{seed}", remove, seed)
    bundle = dataclasses.replace(data, splits={**data.splits, "val": Split(X=Xu[:POOL], y=yu[:POOL])})
    cfg = BuildMonitorProfileConfig(window_sizes=[WINDOW])
    info = build_profile(cfg, bundle, task, model, np.random.default_rng([7, 0])).info
    _, pu = forward_all(model, model_input(info, Xu))
    out = {"seed": seed, "run": run.name, "threshold": float(info.threshold), "pu": pu, "yu": yu.astype(int)}
    for h, (Xt, yt) in test_halves().items():
        _, out[f"pt_{h}"] = forward_all(model, model_input(info, Xt))
        out[f"yt_{h}"] = yt.astype(int)
    return out


def guarantee_windows(
    tr: dict[str, Any],
    first: int,
    draws: int,
    windows: int,
    pool_size: int = POOL,
    make: Callable[..., Deployment] = Deployment,
) -> list[dict[str, Any]]:
    """The guarantee protocol's other-half windows (``--pool-half report --production other``), flag-free;
    ``pool_size`` held-out rows per deployment (more than 262: a diagnosis of what more rows would give);
    ``make(p_pool, y_pool, threshold)`` builds each deployment's maps (rule E19 adds candidates)."""
    from tune_monitor_last_window import pool_halves

    pu, yu = tr["pu"], tr["yu"]
    halves = pool_halves(len(yu))
    rows = []
    for d in range(first, first + draws):
        rng = np.random.default_rng([19, d])
        pool = np.sort(rng.permutation(halves["report"])[:pool_size])
        dep = make(pu[pool], yu[pool], tr["threshold"])
        og = np.random.default_rng([19, d, 1])
        for _ in range(windows):
            idx = og.choice(halves["dev"], WINDOW, replace=False)
            rows.append({"t": tr["seed"], "d": d, "n_errors": dep.n_errors, **dep.window(pu[idx], yu[idx])})
    return rows


def saved_windows(
    tr: dict[str, Any], saved: dict[str, Any], make: Callable[..., Deployment] = Deployment
) -> list[dict[str, Any]]:
    """A saved set's windows replayed (``tune_monitor_test_windows.one_training``'s draws), each shipped error
    checked against the saved one, flagged as the shipped rule W17 flags the saved evidence."""
    from tune_monitor_evidence_budget import CANDIDATES as CANDIDATES_W17
    from tune_monitor_test_windows import margins

    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    cfg = BuildMonitorProfileConfig(window_sizes=[WINDOW])
    alpha, delta = cfg.stream_alpha, cfg.stream_delta
    s = saved["settings"]
    pu, yu = tr["pu"], tr["yu"]
    pt, yt = tr[f"pt_{s['half']}"], tr[f"yt_{s['half']}"]
    rows = []
    for d in sorted({st["d"] for st in saved["streams"]}):
        perm = np.random.default_rng([19, d]).permutation(len(yu))
        pool, rest = np.sort(perm[: s["pool"]]), perm[s["pool"] :]
        dep = make(pu[pool], yu[pool], tr["threshold"])
        srng = np.random.default_rng([19, d, 2])
        for st in [x for x in saved["streams"] if x["d"] == d]:
            if st["kind"] == "null":
                idx = srng.choice(rest, 2000, replace=False)
                P, Y = pu[idx], yu[idx]
            else:
                idx = np.concatenate([srng.choice(len(yt), WINDOW, replace=False) for _ in range(3)])
                P, Y = pt[idx], yt[idx]
            for k, w in enumerate(st["windows"]):
                sl = slice(WINDOW * k, WINDOW * (k + 1))
                row = dep.window(P[sl], Y[sl])
                err = max(row["heldout_platt"]["auc"], row["heldout_platt"]["acc"])
                if abs(err - w["err"]) > 1e-6:
                    raise SystemExit(
                        f"replay mismatch: t{tr['seed']} d{d} {st['kind']} window {k}: {err} vs {w['err']}"
                    )
                kind = "in" if st["kind"] == "null" else "test"
                # the shipped flag (rule W17) from the saved evidence, as tune_monitor_evidence_budget scores it
                flag = (
                    min(margins(st, k, CANDIDATES_W17["first_0.05+evidence_0.25"], alpha, delta).values())
                    <= 1.0
                )
                rows.append({"t": tr["seed"], "d": d, "kind": kind, "saved_flag": bool(flag), **row})
    return rows


def share_within(
    rows: list[dict[str, Any]], cand: str, flagged_key: str | None = None
) -> tuple[float, int, int]:
    """Share of unflagged windows within 0.03 (and the counts) under ``cand``."""
    kept = [w for w in rows if not own_flag(w, cand) and not (flagged_key and w[flagged_key])]
    bad = sum(off(w, cand) for w in kept)
    return (1 - bad / len(kept)) if kept else float("nan"), bad, len(kept)


def diagnose(rows: list[dict[str, Any]]) -> None:
    """Of the windows off by > 0.03 under the shipped estimate: which metric, by how much, what separates them."""
    offw = [w for w in rows if off(w, "heldout_platt")]
    if not offw:
        print(f"  [diagnosis] shipped estimate off by > {TOLERANCE} on 0 of {len(rows)} windows")
        return
    acc_only = sum(w["heldout_platt"]["acc"] > TOLERANCE >= w["heldout_platt"]["auc"] for w in offw)
    auc_only = sum(w["heldout_platt"]["auc"] > TOLERANCE >= w["heldout_platt"]["acc"] for w in offw)
    print(
        f"  [diagnosis] shipped estimate off by > {TOLERANCE} on {len(offw)} of {len(rows)} windows: ACC only "
        f"{acc_only}, AUC only {auc_only}, both {len(offw) - acc_only - auc_only}; over-estimates of ACC "
        f"{sum(w['acc_signed'] > 0 for w in offw)}, under-estimates {sum(w['acc_signed'] < 0 for w in offw)}; "
        f"|ACC err| median {np.median([w['heldout_platt']['acc'] for w in offw]):.3f}, max "
        f"{max(w['heldout_platt']['acc'] for w in offw):.3f}"
    )
    for key, label in (
        ("sd_window", "the window's own sampling s.d. of realized ACC"),
        ("sd_map", "the Platt map's own s.d. on the ACC estimate (delta method)"),
        ("real_acc", "realized ACC"),
        ("n_errors", "the deployment's held-out rows the model gets wrong"),
    ):
        if any(key not in w for w in rows):  # the report's windows do not keep the held-out errors
            continue
        a = [w[key] for w in offw]
        b = [w[key] for w in rows if not off(w, "heldout_platt")]
        print(f"  [diagnosis] {label}: off windows mean {np.mean(a):.4f}, the others {np.mean(b):.4f}")
    # the deployment's bias (the map's noise) against the window's noise
    by_dep: dict[tuple[int, int], list[float]] = {}
    for w in rows:
        by_dep.setdefault((w["t"], w["d"]), []).append(w["acc_signed"])
    dep_bias = {k: float(np.mean(v)) for k, v in by_dep.items()}
    by_t: dict[int, list[float]] = {}
    for (t, _), b in dep_bias.items():
        by_t.setdefault(t, []).append(b)
    within_dep = [w["acc_signed"] - dep_bias[(w["t"], w["d"])] for w in rows]
    print(
        f"  [diagnosis] ACC error = the deployment's bias (its map; s.d. over deployments within a training "
        f"{np.mean([np.std(v, ddof=1) for v in by_t.values()]):.4f}; per-training means "
        + ", ".join(f"t{t} {np.mean(v):+.4f}" for t, v in sorted(by_t.items()))
        + f") + the window's noise (s.d. {np.std(within_dep):.4f}; predicted {np.mean([w['sd_window'] for w in rows]):.4f}); "
        f"delta-method s.d. of the map {np.mean([w['sd_map'] for w in rows]):.4f}"
    )
    from scipy.stats import norm

    floor = np.mean([2 * norm.cdf(TOLERANCE / w["sd_window"]) - 1 for w in rows])
    both = np.mean([2 * norm.cdf(TOLERANCE / np.hypot(w["sd_window"], w["sd_map"])) - 1 for w in rows])
    print(
        f"  [diagnosis] normal approximation: ACC within {TOLERANCE} with an exact map {floor:.1%} (the noise floor), "
        f"with the map's own noise added {both:.1%}; measured (ACC and AUC) {share_within(rows, 'heldout_platt')[0]:.1%}"
    )


def print_dev(rows: list[dict[str, Any]], saved: list[dict[str, Any]]) -> dict[str, Any]:
    seeds = sorted({w["t"] for w in rows})
    res: dict[str, Any] = {}
    for cand in CANDIDATES:
        per_t = {t: share_within([w for w in rows if w["t"] == t], cand)[0] for t in seeds}
        own = {t: float(np.mean([own_flag(w, cand) for w in rows if w["t"] == t])) for t in seeds}
        pooled, bad, kept = share_within(rows, cand)
        r = res[cand] = {"pooled": pooled, "per_t": per_t, "own_max": max(own.values())}
        line = (
            f"[{cand}] guarantee windows: unflagged within {TOLERANCE} {pooled:.2%} ({bad} of {kept} off); per training "
            + ", ".join(f"t{t} {v:.1%}" for t, v in per_t.items())
            + f"; own flags {np.mean([own_flag(w, cand) for w in rows]):.1%} (max per training {r['own_max']:.1%})"
        )
        if saved:
            sets = sorted({(w["t"], w.get("set", "")) for w in saved})
            fl_max = max(
                float(
                    np.mean(
                        [
                            w["saved_flag"] or own_flag(w, cand)
                            for w in saved
                            if (w["t"], w.get("set", "")) == s and w["kind"] == "in"
                        ]
                    )
                )
                for s in sets
            )
            test_off = sum(
                1
                for w in saved
                if w["kind"] == "test" and not w["saved_flag"] and not own_flag(w, cand) and off(w, cand)
            )
            ins = [w for w in saved if w["kind"] == "in"]
            r |= {"saved_in_flag_max": fl_max, "saved_test_off": test_off}
            line += (
                f"; saved sets ({len(sets)}): in-distribution flagged max per set {fl_max:.1%}, unflagged within "
                f"{share_within(ins, cand, 'saved_flag')[0]:.1%} of {len(ins)}; test windows unflagged and off "
                f"{test_off} of {sum(w['kind'] == 'test' for w in saved)}"
            )
        print(line, flush=True)
    return res


def decide(res: dict[str, Any]) -> str:
    base = res["heldout_platt"]
    eligible = []
    for cand, r in res.items():
        ok = r["own_max"] <= 0.05 and r.get("saved_in_flag_max", 0.0) <= 0.10
        ok = ok and r.get("saved_test_off", 0) <= base.get("saved_test_off", 0)
        print(
            f"  {cand}: eligible {ok} (own flags max {r['own_max']:.1%} <= 5%, saved in-distribution flagged max "
            f"{r.get('saved_in_flag_max', float('nan')):.1%} <= 10%, test off {r.get('saved_test_off', '-')} <= "
            f"{base.get('saved_test_off', '-')}); pooled {r['pooled']:.2%} vs heldout_platt {base['pooled']:.2%}; "
            f"worst training gap {min(r['per_t'][t] - base['per_t'][t] for t in r['per_t']):+.1%}"
        )
        if ok and cand != "heldout_platt":
            eligible.append(cand)
    best = max(eligible, key=lambda c: res[c]["pooled"], default=None)
    if best is not None:
        r = res[best]
        if (
            r["pooled"] - base["pooled"] >= 0.005
            and min(r["per_t"][t] - base["per_t"][t] for t in r["per_t"]) >= -0.01
        ):
            return best
    return "heldout_platt"


def scored(
    dep: Deployment,
    r: dict[str, Any],
    proba: np.ndarray,
    y: np.ndarray,
    seed: int,
    d: int,
    kind: str,
    **extra: Any,
) -> dict[str, Any]:
    """One window the monitor evaluated: every candidate on it, with the monitor's flags; the monitor's own
    estimate must be heldout_platt's (checked)."""
    row = dep.window(proba, y.astype(int))
    est = r["estimated"] or r["estimate_withheld"]
    shipped = max(abs(est["auc"] - row["real_auc"]), abs(est["acc"] - row["real_acc"]))
    if abs(shipped - max(row["heldout_platt"]["auc"], row["heldout_platt"]["acc"])) > 1e-6:
        raise SystemExit(f"t{seed} d{d}: the monitor's estimate differs from heldout_platt's ({shipped})")
    flags = {"saved_flag": not r["estimate_reliable"], "flags": list(r["estimate_flags"])}
    # each flag's evidence (a test window left unflagged and off: how far from its level)
    dom = r.get("domain") or {}
    flags["evidence"] = {
        "min_p": float(r["min_p"]),
        "drift_level": float(r["thresholds"].get("alarm_marginal", r["thresholds"]["alarm"])),
        "domain_p": float(dom.get("p_value", 1.0)),
        "ess_fraction": float(dom.get("ess_fraction", 1.0)),
    }
    return {"t": seed, "d": d, "kind": kind, **flags, **extra, **row}


# -- report -----------------------------------------------------------------------------------------------
def report_training(
    args: argparse.Namespace, seed: int, make: Callable[..., Deployment] = Deployment
) -> list[dict[str, Any]]:
    """The real monitor on fresh deployments: its flags on other-half windows and test streams
    (``make(p_pool, y_pool, threshold)``: each deployment's candidate maps)."""
    from bench_monitor_guarantee import deployment, draw_deployment, test_halves
    from tune_monitor_last_window import pool_halves
    from tune_monitor_stream_look import model_outputs, stop_time

    from closedloop.monitoring.drift import Sample
    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    save = Path(args.save) / f"t{seed}_{args.first_draw}.json" if args.save else None
    rows: list[dict[str, Any]] = json.loads(save.read_text()) if save is not None and save.is_file() else []
    done = {w["d"] for w in rows}
    t0 = time.time()
    run, data, task, model, Xu, yu = deployment(Path(args.nets) / f"t{seed}", args.remove, seed)
    cfg = BuildMonitorProfileConfig(window_sizes=[WINDOW])
    halves = pool_halves(len(yu))
    Xt, yt = test_halves()["report"]
    stop = stop_time(args.stop_at)
    cache = None
    for d in range(args.first_draw, args.first_draw + args.draws):
        if d in done:
            continue
        if stop is not None and time.time() >= stop:
            print(f"  t{seed}: stopped by --stop-at {args.stop_at} UTC before draw {d}", flush=True)
            break
        rng = np.random.default_rng([19, d])
        pool, _, profile, mon = draw_deployment(
            data, task, model, cfg, (Xu, yu), halves["report"], rng, POOL, d
        )
        info = profile.info
        if cache is None:
            cache = model_outputs(info, model, Xu, Xt)
        fu, (eu, pu), ft, (et, pt) = cache
        full = Sample(features=fu, embeddings=profile.reduce(eu), proba=pu)
        tsample = Sample(features=ft, embeddings=profile.reduce(et), proba=pt)
        dep = make(pu[pool], yu[pool].astype(int), info.threshold)

        og = np.random.default_rng([19, d, 1])
        for w in range(args.windows):
            idx = og.choice(halves["dev"], WINDOW, replace=False)
            r = mon.evaluate(full.take(idx), seed=[d, 10_000 + w])
            rows.append(scored(dep, r, pu[idx], yu[idx], seed, d, "in"))
        trng = np.random.default_rng([19, d, 3])
        for o in range(args.orders):
            sr = mon.stream_test()
            for k in range(3):
                widx = trng.choice(len(yt), WINDOW, replace=False)
                status = mon.stream_update(sr, tsample.take(widx))
                r = mon.evaluate(tsample.take(widx), seed=[d, 500 + 3 * o + k], stream=status)
                look = {"stream_p": status.get("p_value"), "stream_looks": status.get("looks", 0)}
                rows.append(scored(dep, r, pt[widx], yt[widx], seed, d, "test", order=o, pos=k, **look))
        if save is not None:
            save.parent.mkdir(parents=True, exist_ok=True)
            save.write_text(json.dumps(rows))
        print(f"  t{seed} draw {d}: done; {time.time() - t0:.0f} s", flush=True)
    return rows


def print_report(rows: list[dict[str, Any]], pick: str | None) -> None:
    seeds = sorted({w["t"] for w in rows})
    for t in seeds:
        ins = [w for w in rows if w["t"] == t and w["kind"] == "in"]
        print(
            f"  t{t}: {len({w['d'] for w in ins})} deployments finished ({min(w['d'] for w in ins)}-"
            f"{max(w['d'] for w in ins)}), {len(ins)} in-distribution and "
            f"{sum(w['t'] == t and w['kind'] == 'test' for w in rows)} test windows"
        )
        print(f"  [diagnosis, training {t}, the monitor's unflagged in-distribution windows]")
        diagnose([w for w in ins if not w["saved_flag"]])
    for cand in CANDIDATES:
        parts = []
        for t in seeds:
            ins = [w for w in rows if w["t"] == t and w["kind"] == "in"]
            fl = np.mean([w["saved_flag"] or own_flag(w, cand) for w in ins])
            sh, bad, kept = share_within(ins, cand, "saved_flag")
            parts.append(
                f"t{t}: flagged {fl:.1%}, unflagged within {TOLERANCE} {sh:.2%} ({bad} of {kept} off)"
            )
        ins = [w for w in rows if w["kind"] == "in"]
        sh, bad, kept = share_within(ins, cand, "saved_flag")
        tests = [w for w in rows if w["kind"] == "test"]
        toff = sum(1 for w in tests if not w["saved_flag"] and not own_flag(w, cand) and off(w, cand))
        print(
            f"[{cand}] in-distribution {'; '.join(parts)}; pooled {sh:.2%} ({bad} of {kept}); test windows unflagged "
            f"and off by > {TOLERANCE}: {toff} of {len(tests)}",
            flush=True,
        )
    if pick is None or pick == "heldout_platt":
        print(
            f"development choice {pick}: nothing replaces the default (rule E18, clause 3); it stays heldout_platt"
        )
        return
    ins, tests = [w for w in rows if w["kind"] == "in"], [w for w in rows if w["kind"] == "test"]
    fl_ok = all(
        np.mean([w["saved_flag"] or own_flag(w, pick) for w in ins if w["t"] == t]) <= 0.10 for t in seeds
    )
    toff = {
        c: sum(1 for w in tests if not w["saved_flag"] and not own_flag(w, c) and off(w, c))
        for c in (pick, "heldout_platt")
    }
    better = share_within(ins, pick, "saved_flag")[0] > share_within(ins, "heldout_platt", "saved_flag")[0]
    adopt = fl_ok and toff[pick] <= toff["heldout_platt"] and better
    print(
        f"development choice {pick}: flagged <= 10% per training {fl_ok}; test off {toff}; higher share {better} -> "
        + ("it replaces the default" if adopt else "the default stays heldout_platt")
    )


def estimate_arguments(ap: argparse.ArgumentParser) -> None:
    """The arguments every estimate-map script shares: the trainings, the mode, the saved development sets and
    the report protocol (deployments, windows, test streams, where each training's windows are kept)."""
    ap.add_argument(
        "--nets", required=True, help="folder of the trainings' workdirs t<seed> (outside the repo)"
    )
    ap.add_argument("--remove", type=int, default=2500)
    ap.add_argument("--train-seeds", type=int, nargs="+")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dev", action="store_true")
    mode.add_argument("--report", action="store_true")
    ap.add_argument(
        "--saved", nargs="*", default=[], help="tune_monitor_test_windows.py --save sets (development)"
    )
    ap.add_argument("--first-draw", type=int)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument(
        "--windows", type=int, default=100, help="other-half in-distribution windows per deployment"
    )
    ap.add_argument("--orders", type=int, default=2, help="test-distribution streams per deployment (report)")
    ap.add_argument("--save", help="report: folder for each training's windows (resume)")
    ap.add_argument("--stop-at", help="HH:MM UTC: report: start no deployment after it")


def main() -> None:
    ap = argparse.ArgumentParser()
    estimate_arguments(ap)
    ap.add_argument("--diagnose", action="store_true")
    ap.add_argument(
        "--pool-sizes",
        type=int,
        nargs="*",
        default=[],
        help="dev diagnosis: the shipped estimate with its map fitted on this many held-out rows (not a candidate)",
    )
    ap.add_argument(
        "--pick", default=None, help="report: the development choice (printed beside the default)"
    )
    args = ap.parse_args()
    print(RULE, flush=True)
    if args.dev:
        seeds = args.train_seeds if args.train_seeds is not None else list(range(13))
        if set(seeds) & {13, 14}:
            ap.error("--dev: trainings 13 and 14 are the report set (rule E18)")
        first = 700 if args.first_draw is None else args.first_draw
        print(
            f"== development: trainings {seeds}, deployments {first}-{first + args.draws - 1}, {args.windows} other-half "
            f"windows of {WINDOW} each (flag-free); saved sets {len(args.saved)}; tolerance {TOLERANCE} =="
        )
        nets = Path(args.nets)
        trainings = {s: load_training(nets, s, args.remove) for s in seeds}
        if args.pool_sizes:  # what more held-out rows would give (the deployment does not have them)
            for n in args.pool_sizes:
                got = [
                    w
                    for s in seeds
                    for w in guarantee_windows(trainings[s], first, args.draws, args.windows, n)
                ]
                per_t = {t: share_within([w for w in got if w["t"] == t], "heldout_platt")[0] for t in seeds}
                sh, bad, kept = share_within(got, "heldout_platt")
                print(
                    f"[pool {n}] heldout_platt fitted on {n} held-out rows: within {TOLERANCE} {sh:.2%} ({bad} of "
                    f"{kept} off); delta-method s.d. of the map {np.mean([w['sd_map'] for w in got]):.4f}; lowest "
                    f"training {min(per_t.values()):.1%}",
                    flush=True,
                )
            return
        rows = [w for s in seeds for w in guarantee_windows(trainings[s], first, args.draws, args.windows)]
        saved: list[dict[str, Any]] = []
        for f in args.saved:
            z = json.loads(Path(f).read_text())
            s = z["settings"]["seed"]
            if s not in trainings:
                trainings[s] = load_training(nets, s, args.remove)
            got = saved_windows(trainings[s], z)
            for w in got:
                w["set"] = f
            print(
                f"  saved set {f} (t{s}): {len(got)} windows replayed, every shipped error reproduced",
                flush=True,
            )
            saved += got
        if args.diagnose:
            diagnose(rows)
            for t in seeds if len(seeds) > 1 else []:
                print(f"  [diagnosis, training {t}]")
                diagnose([w for w in rows if w["t"] == t])
        res = print_dev(rows, saved)
        print(f"development choice by rule E18: {decide(res)}")
    else:
        seeds = args.train_seeds or [13, 14]
        first = 800 if args.first_draw is None else args.first_draw
        print(
            f"== report: trainings {seeds}, deployments {first}-{first + args.draws - 1}, {args.windows} other-half "
            f"windows and {args.orders} test streams of 3 windows each, the real monitor's flags; development choice "
            f"{args.pick} =="
        )
        args.first_draw = first
        rows = [w for s in seeds for w in report_training(args, s)]
        print_report(rows, args.pick)


if __name__ == "__main__":
    main()
