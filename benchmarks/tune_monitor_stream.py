"""Issue 19, stream-test variants on the DEVELOPMENT half of the test split (never the report half).

The model and deployments of bench_monitor_guarantee.py (its --workdir, trained once): each of 20
draws takes 262 unseen images as held-out rows (the stream's calibration scores); per draw, 5 unseen
in-distribution streams of 2,000 rows (false alarms) and 5 test-distribution streams of 600 rows (three
windows of 200 from the dev half, each without repeats: detection within 600 rows).

``bets``: betting functions (histogram bins / weight of the histogram), the default first.
``pcs``: the default bet with the first 0 / 2 / 4 embedding PCA components (fitted on the held-out rows)
added as stream scores beside the confidence and P(positive).
``p1``: the default bet on P(positive) alone beside the default (confidence and P(positive)): for a
binary task the confidence is a function of P(positive), so its martingale may only halve the mean.
Output: docs/results/monitor_stream_dev.txt.

Run: PYTHONPATH=src .venv/bin/python benchmarks/tune_monitor_stream.py bets|pcs|p1 THRESHOLD
(THRESHOLD: the run's shipped decision threshold, as the profile uses)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

WORKDIR = Path("/tmp/mon19/r2500")
VARIANTS = {
    "base 10/.5": ((10, 0.5),),
    "2,5,10 /.5": ((2, 0.5), (5, 0.5), (10, 0.5)),
    "2,10 /.5": ((2, 0.5), (10, 0.5)),
    "3/.9,10/.5": ((3, 0.9), (10, 0.5)),
    "5,10,20 /.5": ((5, 0.5), (10, 0.5), (20, 0.5)),
    "2,4/.5 .9": ((2, 0.5), (4, 0.5), (2, 0.9), (4, 0.9)),
}


def outputs() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings and probabilities of the unseen images and of the dev half of the test split."""
    from bench_monitor_guarantee import npz_path, trained_run

    cache = WORKDIR / "stream_outputs.npz"
    if not cache.exists():
        from closedloop.models.trained import TrainedModel
        from closedloop.monitoring.profile import forward_all

        run, Xu, _ = trained_run(WORKDIR, 2500)
        model = TrainedModel.load(next(run.glob("stages/*_train/artifacts/model")))
        z = np.load(npz_path())
        eu, pu = forward_all(model, Xu.astype(np.float32))
        et, pt = forward_all(model, z["test_images"][..., None].astype(np.float32))
        np.savez(cache, pu=pu, pt=pt, eu=eu, et=et)
    c = np.load(cache)
    perm = np.random.default_rng(19).permutation(len(c["pt"]))  # bench_monitor_guarantee's halves
    dev = np.sort(perm[: len(perm) // 2])
    return c["pu"], c["eu"], c["pt"][dev], c["et"][dev]


def main() -> None:
    from closedloop.monitoring.stream import StreamTest, stream_scores

    mode, thr = sys.argv[1], float(sys.argv[2])
    pu, eu, pt, et = outputs()

    def scores(p: np.ndarray, e: np.ndarray, mean: np.ndarray, comps: np.ndarray, k: int) -> dict:
        s = stream_scores(p, "binary", thr)
        if k < 0:  # P(positive) alone
            return {"positive_probability": s["positive_probability"]}
        z = (e - mean) @ comps[:k].T
        return s | {f"pc{j}": z[:, j] for j in range(k)}

    runs = [(name, bets, 0) for name, bets in VARIANTS.items()] if mode == "bets" else []
    runs += [(f"PCs {k}", VARIANTS["base 10/.5"], k) for k in (0, 2, 4)] if mode == "pcs" else []
    runs += (
        [("base 10/.5", VARIANTS["base 10/.5"], 0), ("P(positive) only", VARIANTS["base 10/.5"], -1)]
        if mode == "p1"
        else []
    )
    for name, bets, k in runs:
        fa, det, at = [], [], []
        for d in range(20):
            rng = np.random.default_rng([19, d])
            pm = rng.permutation(len(pu))
            pool, rest = pm[:262], pm[262:]
            mean = eu[pool].mean(0)
            _, _, vt = np.linalg.svd(eu[pool] - mean, full_matrices=False)
            cal = scores(pu[pool], eu[pool], mean, vt, k)
            for o in range(5):
                st = StreamTest(cal, 0.05, seed=[d, 1, o], bets=bets)
                order = rng.permutation(rest)[:2000]
                for s in range(0, 2000, 200):
                    st.update(scores(pu[order[s : s + 200]], eu[order[s : s + 200]], mean, vt, k))
                fa.append(st.alarm_at is not None)
                st = StreamTest(cal, 0.05, seed=[d, 2, o], bets=bets)
                for _ in range(3):
                    w = rng.choice(len(pt), 200, replace=False)
                    st.update(scores(pt[w], et[w], mean, vt, k))
                det.append(st.alarm_at is not None and st.alarm_at <= 600)
                at.append(st.alarm_at or 9999)
        print(
            f"{name:<14} null FA {np.mean(fa):.1%} of {len(fa)}; detect<=600 {np.mean(det):.0%} of {len(det)}; "
            f"median at {np.median(at):.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
