"""Check 8, is the data enough? A learning curve of a quick model on 10/25/50/100% of train, scored on
val, a power law ``error = a * n^-b`` fitted to it, and what doubling the data would add (bootstrap
over repeated subsamples gives the uncertainty). The power law without a floor is optimistic."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field
from sklearn.linear_model import LogisticRegression, Ridge

from closedloop.stages.audit.base import AuditCheck, AuditContext, CheckConfig, CheckResult, CheckSkipped
from closedloop.stages.audit.features import class_labels, model_features
from closedloop.stages.audit.plots import new_figure, save


class LearningCurveConfig(CheckConfig):
    fractions: list[float] = Field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0])
    """Shares of train used."""
    repeats: int = Field(3, ge=1)
    """Random subsamples per fraction (below 100%)."""
    max_train: int = Field(20000, ge=50)
    """Train is subsampled to this first (the curve is then about this many samples)."""
    n_boot: int = Field(200, ge=10)


def _fit_power(n: np.ndarray, err: np.ndarray) -> tuple[float, float]:
    e = np.clip(err, 1e-4, None)
    b, loga = np.polyfit(np.log(n), np.log(e), 1)
    return float(np.exp(loga)), float(-b)


class LearningCurve(AuditCheck):
    """Would more data help? Learning curve, power-law fit and the gain from doubling."""

    name = "learning_curve"
    applies_to = frozenset({"images", "table"})
    Config = LearningCurveConfig

    def run(self, data: Any, task: Any, ctx: AuditContext) -> CheckResult:
        cfg: LearningCurveConfig = self.config  # type: ignore[assignment]
        if task is not None and task.problem_type == "multilabel":
            raise CheckSkipped(
                "the learning curve uses a single-label quick model; multilabel is not supported"
            )
        splits = ctx.splits(with_test=False)
        feats = model_features(ctx, splits, data.kind)
        Xtr, Xva = feats["train"], feats["val"]
        ytr_raw, yva_raw = np.asarray(data.train.y), np.asarray(data.val.y)
        classification = task.is_classification if task is not None else class_labels(ytr_raw) is not None
        ytr = class_labels(ytr_raw) if classification else ytr_raw.astype(float).reshape(-1)
        yva = class_labels(yva_raw) if classification else yva_raw.astype(float).reshape(-1)
        rng = ctx.rng("curve")
        res = CheckResult()
        if len(yva) < 10:  # type: ignore[arg-type]
            hold = rng.permutation(len(ytr))  # type: ignore[arg-type]
            cut = len(hold) // 5
            Xva, yva, Xtr, ytr = Xtr[hold[:cut]], ytr[hold[:cut]], Xtr[hold[cut:]], ytr[hold[cut:]]  # type: ignore[index]
            res.findings.append(
                self.finding(
                    "info", "val has fewer than 10 samples: scored on a 20% hold-out of train instead"
                )
            )
        if len(ytr) > cfg.max_train:  # type: ignore[arg-type]
            keep = rng.choice(len(ytr), cfg.max_train, replace=False)  # type: ignore[arg-type]
            Xtr, ytr = Xtr[keep], ytr[keep]  # type: ignore[index]
        N = len(ytr)  # type: ignore[arg-type]
        rows = []
        for f in sorted(cfg.fractions):
            n = max(int(round(f * N)), 10)
            for r in range(cfg.repeats if f < 1 else 1):
                idx = rng.choice(N, min(n, N), replace=False)
                if classification and len(np.unique(ytr[idx])) < 2:  # type: ignore[index]
                    continue
                m: Any = LogisticRegression(max_iter=300) if classification else Ridge(alpha=1.0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    m.fit(Xtr[idx], ytr[idx])  # type: ignore[index]
                pred = m.predict(Xva)
                err = (
                    float(np.mean(pred != yva))
                    if classification
                    else float(np.sqrt(np.mean((pred - yva) ** 2)))
                )
                rows.append({"n": len(idx), "repeat": r, "error": err})
        if len({r["n"] for r in rows}) < 2:
            raise CheckSkipped("train is too small for a learning curve (fewer than two usable sizes)")
        df = pd.DataFrame(rows)
        res.tables["learning_curve"] = df
        n_arr, e_arr = df.n.to_numpy(float), df.error.to_numpy(float)
        a, b = _fit_power(n_arr, e_arr)
        now = float(df[df.n == df.n.max()].error.mean())
        pred2 = a * (2 * N) ** -b
        boot = []
        brng = np.random.default_rng(0)
        for _ in range(cfg.n_boot):
            s = brng.integers(0, len(df), len(df))
            if len(np.unique(n_arr[s])) < 2:
                continue
            ab, bb = _fit_power(n_arr[s], e_arr[s])
            boot.append(ab * N**-bb - ab * (2 * N) ** -bb)
        gain = a * N**-b - pred2
        lo, hi = np.percentile(boot, [5, 95]) if boot else (np.nan, np.nan)
        what = "val error rate" if classification else "val RMSE"
        res.metrics.update(
            {
                "error_now": round(now, 4),
                "error_at_2x": round(pred2, 4),
                "gain_at_2x": round(gain, 4),
                "gain_90ci": [round(float(lo), 4), round(float(hi), 4)],
                "power_law_b": round(b, 3),
                "n_train": N,
            }
        )
        res.findings.append(
            self.finding(
                "info",
                f"quick-model {what} {now:.3f} with {N} train samples; power law error ~ n^-{b:.2f} predicts "
                f"{pred2:.3f} with twice the data (gain {gain:.3f}, 90% interval {lo:.3f} to {hi:.3f}). "
                + (
                    "More data of the same kind would still help noticeably."
                    if gain > 0.01
                    else "The curve is flat: more of the same data adds little; look at label quality or the model."
                ),
                a=a,
                b=b,
            )
        )
        fig, ax = new_figure(4.5, 3)
        ax.scatter(n_arr, e_arr, s=12, label="quick model (val)")
        grid = np.geomspace(n_arr.min(), 2 * N, 50)
        ax.plot(grid, a * grid**-b, "C1", label=f"power law n^-{b:.2f}")
        ax.axvline(N, color="k", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("train samples")
        ax.set_ylabel(what)
        ax.legend(fontsize=7)
        save(fig, ctx.figures_dir / "learning_curve.png")
        res.figures["learning_curve.png"] = "Learning curve and power-law extrapolation to twice the data."
        return res
