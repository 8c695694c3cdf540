"""Check 3, duplicates and leakage between splits.

Exact duplicates: a content hash per sample (bytes of the image, or the row's values), within and
across splits; an exact train/test copy is an error. Near duplicates across splits: nearest
neighbours of val/test samples among train (and of test among val) in a cheap embedding
(standardized, downsampled pixels projected on a PCA), with a nearest-neighbour index: memory O(n),
never an n x n matrix. A near pair is an overlap only in *excess* of the data's own density
(:mod:`closedloop.stages.audit.near_density`): test samples close to train more often than train
samples are close to each other.

Which held-out split the copies sit in matters (validation copies bias model selection, test copies
the reported figure), but both bias a figure, so the held-out splits are judged *together* against
train as well as each alone: val and test pooled ("held-out") warns at half of ``warn_alpha``, each
split alone at a quarter (weighted Bonferroni, :class:`WarnLevels`: any false warning on a randomly split
dataset stays <= ``warn_alpha``), with each split's own rate and p-value and the split of every pair in
the evidence. A strong train/test excess (``excess_alpha``) is an overlap error that stops the run by
default. Before, each of the three looks warned at ``warn_alpha`` on its own: random re-splits of
BreastMNIST gave a warning in 15% of splits (4.5% now; benchmarks/bench_audit_density.py). One small split
rarely proves an excess alone (BreastMNIST: 156 test images, p 0.10) where both together do (234, p 0.021).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field
from scipy.stats import fisher_exact

from closedloop.report.montage import montage
from closedloop.stages.audit.base import AuditCheck, AuditContext, CheckConfig, CheckResult, Severity
from closedloop.stages.audit.features import class_labels, dup_embedding
from closedloop.stages.audit.near_density import NEAR_EXACT, NearExcess, near_excess

COLUMNS = ["split_a", "index_a", "split_b", "index_b", "distance", "kind", "excess"]
ORDER = {"train": 0, "val": 1, "test": 2}


class DuplicatesConfig(CheckConfig):
    near: bool = True
    """Also search near duplicates across splits (embedding nearest neighbours)."""
    max_distance: float = Field(0.125, ge=0)
    """Embedding distance (unit-norm standardized vectors, so 0..2) under which two samples are
    *close*. Copies with Gaussian noise (sd 8/255) or a brightness/contrast change fall under 0.12 on
    digits and PneumoniaMNIST. Close is not copied: a cross-split pair is an overlap only when the
    query split has more close samples than the reference split has within itself (``excess_alpha``).
    Spatial translations are not detected (the embedding is not shift-invariant)."""
    excess_alpha: float = Field(0.001, gt=0, lt=1)
    """One-sided Fisher p-value under which an excess of close test->train pairs over the train->train
    rate is an overlap (``overlap_severity``), when it is also at least ``min_excess`` of test."""
    warn_alpha: float = Field(0.05, gt=0, lt=1)
    """p-value under which a smaller or less certain excess is reported as a warning."""
    min_excess: float = Field(0.01, ge=0, le=1)
    """Smallest excess share of the query split that is an overlap error (below: a warning)."""
    density_quantile: float = Field(0.01, gt=0, lt=1)
    """Where the data is denser than ``max_distance``, the excess is also tested below this quantile of
    the reference split's own nearest-neighbour distances (Bonferroni over the two looks)."""
    null_samples: int = Field(2000, ge=10)
    """At most this many reference samples measure the reference's own nearest-neighbour spacing."""
    n_components: int = Field(32, ge=2)
    """PCA dimensions of the near-duplicate embedding."""
    overlap_severity: Severity = "error"
    """Severity of train/test overlap (exact or near)."""
    nonzero_look: bool = True
    """In a table that repeats rows by itself (a train row equals another train row), also test an
    excess of query rows strictly closer to the reference than its own ``density_quantile`` of non-zero
    nearest-neighbour distances, exact twins and ties at distance 0 set aside (Bonferroni over three
    looks): such a table lies on a grid, and a noisy copy falls below its smallest step (nwtco's planted
    copies: recall 0.000 without it). Images and tables whose train rows are all distinct: no effect."""
    columns_look: bool = True
    """In a table that repeats rows by itself, also test an excess of query rows whose nearest reference
    row (0 < distance <= ``max_distance``) differs from them in more columns than the reference's own
    close pairs do (their ``1 - density_quantile`` quantile of that count): a noisy copy differs a little
    in every column, a natural close pair by whole steps in a few (Car: copies 56-57 of 69 columns,
    natural close pairs 6). For many columns on a grid, where the copies' noise adds up past the
    non-zero look's cut (on by default since session 17: Car's planted recall 0.553 -> 1.000 on development
    seeds, docs/audit.md). Images and tables whose train rows are all distinct: no effect."""
    near_exact_look: bool = True
    """In a table whose train rows are all distinct (where an exact train/test copy is an error on its
    own), also report *near-exact* copies like exact ones: query rows closer to the reference than the
    reference's own nearest-neighbour distances allow, their lower tail read as a power law that
    predicts fewer than ``excess_alpha`` such rows by chance (:func:`near_density.near_exact_cut`). A few
    copies among few rows cannot beat the random-split null of the counted looks (diabetes: 4 planted
    copies among 93 test rows, recall 0.333 without it); one copy with 1% noise sits 20-30x closer to
    its source than any natural pair. Default on since session 18 (declared rule, docs/audit.md).
    Images and tables that repeat rows by themselves: no effect."""
    null_redeals: int = Field(50, ge=0)
    """When a near-duplicate look's Fisher p (x looks) is under ``warn_alpha``: deal the reference and
    query samples again at random this many times (the random split the test's null stands for) and
    measure how much more the close-rate difference varies than Fisher's test assumes for independent
    samples (the design effect: closeness belongs to pairs, not samples); the p-value is then Fisher's
    on counts divided by it. Only ever raises a p-value. 0: Fisher's p as it is (before session 14:
    nwtco's random re-splits warned in 6.0% at a shared level of 5%)."""
    redeal_max_rows: int = Field(20000, ge=0)
    """Re-deals only where reference + query have at most this many samples (each re-deal is a full
    neighbour search: 50 of them took 8 minutes on diamonds' 54,000 rows); above it Fisher's p as it is."""
    combine_looks: Literal["joint", "bonferroni"] = "joint"
    """How a comparison pays for looking two or three ways (distance, ratio, non-zero) when re-deals
    were measured: ``joint``, the chance that the largest of the looks' corrected scores reaches the
    reported look's, with the looks' correlation over the same re-deals (they count the same close
    pairs, so they move together and count as fewer than their number); ``bonferroni``, p x looks (as
    in session 14: diabetes' 4 planted copies were missed at p 0.0144 against 0.0125). Without re-deals
    (``null_redeals: 0``, or above ``redeal_max_rows``) both are Bonferroni."""
    pooled: bool = True
    """Judge val and test together against train as well as each alone, ``warn_alpha`` shared out among
    the looks (:class:`WarnLevels`). False: each split alone, each warning at ``warn_alpha``."""


