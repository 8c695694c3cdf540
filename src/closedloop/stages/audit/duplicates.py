"""Check 3, duplicates and leakage between splits.

Exact duplicates: a content hash per sample (bytes of the image, or the row's values), within and
across splits. Near duplicates across splits: nearest neighbours of val/test samples among train
(and of test among val) in a cheap embedding (standardized, downsampled pixels projected on a PCA),
with a nearest-neighbour index: memory O(n), never an n x n matrix. Train/test overlap is an error.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field
from sklearn.neighbors import NearestNeighbors

from closedloop.stages.audit.base import AuditCheck, AuditContext, CheckConfig, CheckResult, Severity
from closedloop.stages.audit.features import class_labels, dup_embedding
from closedloop.stages.audit.plots import montage

COLUMNS = ["split_a", "index_a", "split_b", "index_b", "distance", "kind"]
ORDER = {"train": 0, "val": 1, "test": 2}


class DuplicatesConfig(CheckConfig):
    near: bool = True
    """Also search near duplicates across splits (embedding nearest neighbours)."""
    max_distance: float = Field(0.125, ge=0)
    """Embedding distance (unit-norm standardized vectors, so 0..2) under which two samples are near
    duplicates. Calibrated on digits and PneumoniaMNIST: copies with Gaussian noise (sd 8/255) or a
    brightness/contrast change fall under 0.12; the closest distinct cross-split images are above 0.13.
    Spatial translations are not detected (the embedding is not shift-invariant)."""
    n_components: int = Field(32, ge=2)
    """PCA dimensions of the near-duplicate embedding."""
    overlap_severity: Severity = "error"
    """Severity of train/test overlap (exact or near)."""


def content_hashes(split: Any) -> list[bytes]:
    """One digest per sample: image bytes, or the row's values (missing values hash equal)."""
    X = split.X
    if isinstance(X, pd.DataFrame):
        h = pd.util.hash_pandas_object(X, index=False).to_numpy()
        return [int(v).to_bytes(8, "little") for v in h]
    flat = np.ascontiguousarray(X).reshape(len(X), -1)
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]


