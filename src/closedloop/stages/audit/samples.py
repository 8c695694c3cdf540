"""Check 1, look at samples: a montage per class and split (images); head/dtypes/describe (tables)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from closedloop.report.montage import montage
from closedloop.stages.audit.base import AuditCheck, AuditContext, CheckConfig, CheckResult
from closedloop.stages.audit.features import class_labels


class LookAtSamplesConfig(CheckConfig):
    per_class: int = Field(6, ge=1, le=20)
    """Images per class and split in the montage."""
    max_classes: int = Field(12, ge=1)
    """Classes shown at most (the most frequent)."""
    head_rows: int = Field(10, ge=1)
    """Rows of a table shown."""


class LookAtSamples(AuditCheck):
    """Random examples of each class in each split, so a person looks before any model."""

    name = "samples"
    applies_to = frozenset({"images", "table"})
    Config = LookAtSamplesConfig
    needs_test = True

    def run(self, data: Any, task: Any, ctx: AuditContext) -> CheckResult:
        cfg: LookAtSamplesConfig = self.config  # type: ignore[assignment]
        splits = ctx.splits(with_test=True, reason="montage of test inputs next to train/val")
        res = CheckResult()
        if data.kind == "table":
            X = data.train.X
            res.tables["samples_head"] = X.head(cfg.head_rows).reset_index(names="row")
            res.tables["samples_dtypes"] = pd.DataFrame(
                {"column": X.columns, "dtype": [str(t) for t in X.dtypes]}
            )
            res.tables["samples_describe"] = X.describe(include="all").T.reset_index(names="column")
            res.findings.append(
                self.finding(
                    "info",
                    f"train table: {X.shape[0]} rows x {X.shape[1]} columns",
                    columns=list(X.columns)[:50],
                )
            )
            return res
        names = data.meta.label_names
        rng = ctx.rng("montage")
        for split_name, split in splits.items():
            y = class_labels(split.y)
            imgs, titles, rows = [], [], []
            if y is None:  # multi-label / regression: one row of random images
                idx = rng.choice(len(split), min(len(split), cfg.per_class * 2), replace=False)
                imgs = [split.X[i] for i in idx]
                titles = [str(np.asarray(split.y[i]).round(2).tolist())[:14] for i in idx]
                rows, ncols = [split_name], len(idx)
            else:
                classes = np.argsort(-np.bincount(y))[: cfg.max_classes]
                ncols = cfg.per_class
                for c in sorted(classes):
                    members = np.flatnonzero(y == c)
                    pick = (
                        rng.choice(members, min(len(members), ncols), replace=False) if len(members) else []
                    )
                    row_imgs = [split.X[i] for i in pick]
                    imgs += row_imgs + [np.zeros_like(split.X[0])] * (ncols - len(row_imgs))
                    titles += [f"#{i}" for i in pick] + [""] * (ncols - len(row_imgs))
                    rows.append(names[c] if c < len(names) else str(c))
            if not len(imgs):
                continue
            fname = f"samples_{split_name}.png"
            montage(
                imgs, titles, rows, ncols, ctx.figures_dir / fname, f"{split_name}: random samples per class"
            )
            res.figures[fname] = f"Random {split_name} images per class (index above each)."
        h, w, c = data.image_shape
        res.findings.append(
            self.finding(
                "info", f"images {h}x{w}x{c}; montages of random samples per class for {', '.join(splits)}"
            )
        )
        return res