def content_hashes(split: Any) -> list[bytes]:
    """One digest per sample: image bytes, or the row's values (missing values hash equal)."""
    X = split.X
    if isinstance(X, pd.DataFrame):
        h = pd.util.hash_pandas_object(X, index=False).to_numpy()
        return [int(v).to_bytes(8, "little") for v in h]
    flat = np.ascontiguousarray(X).reshape(len(X), int(np.prod(X.shape[1:])))  # an empty split too
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
        hashes = {name: content_hashes(split) for name, split in splits.items()}
        groups: dict[bytes, list[tuple[str, int]]] = defaultdict(list)
        for name, hs in hashes.items():
            for i, h in enumerate(hs):
                groups[h].append((name, i))
        rows: list[tuple[str, int, str, int, float, str, bool]] = []
        for members in groups.values():
            if len(members) > 1:
                anchor = members[0]  # a star, not all pairs: k copies give k-1 rows
                rows += [(anchor[0], anchor[1], m[0], m[1], 0.0, "exact", True) for m in members[1:]]
        near: dict[tuple[str, str], NearExcess] = {}
        nonzero = columns = exact_look = False
        if cfg.near:
            emb = dup_embedding(ctx, splits, data.kind, cfg.n_components)
            rng = np.random.default_rng(0)
            # a table that repeats rows by itself lies on a grid: the non-zero look (near_density)
            grid = data.kind == "table" and len(set(hashes["train"])) < len(hashes["train"])
            nonzero, columns = cfg.nonzero_look and grid, cfg.columns_look and grid
            # all rows distinct: an exact copy is an error on its own, and so is a near-exact one
            exact_look = cfg.near_exact_look and data.kind == "table" and not grid
            ref_sets = {name: set(hashes[name]) for name in ("train", "val")}
            exact_in = {  # per split: which samples have an exact copy in the reference split
                (ref, q): np.fromiter((h in ref_sets[ref] for h in hashes[q]), bool, len(hashes[q]))
                for ref, q in (("train", "val"), ("train", "test"), ("val", "test"))
            }
            for ref, q in (("train", "val"), ("train", "test"), ("val", "test")):
                if len(emb[ref]) and len(emb[q]):
                    near[(ref, q)] = near_excess(
                        emb[ref], emb[q], hashes[ref], exact_in[(ref, q)], cfg.max_distance,
                        cfg.null_samples, rng, cfg.density_quantile, nonzero,
                        hashes[q], cfg.null_redeals, cfg.warn_alpha, cfg.redeal_max_rows,
                        cfg.combine_looks == "joint", columns, NEAR_EXACT if exact_look else None,
                        cfg.excess_alpha,
                    )  # fmt: skip
            held_out = [q for q in ("val", "test") if ("train", q) in near]
            if cfg.pooled and len(held_out) == 1:  # one held-out split: it is the pooled look
                near[("train", "held-out")] = near[("train", held_out[0])]
            elif cfg.pooled and held_out:
                near[("train", "held-out")] = near_excess(
                    emb["train"],
                    np.concatenate([emb[q] for q in held_out]),
                    hashes["train"],
                    np.concatenate([exact_in[("train", q)] for q in held_out]),
                    cfg.max_distance,
                    cfg.null_samples,
                    np.random.default_rng(0),
                    cfg.density_quantile,
                    nonzero,
                    [h for q in held_out for h in hashes[q]],
                    cfg.null_redeals,
                    cfg.warn_alpha,
                    cfg.redeal_max_rows,
                    cfg.combine_looks == "joint",
                    columns,
                )
            # the pairs marked as the excess: by a split's own look at the level it speaks at, and by
            # the pooled look (mapped back to each held-out split)
            levels = WarnLevels.of(cfg, len(held_out))
            flagged = {
                (ref, q): set(ne.excess_queries(max(levels.own(ref), cfg.excess_alpha)).tolist())
                for (ref, q), ne in near.items()
            }
            for j in _pooled_excess(near, levels.pooled, splits):
                flagged[("train", j[0])].add(j[1])
            for (ref, q), ne in near.items():
                if q == "held-out":
                    continue
                exact_near = set(ne.near_exact_rows.tolist())  # reported like exact copies
                listed = ne.judged & (ne.dist <= cfg.max_distance)
                listed[ne.near_exact_rows] = True  # a near-exact cut may lie above max_distance
                for j in np.flatnonzero(listed):
                    d = round(float(ne.dist[j]), 5)
                    kind = "near_exact" if int(j) in exact_near else "near"
                    excess = int(j) in flagged[(ref, q)] or int(j) in exact_near
                    rows.append((ref, int(ne.index[j]), q, int(j), d, kind, excess))
        # order each pair train < val < test so "split_a" is the earlier split
        rows = [r if ORDER[r[0]] <= ORDER[r[2]] else (r[2], r[3], r[0], r[1], *r[4:]) for r in rows]
        df = pd.DataFrame(rows, columns=COLUMNS).astype(
            {"index_a": "int64", "index_b": "int64", "distance": "float64", "excess": "bool"}
        )
        df = df.sort_values(["split_a", "split_b", "distance", "index_a"]).reset_index(drop=True)
        levels = WarnLevels.of(cfg, sum(("train", q) in near for q in ("val", "test")))
        exact_rates = {}  # tables that repeat rows by themselves: exact copies judged against that rate
        if data.kind == "table":
            for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
                rate = ExactRate.of(hashes[a], hashes[b])
                if rate.n_twins and rate.n_copies:
                    exact_rates[(a, b)] = rate
                    if self._exact_severity(a, b, rate, cfg, levels) == "info":  # not copies: keep them
                        natural = (df.kind == "exact") & (df.split_a == a) & (df.split_b == b)
                        df.loc[natural, "excess"] = False
        res = CheckResult(tables={"duplicates": df})
        res.findings += self._findings(df, splits, cfg, near, levels, exact_rates)
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
                "nonzero_look": bool(cfg.near and nonzero),  # the third look applied (a table on a grid)
                "columns_look": bool(cfg.near and columns),  # the columns look applied (a table on a grid)
                "near_exact_look": bool(cfg.near and exact_look),  # applied (a table with all rows distinct)
                "n_near_exact": int((df.kind == "near_exact").sum()),
                "null_redeals": cfg.null_redeals if cfg.near else 0,
                "redeal_max_rows": cfg.redeal_max_rows,
                "combine_looks": cfg.combine_looks,
                "overlap": {  # exact copies plus near pairs in excess of the data's own density
                    f"{a}-{b}": int(df[(df.split_a == a) & (df.split_b == b) & df.excess].index_b.nunique())
                    for a, b in (("train", "val"), ("train", "test"), ("val", "test"))
                },
                "near_density": {
                    f"{a}-{b}": {
                        "threshold": ne.threshold,
                        "ratio_cut": None if ne.ratio_cut is None else round(ne.ratio_cut, 4),
                        "nonzero_cut": None if ne.nonzero_cut is None else round(ne.nonzero_cut, 5),
                        "columns_cut": ne.columns_cut,
                        f"{b}_close_rate": round(ne.query_rate, 4),
                        f"{a}_within_rate": round(ne.null_rate, 4),
                        "excess": round(ne.excess, 4),
                        "n_excess": ne.n_excess,
                        "p_value": float(f"{ne.p_value:.3g}"),
                        "design_effect": None if ne.design_effect is None else round(ne.design_effect, 3),
                        "looks_counted": round(ne.looks_counted, 3),
                        "near_exact_cut": None
                        if ne.near_exact is None
                        else float(f"{ne.near_exact.cut:.4g}"),
                        "near_exact_rows": len(ne.near_exact_rows),
                        "tail_exponent": None if ne.near_exact is None else round(ne.near_exact.exponent, 3),
                    }
                    for (a, b), ne in near.items()
                },
            }
        )
        if data.kind == "images" and len(df):
            self._montage(df, splits, ctx, res)
        return res

    def _findings(
        self,
        df: pd.DataFrame,
        splits: dict[str, Any],
        cfg: DuplicatesConfig,
        near: dict[tuple[str, str], NearExcess],
        levels: WarnLevels,
        exact_rates: dict[tuple[str, str], ExactRate],
    ) -> list[Any]:
        out = []
        for a, b in (("train", "test"), ("val", "test"), ("train", "val")):
            sub = df[(df.split_a == a) & (df.split_b == b)]
            exact = sub[sub.kind == "exact"]
            ne = near.get((a, b))
            if len(exact):
                n_b = int(exact.index_b.nunique())
                rate = exact_rates.get((a, b))
                sev: Severity = cfg.overlap_severity if (a, b) == ("train", "test") else "warning"
                msg = (
                    f"{a}/{b} overlap: {n_b} {b} sample(s) ({n_b / max(len(splits[b]), 1):.1%}) are exact "
                    f"copies of {a} samples. {_consequence(b)}"
                )
                judged = {}
                if rate is not None:
                    sev = self._exact_severity(a, b, rate, cfg, levels)
                    vs = (
                        f"vs {rate.twin_rate:.1%} of {a} rows equal to another {a} row (the table repeats rows "
                        f"by itself), one-sided Fisher p = {rate.p_value:.2g}"
                    )
                    if sev == "info":
                        msg = (
                            f"{a}/{b}: {rate.n_copies} {b} row(s) ({rate.query_rate:.1%}) equal a {a} row, {vs}: "
                            "no more than the data's own repetition (few, discrete columns), so not an overlap. "
                            "Repeated rows are common cases, not copies; the figures on them are what a "
                            "deployment sees."
                        )
                    else:
                        msg = msg.replace(" are exact copies", f" are exact copies ({vs})", 1)
                    judged = {
                        f"{b}_copy_rate": round(rate.query_rate, 4),
                        f"{a}_repeat_rate": round(rate.twin_rate, 4),
                        "p_value": float(f"{rate.p_value:.3g}"),
                    }
                examples = exact.head(5)[["index_a", "index_b"]].to_dict("records")
                out.append(
                    self.finding(
                        sev, msg, pairs=len(exact), **{f"{b}_samples": n_b}, **judged, examples=examples
                    )
                )
            if ne is not None and len(ne.near_exact_rows):
                out.append(self._near_exact_finding(a, b, sub[sub.kind == "near_exact"], ne, cfg, splits))
            if ne is not None and ne.n_close:
                out.append(self._near_finding(a, b, sub[sub.kind == "near"], ne, cfg, levels))
        pooled = near.get(("train", "held-out"))
        finding = None if pooled is None else self._pooled_finding(pooled, near, splits, cfg, levels)
        if finding is not None:
            out.append(finding)
        for a in ("train", "val", "test"):
            sub = df[(df.split_a == a) & (df.split_b == a)]
            if not len(sub):
                continue
            conflict = self._conflicts(sub, splits[a])
            msg = f"{len(sub)} exact duplicate(s) within {a}"
            what = (
                "target values" if np.asarray(splits[a].y).dtype.kind == "f" else "labels"
            )  # regression: numbers
            msg += f"; {conflict} of them with different {what}" if conflict else ""
            sev = "warning" if conflict or len(sub) / max(len(splits[a]), 1) > 0.01 else "info"
            examples = sub.head(5)[["index_a", "index_b"]].to_dict("records")
            out.append(self.finding(sev, msg, pairs=len(sub), conflicting_labels=conflict, examples=examples))
        if not len(df):
            out.append(
                self.finding(
                    "info", "no exact duplicates within or across splits and no near duplicates across splits"
                )
            )
        return out

    @staticmethod
    def _exact_severity(
        a: str, b: str, rate: ExactRate, cfg: DuplicatesConfig, levels: WarnLevels
    ) -> Severity:
        """Exact copies in a table that repeats rows by itself: judged like a near excess."""
        if rate.p_value < cfg.excess_alpha and rate.excess >= cfg.min_excess:
            return cfg.overlap_severity if (a, b) == ("train", "test") else "warning"
        if rate.p_value < max(levels.own(a), cfg.excess_alpha) and rate.excess:
            return "warning"
        return "info"

    def _near_exact_finding(
        self, a: str, b: str, sub: pd.DataFrame, ne: NearExcess, cfg: DuplicatesConfig, splits: dict[str, Any]
    ) -> Any:
        """Near-exact copies, reported like exact ones: an overlap (train/test: ``overlap_severity``)."""
        cut = ne.near_exact
        assert cut is not None
        n_b = len(ne.near_exact_rows)
        sev: Severity = cfg.overlap_severity if (a, b) == ("train", "test") else "warning"
        msg = (
            f"{a}/{b} overlap: {n_b} {b} row(s) ({n_b / max(len(splits[b]), 1):.1%}) are near-exact copies of "
            f"{a} rows: each within {cut.cut:.3g} of one (embedding distance), where {a}'s own nearest-neighbour "
            f"distances (the smallest {cut.smallest:.3g}; their lower tail read as a power law of exponent "
            f"{cut.exponent:.2f} from the {cut.rows} smallest) predict fewer than {cfg.excess_alpha:g} such "
            f"row(s) by chance. The pairs are marked excess in duplicates.csv (kind near_exact). {_consequence(b)}"
        )
        examples = sub.head(5)[["index_a", "index_b", "distance"]].to_dict("records")
        return self.finding(
            sev,
            msg,
            pairs=len(sub),
            near_exact=n_b,
            n_excess=n_b,
            cut=float(f"{cut.cut:.4g}"),
            tail_exponent=round(cut.exponent, 3),
            tail_rows=cut.rows,
            smallest_within=float(f"{cut.smallest:.4g}"),
            expected_by_chance=cfg.excess_alpha,
            examples=examples,
        )

    @staticmethod
    def _own_severity(a: str, b: str, ne: NearExcess, cfg: DuplicatesConfig, levels: WarnLevels) -> Severity:
        """A split's own look: an overlap with strong evidence (``excess_alpha``, ``min_excess``); a weaker
        excess is a warning at the split's share of ``warn_alpha`` (:class:`WarnLevels`)."""
        if ne.p_value < cfg.excess_alpha and ne.excess >= cfg.min_excess:
            return cfg.overlap_severity if (a, b) == ("train", "test") else "warning"
        if ne.p_value < levels.own(a) and ne.n_excess:
            return "warning"
        return "info"

    def _near_finding(
        self, a: str, b: str, sub: pd.DataFrame, ne: NearExcess, cfg: DuplicatesConfig, levels: WarnLevels
    ) -> Any:
        sev = self._own_severity(a, b, ne, cfg, levels)
        how = ne.criterion
        close = (
            f"{ne.n_close} {b} sample(s) ({ne.query_rate:.1%}) have a near neighbour in {a} ({how}), "
            f"vs {ne.null_rate:.1%} of {a} samples within {a} (the data's own density)"
        )
        if sev == "info" and (ne.p_value >= cfg.warn_alpha or not ne.n_excess or a != "train"):
            msg = (
                f"{a}/{b}: {close}, one-sided p = {ne.p_value:.2g}: no excess over the data's density, so these "
                "are close samples of a dense dataset, not an overlap (the pairs are in duplicates.csv)."
            )
        elif sev == "info":
            msg = (
                f"{a}/{b}: {close}, one-sided p = {ne.p_value:.2g}: an excess of {ne.excess:.1%} of {b}, too "
                f"uncertain for this split alone (it warns at p < {levels.own(a):.3g}, its share of warn_alpha); "
                "the held-out data as a whole is judged in the train/held-out finding."
            )
        else:
            msg = (
                f"{a}/{b} overlap: {close}: an excess of {ne.excess:.1%} of {b} (about {ne.n_excess} sample(s), "
                f"one-sided {_p_words(ne)} p = {ne.p_value:.2g}). The {ne.n_excess} pair(s) most likely to be copies are "
                f"marked excess in duplicates.csv. {_consequence(b)}"
            )
        flagged = sub[sub.excess] if sev != "info" else sub
        examples = flagged.head(5)[["index_a", "index_b", "distance"]].to_dict("records")
        return self.finding(
            sev,
            msg,
            pairs=len(sub),
            **{f"{b}_close_rate": round(ne.query_rate, 4), f"{a}_within_rate": round(ne.null_rate, 4)},
            excess=round(ne.excess, 4),
            n_excess=ne.n_excess,
            p_value=float(f"{ne.p_value:.3g}"),
            design_effect=ne.design_effect,
            looks_counted=round(ne.looks_counted, 3),
            warns_below=levels.own(a),
            examples=examples,
        )

    def _pooled_finding(
        self,
        ne: NearExcess,
        near: dict[tuple[str, str], NearExcess],
        splits: dict[str, Any],
        cfg: DuplicatesConfig,
        levels: WarnLevels,
    ) -> Any | None:
        """The held-out splits together against train: a warning at its share of ``warn_alpha`` with each
        split's own evidence and the split of every pair, unless a split's own look already warned."""
        if ne.p_value >= levels.pooled or not ne.n_excess:
            return None
        each = {q: near[("train", q)] for q in ("val", "test") if ("train", q) in near}
        if any(self._own_severity("train", q, e, cfg, levels) != "info" for q, e in each.items()):
            return None
        excess = _pooled_excess(near, levels.pooled, splits)
        where = {q: sum(s == q for s, _ in excess) for q in each}
        examples = [
            {
                "split": q,
                "index": j,
                "train_index": int(near[("train", q)].index[j]),
                "distance": round(float(near[("train", q)].dist[j]), 5),
            }
            for q, j in excess[:5]
        ]
        alone = "; ".join(
            f"{q} alone {e.n_close} of {e.n_query} ({e.query_rate:.1%}), p = {e.p_value:.2g}"
            for q, e in each.items()
        )
        names = "+".join(each)
        msg = (
            f"train/held-out: {ne.n_close} of {ne.n_query} {names} samples ({ne.query_rate:.1%}) have a near "
            f"neighbour in train ({ne.criterion}), vs {ne.null_rate:.1%} of train samples within train: an excess "
            f"of {ne.excess:.1%} (about {ne.n_excess} sample(s), one-sided {_p_words(ne)} p = {ne.p_value:.2g} < "
            f"{levels.pooled:.3g}, this look's share of warn_alpha); {alone}. "
            f"The {ne.n_excess} pair(s) most likely to be copies ("
            + ", ".join(f"{n} in {q}" for q, n in where.items())
            + ") are marked excess in duplicates.csv. The held-out data sits closer to train than train sits "
            "to itself: the split was likely not made by source (patient, device, session), so "
            + " and ".join(
                {"val": "validation scores (model selection)", "test": "test scores"}[q] for q in each
            )
            + " may be optimistic. Split by source if the data has one."
        )
        return self.finding(
            "warning",
            msg,
            held_out_close_rate=round(ne.query_rate, 4),
            train_within_rate=round(ne.null_rate, 4),
            excess=round(ne.excess, 4),
            n_excess=ne.n_excess,
            p_value=float(f"{ne.p_value:.3g}"),
            design_effect=ne.design_effect,
            looks_counted=round(ne.looks_counted, 3),
            warns_below=levels.pooled,
            per_split={
                q: {
                    "close_rate": round(e.query_rate, 4),
                    "excess": round(e.excess, 4),
                    "p_value": float(f"{e.p_value:.3g}"),
                    "excess_pairs": where[q],
                }
                for q, e in each.items()
            },
            examples=examples,
        )

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


