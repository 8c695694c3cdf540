"""Check 2, class balance: counts per class and split, imbalance ratio, and whether the class mix of
val/test differs from train (which moves every threshold-based metric)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field
from scipy.stats import chi2_contingency

from closedloop.stages.audit.base import AuditCheck, AuditContext, CheckConfig, CheckResult, CheckSkipped
from closedloop.stages.audit.features import class_labels
from closedloop.stages.audit.plots import new_figure, save


class ClassBalanceConfig(CheckConfig):
    minority_warning: float = Field(0.02, gt=0, lt=0.5)
    """A class with a smaller train share than this is a warning (too few examples to learn it)."""
    mix_shift_warning: float = Field(0.05, gt=0, lt=1)
    """A split whose class shares differ from train by more than this (total variation) is a warning
    when the difference is also significant (chi-square p < ``alpha``)."""
    alpha: float = Field(0.001, gt=0, lt=1)


class ClassBalance(AuditCheck):
    """Counts per class and split; differing class mixes between splits."""

    name = "class_balance"
    applies_to = frozenset({"images", "table"})
    Config = ClassBalanceConfig
    needs_test = True

    def run(self, data: Any, task: Any, ctx: AuditContext) -> CheckResult:
        cfg: ClassBalanceConfig = self.config  # type: ignore[assignment]
        splits = ctx.splits(with_test=True, reason="class counts of the test split")
        names = list(task.label_names) if task is not None else list(data.meta.label_names)
        ys = {k: np.asarray(s.y) for k, s in splits.items()}
        multilabel = all(y.ndim == 2 and y.shape[1] > 1 for y in ys.values())
        labels = {k: class_labels(y) for k, y in ys.items()}
        if multilabel:
            counts = {k: y.reshape(len(y), -1).sum(0).astype(int) for k, y in ys.items()}
            totals = {k: len(y) for k, y in ys.items()}
        elif all(v is not None for v in labels.values()) and (task is None or task.is_classification):
            k_max = max(int(v.max()) + 1 if len(v) else 0 for v in labels.values())  # type: ignore[union-attr]
            k_max = max(k_max, len(names))
            counts = {k: np.bincount(v, minlength=k_max) for k, v in labels.items()}  # type: ignore[arg-type]
            totals = {k: int(c.sum()) for k, c in counts.items()}
        else:
            raise CheckSkipped("class balance needs class labels; this target is continuous (regression)")
        K = len(next(iter(counts.values())))
        names = names + [str(i) for i in range(len(names), K)]
        res = CheckResult()
        rows = []
        for c in range(K):
            row: dict[str, Any] = {"class": names[c]}
            for k in counts:
                row[f"{k}_count"] = int(counts[k][c])
                row[f"{k}_share"] = round(counts[k][c] / max(totals[k], 1), 4)
            rows.append(row)
        res.tables["class_counts"] = pd.DataFrame(rows)
        tr = counts["train"] / max(totals["train"], 1)
        nz = counts["train"][counts["train"] > 0]
        ratio = float(nz.max() / nz.min()) if len(nz) else float("nan")
        res.metrics["imbalance_ratio"] = round(ratio, 3)
        res.metrics["shares"] = {
            k: [round(float(v) / max(totals[k], 1), 4) for v in c] for k, c in counts.items()
        }
        res.findings.append(
            self.finding(
                "info",
                f"train class counts {dict(zip(names, counts['train'].tolist(), strict=True))}; "
                f"imbalance ratio (largest/smallest) {ratio:.2f}",
                counts={k: c.tolist() for k, c in counts.items()},
            )
        )
        small = [names[c] for c in range(K) if tr[c] < cfg.minority_warning]
        if small:
            res.findings.append(
                self.finding(
                    "warning",
                    f"class(es) {small} have under {cfg.minority_warning:.0%} of train: too few examples to learn "
                    "them well; use a rare-class metric (PR-AUC, recall) and consider re-weighting",
                    classes=small,
                )
            )
        if not multilabel:
            for k in counts:
                if k == "train" or totals[k] == 0:
                    continue
                share = counts[k] / totals[k]
                tv = 0.5 * float(np.abs(share - tr).sum())
                table = np.stack([counts["train"], counts[k]])
                table = table[:, table.sum(0) > 0]
                p = float(chi2_contingency(table)[1]) if table.shape[1] > 1 else 1.0
                res.metrics[f"mix_tv_{k}"] = round(tv, 4)
                if tv > cfg.mix_shift_warning and p < cfg.alpha:
                    c = int(np.argmax(np.abs(share - tr)))
                    msg = (
                        f"the {k} class mix differs from train (total variation {tv:.3f}, chi-square p={p:.1e}): "
                        f"{names[c]!r} is {share[c]:.1%} of {k} vs {tr[c]:.1%} of train. Ranking metrics (AUC) "
                        "do not depend on prevalence, but accuracy, precision/PPV, F1 and any threshold tuned on "
                        f"train/val do: expect them to differ on {k}, and choose the threshold for the deployment "
                        "prevalence, not the train one."
                    )
                    res.findings.append(self.finding("warning", msg, split=k, total_variation=tv, p_value=p))
        fig, ax = new_figure(max(4.0, 0.5 * K + 2), 3)
        width = 0.8 / len(counts)
        for j, (k, c) in enumerate(counts.items()):
            ax.bar(np.arange(K) + j * width, c / max(totals[k], 1), width, label=f"{k} (n={totals[k]})")
        ax.set_xticks(
            np.arange(K) + 0.4 - width / 2, [n[:12] for n in names], rotation=45 if K > 6 else 0, fontsize=7
        )
        ax.set_ylabel("share of split")
        ax.legend(fontsize=7)
        save(fig, ctx.figures_dir / "class_balance.png")
        res.figures["class_balance.png"] = "Class shares per split."
        return res
