"""Issue 19: a monitor one deployment can trust. Per-deployment false alarms, detection, the stream test.

The model: configs/pneumoniamnist.yaml (train preset quick) run on a copy of PneumoniaMNIST with
``--remove`` random train images taken out first (as benchmarks/bench_heldout_monitor.py does); those
images are unseen, in-distribution production data. ``--workdir`` keeps the copy and the run, so the
model is trained once.

Each **draw** plays one deployment: ``--pool`` of the unseen images (the size of the real held-out
split) are its held-out rows (the monitor stage builds the profile from them exactly as from the
train stage's calibration split: reference half, re-split calibration), the other unseen images are
its in-distribution production. The model stays the same across draws.

1. Per-deployment false alarms: each draw's alarm rate over ``--windows`` windows of 200 from its
   production, for the new rule (threshold at alpha*delta: per-deployment guarantee) and the old one
   (threshold at alpha: marginal), on the same windows. Target: <= 5% in >= 90% of draws.
   ``--production other`` / ``both`` (with ``--pool-half``): the windows come from the pool's other half,
   an independent sample of the population, instead of (or beside) the rest of the held-out rows' half,
   whose rows are the complement of the held-out draw (docs/monitor_decisions.md, session 16).
2. Detection of benchmarks/bench_monitor.py's moderate shifts at window 200, both rules (target >= 90%).
3. The stream test: an unseen in-distribution stream of 2,000 images per draw (target: alarm in <= 5% of
   runs); the PneumoniaMNIST **test** distribution streamed as production (target: alarm within 600
   rows in >= 90% of stream orders). Protocol (docs/monitor_decisions.md): the test images are split by a fixed
   seed (19) into a development half (``--half dev``: tuning) and a report half (``--half report``:
   measured once, quoted). A stream of 600 rows is three windows of 200 drawn from the half (it has
   312; no repeats inside a window); the whole half in a random order (312 rows) is reported beside it,
   read live (one look, at row 200) and read as a file (a last look at its end, row 312).
4. The label-free estimate, window by window inside those streams (the stream's alarm withholds it too):
   withheld with a reason, or within 0.03 of realized AUC and ACC? In-distribution: section 1's windows
   (on their own) and the first 2,000-row stream of each draw (10 windows, with the stream's status);
   test distribution: the windows of the 600-row streams. The domain flag's p-value is the mean-shift
   permutation test (session 10); the cross-fitted classifier's p-value (the flag before) is scored on the
   same windows beside it, so both rules are compared in one run.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_monitor_guarantee.py --workdir /tmp/mon19/r2500 --half report
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
SPLIT_SEED = 19
"""Fixed seed of the test split's development / report halves (declared in docs/monitor_decisions.md)."""


def npz_path() -> Path:
    for cand in (ROOT / ".." / "shared", ROOT / ".." / ".." / "shared"):
        p = (cand / "data" / "medmnist" / "pneumoniamnist.npz").resolve()
        if p.is_file():
            return p
    raise SystemExit("pneumoniamnist.npz not found under ../shared/data/medmnist")