@dataclass(frozen=True)
class ExactRate:
    """Query rows with an exact copy in the reference split against the reference's own repetition: the
    share of reference rows equal to another reference row. A table of a few discrete columns repeats
    rows by itself (nwtco: 4 categorical columns, age and a flag; 71% of test rows equal a train row and
    so do most train rows of another train row): there an exact copy is not a leak unless there are
    more than the data's own rate predicts (one-sided Fisher, as for near copies)."""

    n_query: int
    n_copies: int
    n_ref: int
    n_twins: int
    p_value: float

    @property
    def query_rate(self) -> float:
        return self.n_copies / max(self.n_query, 1)

    @property
    def twin_rate(self) -> float:
        return self.n_twins / max(self.n_ref, 1)

    @property
    def excess(self) -> float:
        return max(0.0, self.query_rate - self.twin_rate)

    @classmethod
    def of(cls, ref: list[bytes], query: list[bytes]) -> ExactRate:
        counts = Counter(ref)
        twins = sum(counts[h] > 1 for h in ref)
        copies = sum(h in counts for h in query)
        table = [[copies, len(query) - copies], [twins, len(ref) - twins]]
        p = float(fisher_exact(table, alternative="greater").pvalue) if query and ref else 1.0
        return cls(len(query), copies, len(ref), twins, p)