class Duplicates(AuditCheck):
    """Exact duplicates within/across splits and near duplicates across splits."""

    name = "duplicates"
    applies_to = frozenset({"images", "table"})
    Config = DuplicatesConfig
    needs_test = True

    def run(self, data: Any, task: Any, ctx: AuditContext) -> CheckResult:
        cfg: DuplicatesConfig = self.config  # type: ignore[assignment]
        splits = ctx.splits(
            with_test=True, reason="exact and near duplicates between test inputs and train/val"
        )
        groups: dict[bytes, list[tuple[str, int]]] = defaultdict(list)
        for name, split in splits.items():
            for i, h in enumerate(content_hashes(split)):
                groups[h].append((name, i))
        rows: list[tuple[str, int, str, int, float, str]] = []
        for members in groups.values():
            if len(members) > 1:
                anchor = members[0]  # a star, not all pairs: k copies give k-1 rows
                rows += [(anchor[0], anchor[1], m[0], m[1], 0.0, "exact") for m in members[1:]]
        exact_pairs = {(a, i, b, j) for a, i, b, j, _, _ in rows}
        if cfg.near:
            emb = dup_embedding(ctx, splits, data.kind, cfg.n_components)
            for ref, queries in (("train", ("val", "test")), ("val", ("test",))):
                if len(emb[ref]) == 0:
                    continue
                nn = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(emb[ref])
                for q in queries:
                    if len(emb[q]) == 0:
                        continue
                    dist, idx = nn.kneighbors(emb[q])
                    for j in np.flatnonzero(dist[:, 0] <= cfg.max_distance):
                        i = int(idx[j, 0])
                        if (ref, i, q, int(j)) not in exact_pairs:
                            rows.append((ref, i, q, int(j), round(float(dist[j, 0]), 5), "near"))
        # order each pair train < val < test so "split_a" is the earlier split
        rows = [r if ORDER[r[0]] <= ORDER[r[2]] else (r[2], r[3], r[0], r[1], r[4], r[5]) for r in rows]
        df = pd.DataFrame(rows, columns=COLUMNS).astype(
            {"index_a": "int64", "index_b": "int64", "distance": "float64"}
        )
        df = df.sort_values(["split_a", "split_b", "distance", "index_a"]).reset_index(drop=True)
        res = CheckResult(tables={"duplicates": df})
        res.findings += self._findings(df, splits, cfg)
        pairs = {
            f"{a}-{b}": int(((df.split_a == a) & (df.split_b == b)).sum())
            for a in ORDER
            for b in ORDER
            if ORDER[a] <= ORDER[b]
        }
        res.metrics.update(
            {
                "pairs": pairs,
                "n_exact": int((df.kind == "exact").sum()),
                "n_near": int((df.kind == "near").sum()),
            }
        )
        if data.kind == "images" and len(df):
            self._montage(df, splits, ctx, res)
        return res

    def _findings(self, df: pd.DataFrame, splits: dict[str, Any], cfg: DuplicatesConfig) -> list[Any]:
        out = []
        for a, b in (
            ("train", "test"),
            ("val", "test"),
            ("train", "val"),
            ("train", "train"),
            ("val", "val"),
            ("test", "test"),
        ):
            sub = df[(df.split_a == a) & (df.split_b == b)]
            if not len(sub):
                continue
            n_ex, n_near = int((sub.kind == "exact").sum()), int((sub.kind == "near").sum())
            n_b = int(sub.index_b.nunique())
            what = f"{n_ex} exact" + (f" and {n_near} near" if n_near else "")
            examples = sub.head(5)[["index_a", "index_b", "distance"]].to_dict("records")
            if a == b:
                conflict = self._conflicts(sub, splits[a])
                msg = f"{what} duplicate(s) within {a}"
                msg += f"; {conflict} of them with different labels" if conflict else ""
                sev: Severity = "warning" if conflict or n_ex / max(len(splits[a]), 1) > 0.01 else "info"
                out.append(
                    self.finding(sev, msg, pairs=len(sub), conflicting_labels=conflict, examples=examples)
                )
            elif b == "test":
                sev = cfg.overlap_severity if a == "train" else "warning"
                msg = (
                    f"{a}/test overlap: {n_b} test sample(s) ({n_b / max(len(splits['test']), 1):.1%}) have {what} "
                    f"duplicate(s) in {a}. Test scores on them measure memory, not generalization: remove them "
                    "from train (drop_duplicates: true) or de-duplicate the source, and split by patient/source."
                )
                out.append(self.finding(sev, msg, pairs=len(sub), test_samples=n_b, examples=examples))
            else:
                msg = (
                    f"train/val overlap: {n_b} val sample(s) ({n_b / max(len(splits['val']), 1):.1%}) have {what} "
                    "duplicate(s) in train: validation scores (model selection, early stopping) are optimistic."
                )
                out.append(self.finding("warning", msg, pairs=len(sub), val_samples=n_b, examples=examples))
        if not len(df):
            out.append(
                self.finding(
                    "info", "no exact duplicates within or across splits and no near duplicates across splits"
                )
            )
        return out

    @staticmethod
    def _conflicts(sub: pd.DataFrame, split: Any) -> int:
        y = class_labels(split.y)
        if y is None:
            y = np.asarray(split.y).reshape(len(split.y), -1)
            return int(
                sum(not np.array_equal(y[i], y[j]) for i, j in zip(sub.index_a, sub.index_b, strict=True))
            )
        return int((y[sub.index_a.to_numpy(int)] != y[sub.index_b.to_numpy(int)]).sum())

    def _montage(self, df: pd.DataFrame, splits: dict[str, Any], ctx: AuditContext, res: CheckResult) -> None:
        cross = df[df.split_a != df.split_b]
        show = (cross if len(cross) else df).head(8)
        imgs, titles = [], []
        for r in show.itertuples():
            imgs += [splits[r.split_a].X[int(r.index_a)], splits[r.split_b].X[int(r.index_b)]]
            titles += [f"{r.split_a} #{r.index_a}", f"{r.split_b} #{r.index_b} d={r.distance:.3f}"]
        ncols = 4
        nrows = (len(imgs) + ncols - 1) // ncols
        montage(
            imgs, titles, [""] * nrows, ncols, ctx.figures_dir / "duplicates.png", "duplicate pairs (a, b)"
        )
        res.figures["duplicates.png"] = (
            "Duplicate pairs side by side (cross-split pairs first), with distance."
        )