def trained_run(workdir: Path, remove: int, seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    """The run directory and the removed (unseen) images and labels; trains once per workdir.

    ``seed`` is one training: it draws the removed images and is the pipeline's seed (0: the
    earlier sessions' single training). A workdir trained with another seed is refused."""
    from bench_heldout_monitor import run_pipeline, write_reduced_npz

    runs = sorted((workdir / "runs").glob("*/*/summary.json"))
    if runs and (workdir / "unseen.npz").is_file():
        z = np.load(workdir / "unseen.npz")
        had = int(z["seed"]) if "seed" in z else 0
        if had != seed:
            raise SystemExit(f"{workdir} was trained with seed {had}, not {seed}: use another --workdir")
        return runs[-1].parent, z["X"], z["y"]
    X, y = write_reduced_npz(npz_path(), workdir / "data", remove, seed)
    np.savez_compressed(workdir / "unseen.npz", X=X, y=y, seed=seed)
    res = run_pipeline(workdir / "data", workdir / "runs", "quick", {"budget_minutes": 30}, False, seed=seed)
    return Path(res.run_dir), X, y


def deployment(workdir: Path, remove: int, seed: int = 0):
    """The trained run, its data, task and model (its held-out record dropped: each draw's held-out rows
    are given as the validation split) and the removed (unseen) images and labels."""
    from closedloop.data.bundle import DatasetBundle
    from closedloop.models.trained import TrainedModel
    from closedloop.stages.task import TaskSpec
    from closedloop.stages.train.heldout import INFO_KEY

    run, Xu, yu = trained_run(workdir, remove, seed)
    data = DatasetBundle.load(next(run.glob("stages/*_data/artifacts/data")))
    task = TaskSpec.load(next(run.glob("stages/*_task/artifacts/task")))
    model = TrainedModel.load(next(run.glob("stages/*_train/artifacts/model")))
    model.info = {k: v for k, v in model.info.items() if k != INFO_KEY} | {"trained_on": "train"}
    return run, data, task, model, Xu, yu


def draw_deployment(
    data: Any,
    task: Any,
    model: Any,
    cfg: Any,
    unseen: tuple[np.ndarray, np.ndarray],
    candidates: np.ndarray,
    rng: np.random.Generator,
    pool_size: int,
    d: int,
    held_out_from: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    """Deployment ``d``: ``pool_size`` of the ``candidates`` (unseen rows, in ``rng``'s order) are its held-out
    rows, from which the monitor stage's own code builds its profile; the rest are its production. Returns
    the held-out rows, the production rows, the profile and its monitor. ``held_out_from``: draw the
    held-out rows from these candidates only (a deployment whose held-out rows lean one way)."""
    from closedloop.data.bundle import Split
    from closedloop.monitoring import Monitor
    from closedloop.stages.monitor.stage import build_profile

    X, y = unseen
    if held_out_from is None:
        perm = rng.permutation(candidates)
        pool, rest = np.sort(perm[:pool_size]), perm[pool_size:]
    else:
        pool = np.sort(rng.choice(held_out_from, pool_size, replace=False))
        rest = rng.permutation(np.setdiff1d(candidates, pool))
    bundle = dataclasses.replace(data, splits={**data.splits, "val": Split(X=X[pool], y=y[pool])})
    profile = build_profile(cfg, bundle, task, model, np.random.default_rng([7, d]))
    return pool, rest, profile, Monitor(profile, model, seed=d, effects=False)


def test_halves() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    z = np.load(npz_path())
    X, y = z["test_images"][..., None], z["test_labels"].reshape(-1).astype(int)
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    dev, rep = np.sort(perm[: len(y) // 2]), np.sort(perm[len(y) // 2 :])
    return {"dev": (X[dev], y[dev]), "report": (X[rep], y[rep])}


def spread(rates: list[float]) -> str:
    r = np.asarray(rates)
    return (
        f"mean {r.mean():.1%}, median {np.median(r):.1%}, 90th pct {np.quantile(r, 0.9):.1%}, max {r.max():.1%}; "
        f"draws <= 5%: {np.mean(r <= 0.05):.0%}"
    )


def deployment_parser() -> argparse.ArgumentParser:
    """The arguments every per-deployment monitor benchmark takes: the trained run, its draws and the half."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True, help="data copy and run (outside the repo); reused")
    ap.add_argument("--remove", type=int, default=2500, help="train images removed before training")
    ap.add_argument(
        "--train-seed",
        type=int,
        default=0,
        help="one training: removed-image draw and pipeline seed (0: before)",
    )
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--pool", type=int, default=262, help="held-out rows per deployment")
    ap.add_argument("--null-streams", type=int, default=5, help="in-distribution streams of 2,000 per draw")
    ap.add_argument("--half", choices=["dev", "report"], default="dev")
    return ap


def main() -> None:
    ap = deployment_parser()
    ap.add_argument("--windows", type=int, default=100, help="in-distribution windows of 200 per draw")
    ap.add_argument("--shift-draws", type=int, default=3)
    ap.add_argument("--shift-windows", type=int, default=20)
    ap.add_argument("--stream-orders", type=int, default=2, help="test-distribution stream orders per draw")
    ap.add_argument(
        "--pool-half",
        choices=["all", "dev", "report"],
        default="all",
        help="which unseen rows a deployment's held-out rows and production come from: all (before) or one "
        "half of the pool (tune_monitor_last_window.POOL_SEED); the in-distribution streams of 2,000 use every "
        "unseen row but the held-out ones",
    )
    ap.add_argument(
        "--production",
        choices=["same", "other", "both"],
        default="same",
        help="where each deployment's --windows in-distribution windows come from (sections 1 and 4): same = the "
        "rest of its held-out rows' pool half (before); other = the pool's other half, an independent sample of the "
        "population, not the complement of the held-out rows; both = both, on the same references (the same-half "
        "windows exactly as with same); other and both need --pool-half dev or report",
    )
    ap.add_argument(
        "--first-draw", type=int, default=0, help="deployments first-draw .. first-draw + draws - 1"
    )
    ap.add_argument(
        "--save", type=Path, help="write this training's figures as JSON (bench_monitor_trainings.py)"
    )
    ap.add_argument(
        "--skip-whole",
        action="store_true",
        help="skip the whole test half as one stream (section 3's two 312-row lines; the same rows otherwise)",
    )
    ap.add_argument(
        "--stop-at", help="HH:MM (UTC): start no draw after it; the figures cover the draws finished"
    )
    args = ap.parse_args()
    if args.production != "same" and args.pool_half == "all":
        ap.error(
            f"--production {args.production} needs --pool-half dev or report (the pool's other half is the "
            "production); with --pool-half all there is no other half"
        )
    same, other = args.production in ("same", "both"), args.production in ("other", "both")

    from bench_monitor import SHIFTS

    from closedloop.monitoring.drift import Sample
    from closedloop.monitoring.estimate import realized
    from closedloop.monitoring.profile import forward_all, model_input, summary_features
    from closedloop.monitoring.stream import StreamTest, stream_scores
    from closedloop.monitoring.stream_reference import spent_words
    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig

    t0 = time.time()
    run, data, task, model, Xu, yu = deployment(Path(args.workdir), args.remove, args.train_seed)
    cfg = BuildMonitorProfileConfig(window_sizes=[200])
    print(
        f"== PneumoniaMNIST, {args.remove} train images removed before training (unseen, in-distribution); "
        f"model {run.name} (train preset quick); {args.draws} deployments, each with {args.pool} of the unseen "
        f"images as its held-out rows; alpha {cfg.alpha}, delta {cfg.delta}, stream alpha {cfg.stream_alpha}; "
        f"calibration windows {cfg.calibration_windows}; 2 shared CPU cores =="
    )
    print(f"test distribution: {args.half} half of the test split (seed {SPLIT_SEED})")
    from tune_monitor_last_window import POOL_SEED, pool_halves

    candidates = np.arange(len(yu)) if args.pool_half == "all" else pool_halves(len(yu))[args.pool_half]
    other_rows = (
        pool_halves(len(yu))["report" if args.pool_half == "dev" else "dev"] if other else np.arange(0)
    )
    print(
        f"in-distribution pool: {args.pool_half}"
        + ("" if args.pool_half == "all" else f" half (seed {POOL_SEED})")
        + f", {len(candidates)} of {len(yu)} unseen rows; deployments {args.first_draw}-{args.first_draw + args.draws - 1}; "
        f"training seed {args.train_seed}; stream_look_test {cfg.stream_look_test}; stream_spending {cfg.stream_spending}; "
        f"estimate_calibration {cfg.estimate_calibration}; train_reference_rows {cfg.train_reference_rows}"
    )
    print(
        "production windows (sections 1, 4): "
        + " and ".join(
            (
                [
                    f"same half (the {len(candidates) - args.pool} rows of the pool half that are not the held-out rows)"
                ]
                if same
                else []
            )
            + (
                [f"other half (the {len(other_rows)} rows of the pool's other half; generator [19, d, 1])"]
                if other
                else []
            )
        )
    )

    # one forward pass over the unseen and test images: draws differ only in which rows play which part
    info0 = None
    rates_new, rates_old, stream_fa, guarantees = [], [], [], []
    # the same references' windows from the pool's other half (--production other / both)
    rates_new_o: list[float] = []
    rates_old_o: list[float] = []
    alarm_tests_o: list[dict[str, int]] = []
    det: dict[str, dict[str, list[bool]]] = {}
    tdist: dict[str, list[Any]] = {
        "600": [],
        "600_conf": [],
        "whole": [],
        "whole_end": [],
        "whole_conf": [],
        "win_new": [],
        "win_old": [],
    }
    stream_fa_conf: list[bool] = []
    # estimate reliability: (flagged, |estimate - realized| per metric) per window
    est_in: list[tuple[bool, dict[str, float]]] = []
    est_in_o: list[tuple[bool, dict[str, float]]] = []
    est_stream: list[
        tuple[bool, dict[str, float]]
    ] = []  # the 2,000-row stream's windows (not --production same)
    est_test: list[tuple[bool, dict[str, float]]] = []

    # per window: draw, flagged, domain-flagged, |CBPE - realized|, |weighted calibration - realized|
    def gap(
        r: dict[str, Any],
        y: np.ndarray,
        proba: np.ndarray,
        status: dict[str, Any] | None = None,
    ) -> tuple[bool, dict[str, float]]:
        real = realized(["auc", "acc"], y, proba, "binary", r_threshold[0])
        conf = np.max(proba, axis=1)
        point = r["estimated"] or r["estimate_withheld"]
        flags = set(r.get("estimate_flags", []))
        weighted = r.get("estimate_weighted") or {}
        domain_flag = bool(flags & {"domain", "ess"})
        domain_rows.append(
            {
                "draw": current_draw[0],
                "flagged": not r["estimate_reliable"],
                "domain": domain_flag,
                "other": bool(flags & {"drift", "ess", "stream"}),
                "p_domain": (r.get("domain") or {}).get("p_value", 1.0),
                "p_classifier": (r.get("domain") or {}).get("p_classifier", 1.0),
                "auc": (r.get("domain") or {}).get("auc", float("nan")),
                "ess_fraction": (r.get("domain") or {}).get("ess_fraction", float("nan")),
                "err": max(abs(point[m] - real[m]) for m in ("auc", "acc")),
                "err_auc": abs(point["auc"] - real["auc"]),
                "err_acc": abs(point["acc"] - real["acc"]),
                "acc": real["acc"],
                "n": len(y),
                # the realized accuracy's own sampling noise given the window's probabilities (if they were
                # calibrated, each row is right with its confidence c: s.d. sqrt(sum c(1-c)) / n)
                "acc_sd": float(np.sqrt(np.sum(conf * (1 - conf))) / len(y)),
                # each flag's evidence and its level (the diagnosis of an unflagged window off by more)
                "min_p": r["min_p"],
                "drift_level": r["thresholds"].get("alarm_marginal", r["thresholds"]["alarm"]),
                "p_stream": (status or {}).get("p_value"),
                "stream_looks": (status or {}).get("looks", 0),
                "stream_flag": "stream" in flags,
                "err_weighted": max(abs(weighted[m] - real[m]) for m in ("auc", "acc"))
                if weighted
                else float("nan"),
            }
        )
        return (not r["estimate_reliable"], {m: abs(point[m] - real[m]) for m in ("auc", "acc")})

    domain_rows: list[dict[str, Any]] = []
    current_draw = [0]

    r_threshold = [0.5]
    Xt, yt = test_halves()[args.half]
    alarm_tests: list[dict[str, int]] = []
    done: list[int] = []
    for d in range(args.first_draw, args.first_draw + args.draws):
        if args.stop_at and time.strftime("%H:%M", time.gmtime()) >= args.stop_at:
            print(f"  stop at {args.stop_at} UTC: {len(done)} of {args.draws} draws finished", flush=True)
            break
        done.append(d)
        current_draw[0] = d
        rng = np.random.default_rng([19, d])
        # the pool's indices in rng's order: the same rows as rng.permutation(len(yu)) (one shuffle of arange)
        pool, rest, profile, mon = draw_deployment(
            data, task, model, cfg, (Xu, yu), candidates, rng, args.pool, d
        )
        # in-distribution streams of 2,000 need more rows than a pool half's production
        stream_rows = rest if args.pool_half == "all" else np.setdiff1d(np.arange(len(yu)), pool)
        info = profile.info
        if info0 is None:
            info0 = info
            feats_u = summary_features(info, Xu)
            emb_u, proba_u = forward_all(model, model_input(info, Xu))
            feats_t = summary_features(info, Xt)
            emb_t, proba_t = forward_all(model, model_input(info, Xt))
        full = Sample(features=feats_u, embeddings=profile.reduce(emb_u), proba=proba_u)
        thr = profile.threshold_for(200)
        r_threshold[0] = info.threshold
        guarantees.append(thr)
        # the same-half windows are drawn either way, so every later draw of rng is the same for any --production
        same_idx = [rng.choice(rest, 200, replace=False) for _ in range(args.windows)]
        other_gen = np.random.default_rng([19, d, 1])  # diagnose_monitor_alarm_draws.py's other-half windows
        for kind, windows, seeds, out_new, out_old, out_tests, out_est in (
            (
                "in",
                same_idx if same else [],
                [[d, w] for w in range(args.windows)],
                rates_new,
                rates_old,
                alarm_tests,
                est_in,
            ),
            (
                "in_other",
                [other_gen.choice(other_rows, 200, replace=False) for _ in range(args.windows)]
                if other
                else [],
                [[d, 10_000 + w] for w in range(args.windows)],
                rates_new_o,
                rates_old_o,
                alarm_tests_o,
                est_in_o,
            ),
        ):
            if not windows:
                continue
            alarms_new, alarms_old = [], []
            by_test: dict[str, int] = {}  # which test gave an alarming window its smallest p-value
            for idx, seed in zip(windows, seeds, strict=True):
                r = mon.evaluate(full.take(idx), seed=seed)
                out_est.append(gap(r, yu[idx], proba_u[idx]))
                domain_rows[-1]["kind"] = kind
                alarms_new.append(r["min_p"] <= thr["alarm"])
                alarms_old.append(r["min_p"] <= thr["alarm_marginal"])
                if alarms_new[-1]:
                    top = min(r["p_values"], key=lambda k: r["p_values"][k])
                    by_test[top] = by_test.get(top, 0) + 1
            out_tests.append(by_test)
            out_new.append(float(np.mean(alarms_new)))
            out_old.append(float(np.mean(alarms_old)))
        # stream: 2,000 unseen in-distribution rows in a random order
        for o in range(args.null_streams):
            # 2,000 unseen in-distribution rows as windows of 200, read after each (looks do not inflate
            # the stream's rate); the first stream's windows also measure the estimate in a stream
            st = StreamTest(profile.stream, info.stream_alpha, seed=[d, 1, o], delta=info.stream_delta)
            sr = mon.stream_test()
            order = rng.permutation(stream_rows)[:2000]
            for k, start in enumerate(range(0, 2000, 200)):
                widx = order[start : start + 200]
                st.update(stream_scores(proba_u[widx], info.problem_type, info.threshold))
                status = mon.stream_update(sr, full.take(widx))
                if o == 0:
                    r = mon.evaluate(full.take(widx), seed=[d, 200 + k], stream=status)
                    # its rows come from both pool halves: with --production other / both they are kept apart
                    (est_in if args.production == "same" else est_stream).append(
                        gap(r, yu[widx], proba_u[widx], status)
                    )
                    domain_rows[-1]["kind"] = "in" if args.production == "same" else "in_stream"
            stream_fa.append(sr.alarm_at is not None)
            stream_fa_conf.append(st.alarm_at is not None)
        # the test distribution as a stream: three windows of 200 (each without repeats) = 600 rows
        tsample = Sample(features=feats_t, embeddings=profile.reduce(emb_t), proba=proba_t)
        for o in range(args.stream_orders):
            st = StreamTest(profile.stream, info.stream_alpha, seed=[d, 2, o], delta=info.stream_delta)
            sr = mon.stream_test()
            for k in range(3):
                widx = rng.choice(len(yt), 200, replace=False)
                st.update(stream_scores(proba_t[widx], info.problem_type, info.threshold))
                status = mon.stream_update(sr, tsample.take(widx))
                r = mon.evaluate(tsample.take(widx), seed=[d, 500 + 3 * o + k], stream=status)
                est_test.append(gap(r, yt[widx], proba_t[widx], status))
                domain_rows[-1]["kind"] = "test"
                domain_rows[-1]["pos"] = k
                domain_rows[-1]["order"] = o
                tdist["win_new"].append(r["min_p"] <= thr["alarm"])
                tdist["win_old"].append(r["min_p"] <= thr["alarm_marginal"])
            tdist["600"].append(sr.alarm_at)
            tdist["600_conf"].append(st.alarm_at)
            whole = rng.permutation(len(yt))  # drawn either way: the later windows stay the same rows
            if args.skip_whole:
                continue
            st = StreamTest(profile.stream, info.stream_alpha, seed=[d, 3, o], delta=info.stream_delta)
            st.update(stream_scores(proba_t[whole], info.problem_type, info.threshold))
            tdist["whole_conf"].append(st.alarm_at)
            sr = mon.stream_test()
            mon.stream_update(sr, tsample.take(whole))
            tdist["whole"].append(sr.alarm_at)
            sr = mon.stream_test()  # the same order read as a file: a last look at its end (row 312)
            mon.stream_update(sr, tsample.take(whole), last=True)
            tdist["whole_end"].append(sr.alarm_at)
        # generated shifts at window 200
        if d - args.first_draw < args.shift_draws:
            pos, neg = rest[yu[rest] == 1], rest[yu[rest] == 0]
            for name, fn in {**SHIFTS, "prevalence -> 40%": None}.items():
                for w in range(args.shift_windows):
                    if fn is None:  # bench_monitor.py's label shift: 40% pneumonia instead of ~74%
                        idx = np.concatenate(
                            [rng.choice(pos, 80, replace=False), rng.choice(neg, 120, replace=False)]
                        )
                        s = full.take(idx)
                    else:
                        idx = rng.choice(rest, 200, replace=False)
                        s = mon.sample(mon.prepare(fn(Xu[idx])))
                    r = mon.evaluate(s, seed=[d, 1000 + w])
                    cell = det.setdefault(name, {"new": [], "old": []})
                    cell["new"].append(r["min_p"] <= thr["alarm"])
                    cell["old"].append(r["min_p"] <= thr["alarm_marginal"])
        rate_lines = [
            f"{label}alarm rate new {new[-1]:.1%} / old {old[-1]:.1%} (alarms by smallest-p test "
            f"{', '.join(f'{k} {v}' for k, v in sorted(tests[-1].items())) or 'none'})"
            for label, new, old, tests, on in (
                ("same half: " if other else "", rates_new, rates_old, alarm_tests, same),
                ("other half: ", rates_new_o, rates_old_o, alarm_tests_o, other),
            )
            if on
        ]
        print(
            f"  draw {d:>2}: {'; '.join(rate_lines)}; thresholds {thr['alarm']:.4f} / {thr['alarm_marginal']:.4f}; "
            f"stream 2000 in-dist alarm {stream_fa[-1] if stream_fa else '-'} "
            f"(conformal {stream_fa_conf[-1] if stream_fa_conf else '-'}); {time.time() - t0:.0f} s",
            flush=True,
        )
    assert info0 is not None
    print(f"\nguarantee (profile sentence): {info0.guarantee}")
    print(f"\n1. Per-deployment false alarms, {args.windows} unseen in-distribution windows of 200 per draw")
    for label, new, old, on in (
        ("production from the same pool half", rates_new, rates_old, same),
        ("production from the pool's other half", rates_new_o, rates_old_o, other),
    ):
        if not on:
            continue
        print(f"   [{label}]")
        print(f"   new rule (alpha*delta threshold): {spread(new)}  (target <= 5% in >= 90% of draws)")
        print(f"   old rule (alpha threshold):       {spread(old)}")
    print(
        f"\n2. Detection at window 200 of bench_monitor.py's moderate shifts ({args.shift_draws} draws x {args.shift_windows} windows)"
    )
    worst_new = 1.0
    for name, cell in det.items():
        n, o = float(np.mean(cell["new"])), float(np.mean(cell["old"]))
        worst_new = min(worst_new, n)
        print(f"   {name:<24} new {n:.0%}   old {o:.0%}")
    print(f"   lowest detection rate, new rule: {worst_new:.0%} (target >= 90%)")
    print(
        f"\n3. Stream test: 'reference' (the default: every row so far against the fixed held-out rows, a look every "
        f"{info0.stream_look} rows spending {spent_words(info0.stream_delta, info0.stream_spending)}; "
        f"stream_delta {info0.stream_delta}) and 'conformal' (the martingales before, at the same level), same streams"
    )
    for label, fa, k600, kwhole in (
        ("reference", stream_fa, "600", "whole"),
        ("conformal", stream_fa_conf, "600_conf", "whole_conf"),
    ):
        a600 = tdist[k600]
        hit = np.mean([a is not None and a <= 600 for a in a600])
        at = [a for a in a600 if a is not None]
        whole = tdist[kwhole]
        print(
            f"   [{label}] unseen in-distribution streams of 2,000 rows: stream alarm in {np.mean(fa):.1%} of "
            f"{len(fa)} runs (target <= 5%)"
        )
        print(
            f"   [{label}] test distribution ({args.half} half), streams of 600 (3 windows of 200, each without repeats): "
            f"alarm within 600 rows in {hit:.0%} of {len(a600)} orders (target >= 90%); median row of the alarm "
            f"{np.median(at) if at else float('nan'):.0f}"
        )
        print(
            f"   [{label}] test distribution ({args.half} half), all {len(yt)} rows in a random order: alarm in "
            f"{np.mean([a is not None for a in whole]):.0%} of {len(whole)} orders"
            + (" (one look, at row 200)" if label == "reference" else "")
        )
        if label == "reference":
            end = tdist["whole_end"]
            print(
                f"   [{label}] the same orders read as a file (a last look at row {len(yt)}, spending the next share): alarm in "
                f"{np.mean([a is not None for a in end]):.0%} of {len(end)} orders"
            )
    print(
        f"   per-window alarms on test-distribution windows of 200: new rule {np.mean(tdist['win_new']):.0%}, "
        f"old rule {np.mean(tdist['win_old']):.0%}"
    )
    print("\n4. Label-free estimate: withheld (flagged unreliable) or within 0.03 of realized (AUC and ACC)?")
    for name, rows in (
        ("unseen in-distribution (same pool half)", est_in),
        ("unseen in-distribution (the pool's other half)", est_in_o),
        (
            "unseen in-distribution stream of 2,000 (its first 10 windows, with the stream's status)",
            est_stream,
        ),
        (f"test distribution ({args.half} half)", est_test),
    ):
        if not rows:
            continue
        flagged = [f for f, _ in rows]
        kept = [g for f, g in rows if not f]
        ok = [max(g.values()) <= 0.03 for g in kept]
        bad = len(ok) - int(np.sum(ok))
        line = (
            f"   {name}: {len(rows)} windows of 200, flagged {np.mean(flagged):.1%}; unflagged within 0.03: "
            f"{np.mean(ok) if ok else float('nan'):.1%} ({bad} unflagged window(s) off by more)"
        )
        if kept:
            line += (
                f"; unflagged mean |error| AUC {np.mean([g['auc'] for g in kept]):.3f}, ACC "
                f"{np.mean([g['acc'] for g in kept]):.3f}"
            )
        print(line)
    # the noise floor on the same unflagged in-distribution windows: the realized accuracy's own sampling noise
    noises: dict[str, dict[str, float]] = {}
    for kind in ("in", "in_other"):
        kept_in = [r for r in domain_rows if r.get("kind") == kind and not r["flagged"]]
        if not kept_in:
            continue
        from scipy.stats import norm

        sds = np.array([r["acc_sd"] for r in kept_in])
        noise = noises[kind] = {
            "estimate_within": float(np.mean([r["err"] <= 0.03 for r in kept_in])),
            "acc_within": float(np.mean([r["err_acc"] <= 0.03 for r in kept_in])),
            "acc_sd": float(np.mean(sds)),
            "acc_floor": float(np.mean(2 * norm.cdf(0.03 / sds) - 1)),
        }
        print(
            f"   {'same pool half' if kind == 'in' else 'the pool' + chr(39) + 's other half'}: the realized "
            f"accuracy's own noise on the same {len(kept_in)} unflagged in-distribution windows: s.d. "
            f"given the window's probabilities {noise['acc_sd']:.3f} (mean; sqrt(sum c(1-c))/200); a perfectly "
            f"calibrated estimate would be within 0.03 of realized ACC in {noise['acc_floor']:.1%} of them (normal "
            f"approximation); the estimate's ACC is within 0.03 in {noise['acc_within']:.1%}, ACC and AUC "
            f"{noise['estimate_within']:.1%}"
        )
    print(
        "   targets: in-distribution <= 10% flagged and the unflagged within 0.03; test distribution: every window"
    )
    print("   within 0.03 or flagged (with its reason)")
    from closedloop.monitoring.stream_reference import evidence_factor

    # the level at which the stream's evidence withholds the estimate (the profile's rule, not the level over runs)
    withhold = (
        (info0.stream_delta or 1.0) if info0.stream_evidence == "per_deployment" else evidence_factor(info0)
    )
    for row in domain_rows:  # why an unflagged window is unflagged: each flag's evidence against its level
        if row.get("kind") == "test" and not row["flagged"] and row["err"] > 0.03:
            sd = float(np.sqrt(row["acc"] * (1 - row["acc"]) / row["n"]))
            look = (
                f"stream look {row['stream_looks']} p={row['p_stream']:.3g} (evidence at <= "
                f"{info0.stream_alpha * withhold / (row['stream_looks'] * (row['stream_looks'] + 1)):.3g})"
                if row["p_stream"] is not None
                else "no stream look yet"
            )
            print(
                f"   unflagged and off: draw {row['draw']}, order {row['order']}, window {row['pos'] + 1} of its stream: "
                f"|AUC err| {row['err_auc']:.3f}, |ACC err| {row['err_acc']:.3f} (realized ACC {row['acc']:.3f}, its own "
                f"sampling s.d. at {row['n']} rows {sd:.3f}); evidence below its level: drift min p {row['min_p']:.3g} "
                f"(flag at <= {row['drift_level']:.3g}), domain mean-shift p {row['p_domain']:.3g} (flag at <= "
                f"{info0.domain_level:g}), classifier p {row['p_classifier']:.3g}, ESS fraction {row['ess_fraction']:.2f} "
                f"(flag at < {info0.min_ess_fraction:g}), {look}"
            )
    marginal = info0.domain_alpha or 0.0
    print(
        "   the same windows under both domain flag levels (the other reasons, drift tests / ESS / stream alarm, kept):"
    )
    for lname, level, pkey in (
        (
            f"mean-shift test, per-deployment p <= {info0.domain_level:g} (configured)",
            info0.domain_level or 0.0,
            "p_domain",
        ),
        (f"mean-shift test, marginal p <= {marginal:g}", marginal, "p_domain"),
        (
            f"classifier p (sessions 8-9), per-deployment p <= {info0.domain_level:g}",
            info0.domain_level or 0.0,
            "p_classifier",
        ),
    ):
        for kind, label in (
            ("in", "in-distribution (same half)"),
            ("in_other", "in-distribution (other half)"),
            ("test", f"test ({args.half} half)"),
        ):
            rows = [r for r in domain_rows if r.get("kind") == kind]
            if not rows:
                continue
            fl = [r["other"] or r[pkey] <= level or r["ess_fraction"] < info0.min_ess_fraction for r in rows]
            off = [r for r, f in zip(rows, fl, strict=True) if not f and r["err"] > 0.03]
            where = ""
            if kind == "test":
                where = (
                    " (by window of the stream: "
                    + ", ".join(
                        ("1st", "2nd", "3rd")[k] + f" {sum(r.get('pos') == k for r in off)}" for k in range(3)
                    )
                    + ")"
                )
            print(
                f"   [{lname}] {label}: flagged {np.mean(fl):.1%} of {len(rows)}; unflagged and off by > 0.03: "
                f"{len(off)}{where}"
            )
    print(
        f"\n5. Domain check (the mean-shift permutation test's p, flag at p <= {info0.domain_level:g}; the classifier's AUC and importance weights, flag at ESS fraction < "
        f"{info0.min_ess_fraction}) and the importance-weighted calibration"
    )
    for kind, label in (
        ("in", "unseen in-distribution (same pool half)"),
        ("in_other", "unseen in-distribution (the pool's other half)"),
        ("test", f"test distribution ({args.half} half)"),
    ):
        rows = [r for r in domain_rows if r.get("kind") == kind]
        if not rows:
            continue
        per_draw = [
            np.mean([r["domain"] for r in rows if r["draw"] == d]) for d in sorted({r["draw"] for r in rows})
        ]
        if kind != "test":  # the domain flag's false-flag budget, one rate per deployment (draw)
            for lname, level, pkey in (
                ("per-deployment, mean-shift test", info0.domain_level or 0.0, "p_domain"),
                ("marginal, mean-shift test", marginal, "p_domain"),
                ("per-deployment, classifier p (sessions 8-9)", info0.domain_level or 0.0, "p_classifier"),
            ):
                rates = [
                    np.mean([r[pkey] <= level for r in rows if r["draw"] == d])
                    for d in sorted({r["draw"] for r in rows})
                ]
                print(
                    f"   in-distribution domain p-flag at p <= {level:g} ({lname}), per draw over {len(rates)} draws: "
                    f"mean {np.mean(rates):.1%}, median {np.median(rates):.1%}, 90th pct {np.quantile(rates, 0.9):.1%}, "
                    f"95th pct {np.quantile(rates, 0.95):.1%}, max {np.max(rates):.1%}; draws <= {info0.domain_alpha:g}: "
                    f"{np.mean(np.asarray(rates) <= (info0.domain_alpha or 0)):.0%} (target: <= {info0.domain_alpha:g} in >= "
                    f"{1 - (info0.domain_delta or 0):.0%} of draws)"
                )
        auc = np.array([r["auc"] for r in rows])
        essf = np.array([r["ess_fraction"] for r in rows])
        err, errw = np.array([r["err"] for r in rows]), np.array([r["err_weighted"] for r in rows])
        print(
            f"   {label}: {len(rows)} windows; domain-flagged {np.mean([r['domain'] for r in rows]):.1%} "
            f"(per draw: median {np.median(per_draw):.0%}, 90th pct {np.quantile(per_draw, 0.9):.0%}, max {max(per_draw):.0%}); "
            f"domain AUC median {np.nanmedian(auc):.3f} (10th-90th {np.nanquantile(auc, 0.1):.3f}-{np.nanquantile(auc, 0.9):.3f}); "
            f"ESS fraction median {np.nanmedian(essf):.2f} (min {np.nanmin(essf):.2f})"
        )
        print(
            f"     max(|AUC err|, |ACC err|) over all windows: CBPE median {np.median(err):.3f}, within 0.03 {np.mean(err <= 0.03):.0%}; "
            f"importance-weighted calibration median {np.nanmedian(errw):.3f}, within 0.03 {np.nanmean(errw <= 0.03):.0%}"
        )
    print(f"total {time.time() - t0:.0f} s")
    if args.save:
        test_rows = [r for r in domain_rows if r.get("kind") == "test"]

        def in_figures(
            kind: str, new: list[float], old: list[float], tests: list[dict[str, int]]
        ) -> dict[str, Any]:
            """Sections 1 and 4's in-distribution figures of one production protocol."""
            in_rows = [r for r in domain_rows if r.get("kind") == kind]
            return {
                "alarm_rates": new,
                "alarm_rates_marginal": old,
                "alarm_tests": tests,
                "in_windows": len(in_rows),
                "in_flagged": float(np.mean([r["flagged"] for r in in_rows])) if in_rows else float("nan"),
                "in_flagged_per_draw": [
                    float(np.mean([r["flagged"] for r in in_rows if r["draw"] == d]))
                    for d in sorted({r["draw"] for r in in_rows})
                ],
                "noise": noises.get(kind, {}),
                "in_unflagged_off": sum(1 for r in in_rows if not r["flagged"] and r["err"] > 0.03),
            }

        off = [r for r in test_rows if not r["flagged"] and r["err"] > 0.03]
        a600 = tdist["600"]
        out = {
            "train_seed": args.train_seed,
            "pool": args.pool,
            "half": args.half,
            "pool_half": args.pool_half,
            "draws": done,
            "stream_look_test": cfg.stream_look_test,
            "windows": args.windows,
            "production": args.production,
            "detection": {k: float(np.mean(v["new"])) for k, v in det.items()},
            "detection_windows": {k: len(v["new"]) for k, v in det.items()},
            "test_windows": len(test_rows),
            "test_flagged": float(np.mean([r["flagged"] for r in test_rows])) if test_rows else float("nan"),
            "test_off": [
                {k: r.get(k) for k in ("draw", "order", "pos", "err", "err_acc", "err_auc")} for r in off
            ],
            "stream_null_alarms": int(np.sum(stream_fa)),
            "stream_null_runs": len(stream_fa),
            "stream_600": float(np.mean([a is not None and a <= 600 for a in a600]))
            if a600
            else float("nan"),
            "stream_600_orders": len(a600),
        }
        if same:  # the same-half figures at the top level, as before
            out |= in_figures("in", rates_new, rates_old, alarm_tests)
        if other:
            out["other_half"] = in_figures("in_other", rates_new_o, rates_old_o, alarm_tests_o)
        if est_stream:
            out["stream_windows"] = len(est_stream)
            out["stream_windows_flagged"] = float(np.mean([f for f, _ in est_stream]))
        args.save.write_text(json.dumps(out, indent=1))
        print(f"saved {args.save}")


if __name__ == "__main__":
    main()