@dataclass(frozen=True)
class WarnLevels:
    """The p-value under which each near-duplicate look warns. With val and test judged together
    (``pooled``), the warning level ``warn_alpha`` is shared out in advance (weighted Bonferroni, so the
    chance of any false warning on a randomly split dataset stays <= ``warn_alpha``): half to the held-out
    data as a whole, a quarter to each held-out split alone against train (copies in one small split
    are diluted in the pool: diabetes' 4 planted copies among 89 test rows, p 0.009 alone, 0.027 pooled),
    none to val/test (it warns at ``excess_alpha``). One held-out split: it is the pooled look, at
    ``warn_alpha``. ``pooled: false``: every look at ``warn_alpha`` (no family-wise bound)."""

    pooled: float
    split: float
    val_test: float

    @classmethod
    def of(cls, cfg: DuplicatesConfig, n_held_out: int) -> WarnLevels:
        if not cfg.pooled:
            return cls(pooled=0.0, split=cfg.warn_alpha, val_test=cfg.warn_alpha)
        if n_held_out < 2:
            return cls(pooled=cfg.warn_alpha, split=0.0, val_test=cfg.excess_alpha)
        return cls(pooled=cfg.warn_alpha / 2, split=cfg.warn_alpha / 4, val_test=cfg.excess_alpha)

    def own(self, a: str) -> float:
        return self.split if a == "train" else self.val_test


