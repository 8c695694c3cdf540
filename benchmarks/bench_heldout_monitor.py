"""False alarms and the label-free estimate on in-distribution data the deployed model never saw.

As a new user would: remove a random 1,000 images from PneumoniaMNIST's train split (a modified copy
of the file under /tmp, never in the repository), run the shipped config on it, then monitor windows
of 200 drawn from those 1,000 unseen, in-distribution images. Also prints the export gate's fp32 / int8
AUC (on the held-out calibration split and on the unseen images) next to the pre-refit validation AUC
interval. ``--holdout-fraction 0`` reproduces the old behaviour (everything after the refit on
trained-on validation data) for comparison.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_heldout_monitor.py [--preset default] [--windows 200]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NPZ = (ROOT / ".." / "shared" / "data" / "medmnist" / "pneumoniamnist.npz").resolve()
CONFIG = ROOT / "configs" / "pneumoniamnist.yaml"


def write_reduced_npz(src: Path, dest_dir: Path, n_remove: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Copy ``src`` into ``dest_dir`` without ``n_remove`` random train images; return those images."""
    z = dict(np.load(src))
    rng = np.random.default_rng(seed)
    out = np.sort(rng.choice(len(z["train_labels"]), n_remove, replace=False))
    keep = np.setdiff1d(np.arange(len(z["train_labels"])), out)
    removed = (z["train_images"][out], z["train_labels"][out].reshape(-1).astype(int))
    z["train_images"], z["train_labels"] = z["train_images"][keep], z["train_labels"][keep]
    dest_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(dest_dir / src.name, **z)
    return removed[0][..., None], removed[1]


