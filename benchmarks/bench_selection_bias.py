"""Selection bias of the winner's validation score, estimated vs realized; the test gate before/after.

1. Simulation with known truth, sized like BreastMNIST (78 validation cases; 1 to 30 configurations
   whose true AUCs spread over 0.86..0.90) and like PneumoniaMNIST (524): each repetition draws a validation set, picks the best
   configuration on it, estimates the selection bias with
   :func:`closedloop.stats.selection.selection_bias`, and measures the realized gap (the winner's
   validation AUC minus its true AUC, computed on 20,000 fresh cases). Also N = 1 (no selection).
2. A BreastMNIST run of the shipped config (``configs/breastmnist.yaml``, train stage and what it
   needs): the winner's validation AUC, the estimated bias, the final model's test AUC (the
   realized validation-test gap of one run), and the gate's decision before (Holm over the N
   configurations scored on validation: ``min(1, N p)``) and after (the declared comparison's own p).

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_selection_bias.py [--run RUN_DIR] [--reps 200]
Without ``--run`` it runs ``closedloop run configs/breastmnist.yaml --only train`` first (minutes).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.stats import norm

from closedloop.stats.multiple import holm
from closedloop.stats.selection import SelectionBias, selection_bias

ROOT = Path(__file__).resolve().parents[1]


def _scores(y: np.ndarray, d: float, rng: np.random.Generator) -> np.ndarray:
    """Binormal scores with separation ``d``: true AUC = Phi(d / sqrt(2))."""
    return y * d + rng.normal(size=len(y))


def simulate(n_configs: int, reps: int, n_val: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    true_auc = np.linspace(0.86, 0.90, n_configs) if n_configs > 1 else np.array([0.88])
    d = np.sqrt(2) * norm.ppf(true_auc)
    est, gap, hit = [], [], []
    for r in range(reps):
        y = np.r_[np.zeros(n_val - n_val // 4, int), np.ones(n_val // 4, int)]  # BreastMNIST: 27% malignant
        cands = [_scores(y, dk, rng) for dk in d]
        sb = selection_bias("auc", y, cands, "binary", n_resamples=300, seed=r)
        k = [i for i in range(n_configs) if sb.winner == f"configuration {i}"][0]
        est.append(sb.optimism)
        gap.append(sb.winner_value - true_auc[k])
        hit.append(k == n_configs - 1)
    est_a, gap_a = np.array(est), np.array(gap)
    return {
        "est": float(est_a.mean()),
        "gap": float(gap_a.mean()),
        "gap_se": float(gap_a.std(ddof=1) / np.sqrt(reps)),
        "truly_best_picked": float(np.mean(hit)),
    }


def breast_run(run: Path | None) -> Path:
    if run is not None:
        return run
    out = Path(tempfile.mkdtemp(prefix="bench_selection_")) / "run"
    cmd = [
        sys.executable,
        "-m",
        "closedloop",
        "run",
        str(ROOT / "configs/breastmnist.yaml"),
        "--only",
        "train",
    ]
    subprocess.run([*cmd, "--out", str(out), "--no-cache"], check=True, cwd=ROOT)
    return out


def breast_selection(run: Path) -> SelectionBias:
    """The run's selection bias, recomputed with the current method from the saved validation logits."""
    from closedloop.models.trained import logits_to_proba
    from closedloop.stages.train.selection import candidate_files

    work = next(run.glob("stages/*_train")) / "work"
    y_val = np.load(next(run.glob("stages/*_data")) / "artifacts/data/val.npz")["y"]
    phase = json.loads((work / "phase_cross_validate.json").read_text(encoding="utf-8"))
    chosen = phase["outcome"]["tuned"]["val_logits_file"]
    files = candidate_files(work)
    probas = [logits_to_proba(np.load(work / rel), "binary") for _, rel in files]
    rels = [rel for _, rel in files]
    return selection_bias(
        "auc",
        y_val,
        probas,
        "binary",
        names=[n for n, _ in files],
        winner=rels.index(chosen),
        convention="medmnist",
        n_resamples=1000,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=None, help="a finished BreastMNIST run directory")
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()

    print("== simulation with known truth: true AUCs spread evenly over 0.86..0.90, 25% positive ==")
    print(f"{'n_val':>6} {'N configs':>9} {'est. bias':>10} {'realized gap':>22} {'best truly picked':>18}")
    for n_val, n in ((78, 1), (78, 5), (78, 14), (78, 30), (524, 14)):
        s = simulate(n, args.reps, n_val, seed=n + n_val)
        print(
            f"{n_val:>6} {n:>9} {s['est']:>+10.4f} {s['gap']:>+10.4f} (se {s['gap_se']:.4f}) "
            f"{s['truly_best_picked']:>17.0%}"
        )
    print(
        f"(means over {args.reps} simulated validation sets; realized gap = the winner's validation AUC minus "
        "its true AUC; n_val 78 = BreastMNIST's validation split, 524 = PneumoniaMNIST's)"
    )

    run = breast_run(args.run)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    tr = next(v for v in summary["stages"].values() if isinstance(v, dict) and "beats_baseline" in v)
    bb = tr["beats_baseline"]
    print(f"\n== BreastMNIST, shipped config ({run}) ==")
    sb = breast_selection(run)
    print(
        f"winner ({sb.winner}"
        + ("" if sb.winner_is_best else ", chosen by cross-validation, not the best on validation")
        + f"): validation AUC {sb.winner_value:.4f}, selected among {sb.n_candidates} candidates "
        f"with saved validation predictions ({tr['n_configs']} configurations scored on validation by the train "
        f"stage, {summary.get('n_validation_configs')} in the run incl. baselines)"
    )
    print(
        f"estimated selection bias {sb.optimism:+.4f} (out-of-bootstrap {sb.optimism_out_of_bootstrap:+.4f}, "
        f"in-sample {sb.optimism_in_sample:+.4f}) -> expected on new data {'' if sb.winner_is_best else '>= '}{sb.corrected_value:.4f}; "
        f"winner re-picked in {sb.winner_repick_rate:.0%} of resamples"
    )
    test_auc = tr["test"]["auc"]["value"]
    n_test = bb.get("n") or int(re.search(r"n = (\d+)", bb["sentence"]).group(1))
    se = [(v["auc"]["ci95"][1] - v["auc"]["ci95"][0]) / 3.92 for v in (tr["val"], tr["test"])]
    print(
        f"final model's test AUC {test_auc:.4f} (the chosen configuration refit on train+val, 3 seeds; "
        f"n = {n_test}): realized validation-test gap {sb.winner_value - test_auc:+.4f} "
        f"(+/- {np.hypot(*se):.4f}, one SE from the two 95% intervals), of which the estimate explains "
        f"{sb.optimism:+.4f}"
    )
    p = bb["p_value"]
    for label, n in (("train-stage N", tr["n_configs"]), ("run N", summary.get("n_validation_configs") or 1)):
        p_old = holm([p, *([1.0] * (max(1, n) - 1))])[0]
        print(
            f"gate BEFORE (Holm over the {n} configurations, {label}): p = {p_old:.3f} -> "
            + ("significant" if p_old < 0.05 and bb["delta"] > 0 else "NOT significant")
        )
    print(
        f"gate AFTER (the declared comparison, correction: {bb.get('correction', 'none')}): delta "
        f"{bb['delta']:+.3f}, 95% CI [{bb['ci95'][0]:.3f}, {bb['ci95'][1]:.3f}], one-sided p = {p:.4f} -> "
        + ("significant" if bb["significant"] else "NOT significant")
    )
    print("gate sentence: " + bb["sentence"])


if __name__ == "__main__":
    main()