def _pooled_excess(
    near: dict[tuple[str, str], NearExcess], alpha: float, splits: dict[str, Any]
) -> list[tuple[str, int]]:
    """The pooled look's excess samples as (held-out split, index in that split)."""
    ne = near.get(("train", "held-out"))
    if ne is None:
        return []
    held_out = [q for q in ("val", "test") if ("train", q) in near]
    if len(held_out) == 1:
        return [(held_out[0], int(j)) for j in ne.excess_queries(alpha)]
    n_first = len(splits[held_out[0]])
    return [
        (held_out[0], int(j)) if j < n_first else (held_out[1], int(j - n_first))
        for j in ne.excess_queries(alpha)
    ]


def _p_words(ne: NearExcess) -> str:
    """Which p-value a near finding quotes: Fisher's, or Fisher's corrected by the measured design effect."""
    if ne.design_effect is None:
        return "Fisher"
    return (
        f"Fisher (corrected by the design effect {ne.design_effect:.2f} measured on random re-deals; the looks "
        f"counted as {ne.looks_counted:.2f} by their joint null on the same re-deals)"
    )


def _consequence(split: str) -> str:
    if split == "test":
        return (
            "Test scores on them measure memory, not generalization: remove them from train "
            "(drop_duplicates: true) or de-duplicate the source, and split by patient/source."
        )
    return "Validation scores (model selection, early stopping) are optimistic."