def run_pipeline(
    data_root: Path,
    runs: Path,
    preset: str,
    train_extra: dict[str, Any],
    audit: bool,
    seed: int | None = None,
) -> Any:
    """Run the shipped config on ``data_root``; ``seed`` replaces its top-level seed (None: the config's)."""
    from closedloop.core.config import load_yaml_file
    from closedloop.core.pipeline import Pipeline

    raw = copy.deepcopy(load_yaml_file(CONFIG))
    if seed is not None:
        raw["seed"] = seed
    raw["data"]["root"] = str(data_root)
    raw["runs_dir"] = str(runs)
    stages = []
    for st in raw["stages"]:
        if st["kind"] == "audit" and not audit:
            continue
        if st["kind"] == "train":
            st["params"] = {**st.get("params", {}), "preset": preset, **train_extra}
        stages.append(st)
    raw["stages"] = stages
    res = Pipeline.from_dict(raw, where="bench_heldout_monitor").run(progress=False)
    if not res.ok:
        raise SystemExit(f"pipeline failed: {res.summary}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="default", choices=["quick", "default", "thorough"])
    ap.add_argument("--remove", type=int, default=1000)
    ap.add_argument("--windows", type=int, default=200)
    ap.add_argument("--window", type=int, default=200)
    ap.add_argument("--holdout-fraction", type=float, default=None)
    ap.add_argument("--train-set", default="{}", help="extra train params as JSON (e.g. a larger budget)")
    ap.add_argument(
        "--audit", action="store_true", help="keep the audit stage (off: it does not change training)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--workdir", default=None, help="keep data and runs here (outside the repo) instead of a temp dir"
    )
    args = ap.parse_args()
    from closedloop.monitoring import Monitor
    from closedloop.monitoring.estimate import realized

    extra = json.loads(args.train_set)
    if args.holdout_fraction is not None:
        extra["holdout_fraction"] = args.holdout_fraction
    with tempfile.TemporaryDirectory(prefix="closedloop_heldout_") as scratch:
        tmp = args.workdir or scratch
        t0 = time.time()
        Xu, yu = write_reduced_npz(NPZ, Path(tmp) / "data", args.remove, args.seed)
        res = run_pipeline(Path(tmp) / "data", Path(tmp) / "runs", args.preset, extra, args.audit)
        t_run = time.time() - t0
        tr = res["train"]
        ex = res.artifact("exported").measurements
        mon = Monitor.load(res.run_dir)
        info = mon.profile.info
        print(
            f"== PneumoniaMNIST: {args.remove} random train images removed before the run, monitored afterwards "
            f"(configs/pneumoniamnist.yaml, train preset {args.preset}{', ' + str(extra) if extra else ''}"
            f"{', audit skipped' if not args.audit else ''}; pipeline {t_run / 60:.1f} min on 2 shared cores) =="
        )
        print(f"train: {tr.get('heldout_note')}")
        print(f"train evaluated_on: {tr.get('evaluated_on')}")
        print(
            f"monitor reference: {info.reference_size} of {info.source.get('n')} samples, evaluated_on "
            f"{info.source.get('evaluated_on')!r}; reliability ECE {info.reliability.get('ece', float('nan')):.3f}; "
            "thresholds "
            + ", ".join(f"n={k}: alarm {v['alarm']:.4f}" for k, v in sorted(info.thresholds.items(), key=lambda kv: int(kv[0])))
        )  # fmt: skip

        # 1. windows of unseen in-distribution images
        s = mon.sample(mon.prepare(Xu), yu)
        rng = np.random.default_rng(args.seed + 1)
        alerts, est, real = [], {"auc": [], "acc": []}, {"auc": [], "acc": []}
        per_test: dict[str, int] = {}
        for i in range(args.windows):
            idx = np.sort(rng.choice(len(yu), args.window, replace=False))
            win = s.take(idx)
            labels = win.labels
            win.labels = None  # the alarm is label-free (label_shift only runs when labels arrive)
            r = mon._evaluate(win, {"warnings": []}, np.random.default_rng([args.seed, i]))
            alerts.append(r["alert"])
            for k, p in r["p_values"].items():
                per_test[k] = per_test.get(k, 0) + int(p < info.alpha)
            got = realized(["auc", "acc"], labels, win.proba, info.problem_type, info.threshold)
            for m in ("auc", "acc"):
                est[m].append({**r["estimated"], **r["estimate_withheld"]}[m])
                real[m].append(got[m])
        alarm = np.mean([a == "alarm" for a in alerts])
        warn = np.mean([a in ("alarm", "warn") for a in alerts])
        print(
            f"\n1. {args.windows} windows of {args.window} drawn from the {args.remove} unseen images "
            f"(configured alpha {info.alpha:.0%})"
        )
        print(f"   alarm rate {alarm:.1%} (target <= 5%: {'met' if alarm <= 0.05 else 'NOT met'})")
        print(f"   warn-or-alarm rate {warn:.1%} (configured warn level {info.warn_alpha:.0%})")
        print(
            "   per-test p < alpha (uncorrected): "
            + ", ".join(f"{k} {v / args.windows:.1%}" for k, v in per_test.items())
        )
        for m in ("auc", "acc"):
            e, t = np.asarray(est[m]), np.asarray(real[m])
            err = float(np.nanmean(np.abs(e - t)))
            print(
                f"   label-free {m.upper()}: mean estimated {np.nanmean(e):.4f}, mean realized {np.nanmean(t):.4f}, "
                f"mean |estimated - realized| {err:.4f} (target <= 0.03: {'met' if err <= 0.03 else 'NOT met'})"
            )

        # 2. the export gate
        print(
            "\n2. Export gate (fp32 vs int8), evaluated_on "
            + repr(ex.get("evaluated_on"))
            + f" ({ex.get('n_evaluated')} samples)"
        )
        v = tr["val"]["auc"]
        print(
            f"   pre-refit validation AUC (selected configuration, did not train on val): {v['value']:.4f} "
            f"[{v['ci95'][0]:.4f}, {v['ci95'][1]:.4f}]"
        )
        from closedloop.stages.export import ExportBundle

        bundle = ExportBundle.load(res.run_dir / res["export"]["artifacts"]["exported"])
        from sklearn.metrics import roc_auc_score

        for name in ("fp32", "int8"):
            var = ex["variants"].get(name)
            if var is None:
                continue
            c = var["comparison"]
            p = bundle.predictor(variant=name).predict_proba(Xu)[:, 1]
            auc_u = roc_auc_score(yu, p)
            inside = v["ci95"][0] <= c["value"] <= v["ci95"][1]
            print(
                f"   {name}: gate AUC {c['value']:.4f} [{c['ci'][0]:.4f}, {c['ci'][1]:.4f}] "
                f"({'inside' if inside else 'OUTSIDE'} the pre-refit validation interval); on the {args.remove} unseen "
                f"images {auc_u:.4f}; accepted {var['accepted']}"
            )
        test = tr["test"]
        print(
            "   (sealed test, opened once by training: "
            + ", ".join(f"{k} {t['value']:.4f}" for k, t in test.items())
            + ")"
        )


if __name__ == "__main__":
    main()
