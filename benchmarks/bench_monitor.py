"""Drift monitor on PneumoniaMNIST: false alarms, detection of generated shifts, label-free estimates, speed.

Run: .venv/bin/python benchmarks/bench_monitor.py  (about 10 minutes on 2 busy cores); ``--timeline``
draws only the timeline figure (docs/results/monitor_timeline.png) after training the same model.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import nn

from closedloop.core.stage import RunContext
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.models.registry import register_model
from closedloop.models.trained import ModelSpec, Preprocessing, TrainedModel
from closedloop.monitoring import Monitor
from closedloop.stages.monitor import BuildMonitorProfile
from closedloop.stages.task import DefineTaskConfig, build_task_spec

ROOT = Path(__file__).resolve().parents[1]
NPZ = (
    next(
        (
            p
            for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared")
            if (p / "data" / "medmnist").is_dir()
        ),
        ROOT.parent / "shared",
    )
    / "data"
    / "medmnist"
    / "pneumoniamnist.npz"
)
"""The shared MedMNIST file (beside the checkout, or two levels up from a worktree under /work/wt/)."""
SEED = 0
torch.set_num_threads(2)


class BenchCNN(nn.Module):
    def __init__(self, shape: list[int], n: int) -> None:
        super().__init__()
        c = shape[2]
        self.body = nn.Sequential(
            nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * (shape[0] // 4) * (shape[1] // 4), 64), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(64, n)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("bench_monitor_cnn")
def build_bench_cnn(shape: list[int], n: int) -> nn.Module:
    return BenchCNN(shape, n)


def train_model(Xtr: np.ndarray, ytr: np.ndarray, Xva: np.ndarray, yva: np.ndarray) -> TrainedModel:
    torch.manual_seed(SEED)
    mean = float(Xtr.mean() / 255)
    std = float(Xtr.std() / 255)
    pre = Preprocessing(input_kind="images", input_shape=[28, 28, 1], mean=[mean], std=[std])
    net = BenchCNN([28, 28, 1], 1)
    model = TrainedModel(
        spec=ModelSpec(family="bench_monitor_cnn"), network=net, preprocessing=pre,
        problem_type="binary", n_outputs=2, label_names=["normal", "pneumonia"],
    )  # fmt: skip
    mod = model.raw_module().train()
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    X = torch.tensor(Xtr, dtype=torch.float32)
    y = torch.tensor(ytr, dtype=torch.float32)
    for _ in range(3):
        perm = torch.randperm(len(X))
        for i in range(0, len(X), 128):
            b = perm[i : i + 128]
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(mod(X[b]).reshape(-1), y[b])
            loss.backward()
            opt.step()
    net.eval()
    # temperature scaling on validation
    z = model.predict_logits(Xva).reshape(-1)
    best = min(
        np.linspace(0.3, 4, 75),
        key=lambda t: -np.mean(yva * -np.logaddexp(0, -z / t) + (1 - yva) * -np.logaddexp(0, z / t)),
    )
    model.temperature = float(best)
    return model


# -- shifts (moderate severities) ---------------------------------------------------------------
def _pil_map(X: np.ndarray, fn) -> np.ndarray:
    return np.stack([np.asarray(fn(Image.fromarray(x[..., 0])))[..., None] for x in X]).astype(np.uint8)


def jpeg(X: np.ndarray, q: int) -> np.ndarray:
    def f(img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=q)
        return Image.open(io.BytesIO(buf.getvalue()))

    return _pil_map(X, f)


def shifts(
    brightness: float,
    contrast: float,
    gamma: float,
    noise_sd: float,
    blur: float,
    quality: int,
    degrees: float,
    seed: int,
) -> dict[str, Any]:
    """One of each generated shift kind at the given severities, named by severity."""

    def contrast_fn(X: np.ndarray) -> np.ndarray:
        return np.clip((X.astype(np.float32) - X.mean()) * contrast + X.mean(), 0, 255).astype(np.uint8)

    def noise_fn(X: np.ndarray) -> np.ndarray:
        return np.clip(X + np.random.default_rng(seed).normal(0, noise_sd, X.shape), 0, 255).astype(np.uint8)

    return {
        f"brightness +{brightness:g}": lambda X: np.clip(X.astype(np.float32) + brightness, 0, 255).astype(
            np.uint8
        ),
        f"contrast x{contrast:g}": contrast_fn,
        f"gamma {gamma:g}": lambda X: (255 * (X / 255.0) ** gamma).astype(np.uint8),
        f"gaussian noise sd {noise_sd:g}": noise_fn,
        f"blur sigma {blur:g}": lambda X: _pil_map(X, lambda im: im.filter(ImageFilter.GaussianBlur(blur))),
        f"jpeg quality {quality}": lambda X: jpeg(X, quality),
        f"rotation {degrees:g} deg": lambda X: _pil_map(
            X, lambda im: im.rotate(degrees, resample=Image.BILINEAR)
        ),
    }


SHIFTS = shifts(20, 0.8, 1.3, 8, 0.6, 30, 10, seed=1)
# stronger versions of each shift, for the direction-of-change check (section 4): at the moderate
# severities the model's realized AUC barely moves, so its sign is noise
STRONG = shifts(60, 0.5, 2.0, 25, 1.2, 5, 30, seed=2)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB: how much a shift changes the pixels (higher = milder)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def windows_from(n_pool: int, n: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.choice(n_pool, n, replace=n > n_pool) for _ in range(k)]


def prevalence_windows(
    y: np.ndarray, n: int, k: int, prev: float, rng: np.random.Generator
) -> list[np.ndarray]:
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    out = []
    for _ in range(k):
        npos = int(round(prev * n))
        out.append(
            np.concatenate(
                [
                    rng.choice(pos, npos, replace=npos > len(pos)),
                    rng.choice(neg, n - npos, replace=n - npos > len(neg)),
                ]
            )
        )
    return out


def main() -> None:
    t0 = time.time()
    z = np.load(NPZ)
    X = {s: z[f"{s}_images"][..., None] for s in ("train", "val", "test")}
    y = {s: z[f"{s}_labels"].reshape(-1).astype(int) for s in ("train", "val", "test")}
    bundle = DatasetBundle(
        DatasetMeta(name="pneumoniamnist", source="medmnist", kind="images", task_hint="binary-class",
                    label_names=["normal", "pneumonia"]),
        {s: Split(X[s], y[s]) for s in ("train", "val", "test")},
    )  # fmt: skip
    task = build_task_spec(DefineTaskConfig(), bundle)
    model = train_model(X["train"], y["train"], X["val"], y["val"])
    t_train = time.time() - t0
    stage = BuildMonitorProfile()
    t = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        out = stage.execute(
            {"data": bundle, "task": task, "model": model},
            RunContext(stage_name="monitor", stage_dir=Path(tmp), seed=SEED),
        )
    t_profile = time.time() - t
    profile = out.reference
    mon = Monitor(profile, model)
    info = profile.info
    print(
        "== PneumoniaMNIST drift monitor benchmark (28x28, small CNN trained 3 epochs, temperature-scaled) =="
    )
    print(f"model: temperature {model.temperature:.2f}; reference performance (val ref half): "
          + ", ".join(f"{k}={v:.3f}" for k, v in info.reference_performance.items()))  # fmt: skip
    print(f"profile: reference {info.reference_size} val samples, {len(info.feature_names)} pixel features, "
          f"embeddings {info.embedding_dim}->{info.pca_dims} PCA dims, tests {info.tests}, alpha {info.alpha}")  # fmt: skip
    print(
        "calibrated min-p thresholds: "
        + ", ".join(
            f"n={k}: alarm {v['alarm']:.4f} / warn {v['warn']:.4f}" for k, v in info.thresholds.items()
        )
    )
    print(f"time: training {t_train:.0f}s, profile build + calibration {t_profile:.0f}s\n")
    if "--timeline" in sys.argv[1:]:  # only the timeline figure (same model and profile as a full run)
        draw_timeline(mon, X, y)
        return

    rng = np.random.default_rng(SEED)
    Xv, yv = X["val"], y["val"]
    sv = mon.sample(mon.prepare(Xv), yv)  # score once; windows index into it

    def run_windows(sample, idxs, labels=True):
        res = []
        for i, idx in enumerate(idxs):
            win = sample.take(idx)
            if not labels:
                win.labels = None
            res.append(mon._evaluate(win, {"warnings": []}, np.random.default_rng([SEED, i])))
        return res

    def rate(res, level=("alarm",)):
        return np.mean([r["alert"] in level for r in res])

    # 1. false alarms on in-distribution windows
    ref_rows = {r.tobytes() for r in profile.reference.features}
    heldout = np.array([i for i in range(len(Xv)) if sv.features[i].tobytes() not in ref_rows])
    res_val = run_windows(sv, windows_from(len(Xv), 200, 300, rng), labels=False)
    res_hold = run_windows(sv.take(heldout), windows_from(len(heldout), 200, 300, rng), labels=False)
    print("1. False alarm rate, windows of 200 in-distribution samples (target <= 5%)")
    print(
        f"   val resamples (300 windows):              alarm {rate(res_val):.1%}  warn-or-alarm {rate(res_val, ('alarm', 'warn')):.1%}"
    )
    print(
        f"   held-out val half only ({len(heldout)} samples, 300 windows, bootstrap): alarm {rate(res_hold):.1%}  warn-or-alarm {rate(res_hold, ('alarm', 'warn')):.1%}"
    )
    per_test = {k: np.mean([r["p_values"][k] < info.alpha for r in res_val]) for k in res_val[0]["p_values"]}
    print(
        "   per-test rejection at p<0.05 (uncorrected, val resamples): "
        + ", ".join(f"{k} {v:.1%}" for k, v in per_test.items())
    )

    # 2. the test split: a real shift
    st = mon.sample(mon.prepare(X["test"]), y["test"])
    res_test = run_windows(st, windows_from(len(X["test"]), 200, 200, rng))
    val_prev = yv.mean()
    res_test_bal = run_windows(st, prevalence_windows(y["test"], 200, 200, val_prev, rng))
    print("\n2. Test split (different prevalence and acquisition), windows of 200")
    print(f"   test prevalence {y['test'].mean():.1%} vs val {val_prev:.1%}")
    print(
        f"   test resamples:                              alarm {rate(res_test):.1%}  warn-or-alarm {rate(res_test, ('alarm', 'warn')):.1%}"
    )
    print(
        f"   test resampled to the val prevalence ({val_prev:.0%}): alarm {rate(res_test_bal):.1%}  (what remains is covariate shift)"
    )
    for name, rs in (("test", res_test), ("test @val prevalence", res_test_bal)):
        pt = {k: np.mean([r["p_values"][k] < info.alpha for r in rs]) for k in rs[0]["p_values"]}
        print(f"   per-test p<0.05 ({name}): " + ", ".join(f"{k} {v:.0%}" for k, v in pt.items()))
    feats = {}
    for r in res_test:
        for f in r.get("top_features", [])[:1]:
            feats[f["feature"]] = feats.get(f["feature"], 0) + 1
    print(
        "   most drifted feature per window (count): "
        + ", ".join(f"{k} {v}" for k, v in sorted(feats.items(), key=lambda kv: -kv[1])[:4])
    )
    est_t = np.mean([{**r["estimated"], **r["estimate_withheld"]}["auc"] for r in res_test])
    real_t = np.nanmean([r["realized"]["auc"] for r in res_test])
    est_ta = np.mean([{**r["estimated"], **r["estimate_withheld"]}["acc"] for r in res_test])
    real_ta = np.nanmean([r["realized"]["acc"] for r in res_test])
    print(
        f"   label-free estimate on test windows: AUC est {est_t:.3f} vs realized {real_t:.3f}; ACC est {est_ta:.3f} vs realized {real_ta:.3f}"
    )
    pt_raw = {k: np.mean([r["p_values"][k] < info.alpha for r in res_test]) for k in res_test[0]["p_values"]}
    pt_bal = {
        k: np.mean([r["p_values"][k] < info.alpha for r in res_test_bal]) for k in res_test_bal[0]["p_values"]
    }
    print(
        "   explanation: the test split differs from train/val in two ways at once.\n"
        f"   - prior shift: fewer pneumonia cases ({y['test'].mean():.0%} vs {val_prev:.0%}); once labels arrive the "
        f"label_shift test sees it in {pt_raw['label_shift']:.0%} of windows (it escalates ok -> warn, hence\n"
        f"     warn-or-alarm {rate(res_test, ('alarm', 'warn')):.0%}), and the confidence distribution moves "
        f"with the class mix (confidence test {pt_raw['confidence']:.0%}).\n"
        "   - covariate shift: resampled to the val prevalence the prior shift is gone (label_shift "
        f"{pt_bal['label_shift']:.0%}, confidence {pt_bal['confidence']:.0%}),\n"
        f"     yet the embeddings (MMD {pt_bal['embedding_mmd']:.0%}) and the predicted classes "
        f"({pt_bal['predicted_class']:.0%}: the model calls more test images pneumonia at equal prevalence)\n"
        "     still differ: the test images were acquired differently. At the test's own prevalence the two effects\n"
        f"     partly cancel in the predicted-class share (that test fires in only {pt_raw['predicted_class']:.0%}); "
        f"alarm rate {rate(res_test):.0%} at the test's prevalence, {rate(res_test_bal):.0%} at the val prevalence\n"
        "     (per-window alarms at the per-deployment level, alpha*delta: a mild shift like this one is the stream\n"
        "     test's job, benchmarks/bench_monitor_guarantee.py)."
    )

    # 3. generated shifts: detection rate vs window size
    sizes = [50, 100, 200, 500]
    print(
        "\n3. Detection rate (alarm) of generated moderate shifts applied to val images; windows per cell: "
        "100 (n=200), 40 (others)\n   severity as PSNR against the clean images (inf: pixels unchanged); "
        "realized AUC/ACC change vs the same clean windows; top feature = most often the most drifted"
    )
    print(
        f"   {'shift':<24}{'PSNR':>6}  "
        + "".join(f"n={n:<6}" for n in sizes)
        + "  est AUC / real AUC (change) / est ACC / real ACC (change) at n=200   top feature"
    )

    def mean_of(rs, kind, m):
        # a withheld label-free estimate still has its number (estimate_withheld): the direction check uses it
        rows = [{**r["estimated"], **r["estimate_withheld"]} if kind == "estimated" else r[kind] for r in rs]
        return float(np.nanmean([row[m] for row in rows]))

    def paired_change(rs, idxs, m):
        """Realized metric change against the clean val images of the very same windows."""
        clean = [realized_on(sv, idx, m) for idx in idxs]
        return float(np.nanmean([r["realized"][m] for r in rs]) - np.nanmean(clean))

    def realized_on(sample, idx, m):
        from closedloop.monitoring.estimate import realized

        w = sample.take(idx)
        return realized([m], w.labels, w.proba, info.problem_type, info.threshold)[m]

    ref_est = {m: mean_of(res_val, "estimated", m) for m in ("auc", "acc")}
    det200, idx200 = {}, {}
    all_shifts = {**SHIFTS, "prevalence 74% -> 40%": None}
    for name, fn in all_shifts.items():
        if fn is None:
            s, db = sv, float("inf")
            idx_for = lambda n, k: prevalence_windows(yv, n, k, 0.40, rng)  # noqa: E731
        else:
            Xs = fn(Xv)
            s, db = mon.sample(mon.prepare(Xs), yv), psnr(Xs, Xv)
            idx_for = lambda n, k: windows_from(len(Xv), n, k, rng)  # noqa: E731
        row = []
        for n in sizes:
            idxs = idx_for(n, 100 if n == 200 else 40)
            rs = run_windows(s, idxs)
            row.append(rate(rs))
            if n == 200:
                det200[name], idx200[name] = rs, idxs
        rs, idxs = det200[name], idx200[name]
        top: dict[str, int] = {}
        for r in rs:
            if r["alert"] == "alarm" and r.get("top_features"):
                f = r["top_features"][0]["feature"]
                top[f] = top.get(f, 0) + 1
        top_f = max(top, key=top.get) if top else "-"
        print(
            f"   {name:<24}{db:>6.1f}  "
            + "".join(f"{v:<8.0%}" for v in row)
            + f"  {mean_of(rs, 'estimated', 'auc'):.3f} / {mean_of(rs, 'realized', 'auc'):.3f} "
            f"({paired_change(rs, idxs, 'auc'):+.3f}) / {mean_of(rs, 'estimated', 'acc'):.3f} / "
            f"{mean_of(rs, 'realized', 'acc'):.3f} ({paired_change(rs, idxs, 'acc'):+.3f})   {top_f}"
        )
    worst = min(np.mean([r["alert"] == "alarm" for r in rs]) for rs in det200.values())
    print(
        f"   lowest detection rate at n=200 over the {len(det200)} shift kinds: {worst:.0%} (target >= 90%)"
    )

    # 4. label-free estimate on in-distribution windows
    res_lab = run_windows(sv, windows_from(len(Xv), 200, 200, rng))
    print(
        "\n4. Label-free performance estimate (CBPE) on 200 in-distribution windows of 200 (target |error| <= 0.03)"
    )
    spread = {}
    for m in ("auc", "acc"):
        e = np.array([{**r["estimated"], **r["estimate_withheld"]}[m] for r in res_lab])
        rl = np.array([r["realized"][m] for r in res_lab])
        spread[m] = float(np.std(rl))
        cover = np.mean(
            [
                r["estimated_interval"][m][0] <= r["realized"][m] <= r["estimated_interval"][m][1]
                for r in res_lab
                if r["estimated_interval"]  # withheld estimates have no interval
            ]
        )
        print(f"   {m}: mean estimate {e.mean():.3f}, mean realized {rl.mean():.3f}, bias {np.mean(e - rl):+.3f}, "
              f"mean |error| per window {np.mean(np.abs(e - rl)):.3f}, max |error| {np.max(np.abs(e - rl)):.3f}, "
              f"windows within 0.03: {np.mean(np.abs(e - rl) <= 0.03):.1%}, "
              f"95% interval coverage {cover:.0%}, realized spread (SD) per window {spread[m]:.3f}")  # fmt: skip
    print(
        "   direction under shift: estimated vs realized change from in-distribution (mean over windows of 200).\n"
        "   A direction is judged only where the realized change exceeds the in-distribution per-window spread\n"
        f"   of the realized metric (SD: AUC {spread['auc']:.3f}, ACC {spread['acc']:.3f}); smaller changes are noise,\n"
        "   their sign means nothing ('noise'). Moderate shifts from section 3, then stronger versions of each kind."
    )
    base_r = {m: mean_of(res_lab, "realized", m) for m in ("auc", "acc")}
    direction: dict[str, list[dict[str, float]]] = {}
    for name, rs in det200.items():
        direction[name] = rs
    for name, fn in {**STRONG, "prevalence 74% -> 20%": None}.items():
        if fn is None:
            s = sv
            idxs = prevalence_windows(yv, 200, 50, 0.20, rng)
        else:
            s = mon.sample(mon.prepare(fn(Xv)), yv)
            idxs = windows_from(len(Xv), 200, 50, rng)
        direction[name] = run_windows(s, idxs)
    tally = {"right": 0, "wrong": 0, "noise": 0}
    by_metric = {m: {"right": 0, "wrong": 0} for m in ("auc", "acc")}
    wrong: list[tuple[str, str, float, float]] = []
    print(f"     {'shift':<24}{'AUC est':>9}{'real':>8}  {'':<10}{'ACC est':>9}{'real':>8}")
    for name, rs in direction.items():
        cells = []
        for m in ("auc", "acc"):
            de = mean_of(rs, "estimated", m) - ref_est[m]
            dr = mean_of(rs, "realized", m) - base_r[m]
            if abs(dr) <= spread[m]:
                verdict = "noise"
                tally["noise"] += 1
            elif np.sign(de) == np.sign(dr):
                verdict = "right"
                tally["right"] += 1
                by_metric[m]["right"] += 1
            else:
                verdict = "WRONG"
                tally["wrong"] += 1
                by_metric[m]["wrong"] += 1
                flagged = float(np.mean([not r.get("estimate_reliable", True) for r in rs]))
                wrong.append((name, m, float(np.mean([r["alert"] == "alarm" for r in rs])), flagged))
            cells.append(f"{de:>+9.3f}{dr:>+8.3f}  {verdict:<10}")
        print(f"     {name:<24}" + "".join(cells))
    judged = tally["right"] + tally["wrong"]
    print(
        f"   direction right in {tally['right']} of {judged} judged cases "
        f"({tally['noise']} within noise, not judged): "
        + ", ".join(f"{m.upper()} {v['right']}/{v['right'] + v['wrong']}" for m, v in by_metric.items())
    )
    if wrong:
        print(
            "   wrong: "
            + ", ".join(
                f"{n} ({m.upper()}; drift alarm in {a:.0%} of its windows, estimate flagged unreliable in {f:.0%})"
                for n, m, a, f in wrong
            )
            + ".\n   There the model stays confident while its accuracy falls: calibration no longer holds, "
            "which a\n   confidence-based estimate cannot see; the drift alarm is the primary signal."
        )

    # 5. speed
    X1000 = X["test"][:624]
    X1000 = np.concatenate([X1000, X["val"][: 1000 - len(X1000)]])
    mon.check(X1000)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        mon.check(X1000)
        times.append(time.perf_counter() - t)
    print(f"\n5. Checking 1,000 images in one window (embedding + all tests + estimate): median {np.median(times):.2f}s, "
          f"min {min(times):.2f}s over 5 runs (2 cores shared with other jobs; target <= 1 s)")  # fmt: skip
    draw_timeline(mon, X, y)
    print(f"total time {time.time() - t0:.0f}s")


def draw_timeline(mon: Monitor, X: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> None:
    """The drift timeline figure on a val -> test -> brightness stream, windows of 100, with the
    profile's stream test (the default: the fixed-reference test, a look every 200 rows)."""
    stream = np.concatenate([X["val"][:400], X["test"][:400], SHIFTS["brightness +20"](X["val"][100:500])])
    labels = np.concatenate([y["val"][:400], y["test"][:400], y["val"][100:500]])
    res = mon.check_stream(stream, window=100, labels=labels)
    fig = res.plot(ROOT / "docs" / "results" / "monitor_timeline.png")
    print(
        f"\nstream val(400) -> test(400) -> brightness+20(400), windows of 100: {[w['alert'] for w in res.windows]}"
    )
    st = res.stream
    print(
        f"stream test '{st['test']}' (delta {st.get('delta')}): alarm {st['alarm']} at row {st['alarm_at']}, "
        f"evidence at 1/alpha from row {st.get('evidence_at')}; looks {st.get('looks')}, "
        f"statistic per window: {[round(w['stream']['e_value'], 2) for w in res.windows]} "
        f"(alarm at {st['threshold']:g} = 1/(alpha*delta) per deployment; estimate withheld from {1 / st['alpha']:g} = 1/alpha)"
    )
    print("estimate withheld per window: " + str([",".join(w["estimate_flags"]) or "-" for w in res.windows]))
    print(f"timeline figure: {fig.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
