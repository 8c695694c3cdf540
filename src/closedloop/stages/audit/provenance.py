"""Check 9, provenance: checksums against the official release (MedMNIST), sizes and dtypes."""

from __future__ import annotations

from typing import Any

from closedloop.data.bundle import SPLITS
from closedloop.stages.audit.base import AuditCheck, AuditContext, CheckConfig, CheckResult


def _checksums(obj: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every mapping with a ``matches`` key (``{expected_md5, actual_md5, matches}``), nested or not."""
    out = []
    if isinstance(obj, dict):
        if "matches" in obj:
            out.append((path or "file", obj))
        for k, v in obj.items():
            if isinstance(v, dict):
                out += _checksums(v, f"{path}.{k}" if path else str(k))
    return out


class Provenance(AuditCheck):
    """Checksums, source warnings, sizes and dtypes per split."""

    name = "provenance"
    applies_to = frozenset({"images", "table"})
    Config = CheckConfig

    def run(self, data: Any, task: Any, ctx: AuditContext) -> CheckResult:
        res = CheckResult()
        meta = data.meta
        sizes = data.sizes()
        res.metrics["sizes"] = sizes
        if data.kind == "images":
            dtypes = {
                k: f"{s.X.dtype} {tuple(s.X.shape[1:])}"
                for k, s in (("train", data.train), ("val", data.val))
            }
        else:
            dtypes = {k: f"{s.X.shape[1]} columns" for k, s in (("train", data.train), ("val", data.val))}
        res.metrics["dtypes"] = dtypes
        how = f"{meta.split_origin} splits"
        span, group = meta.provenance.get("time_split"), meta.provenance.get("group")
        if span:  # which periods each split covers, as written in the file
            how += f" by {span['column']}: " + ", ".join(f"{k} {span[k][0]}-{span[k][1]}" for k in SPLITS)
        if group:
            how += f" of whole groups of {group['column']}, {group['groups']} groups"
        res.findings.append(
            self.finding(
                "info",
                f"{meta.name} from source {meta.source!r} ({how}): sizes {sizes}; inputs {dtypes['train']}",
                sizes=sizes,
                dtypes=dtypes,
            )
        )
        if data.kind == "images" and data.train.X.dtype.name != "uint8":
            res.findings.append(self.finding("warning", f"images are {data.train.X.dtype}, expected uint8"))
        sums = _checksums(meta.provenance)
        for where, c in sums:
            if c.get("matches") is False:
                res.findings.append(
                    self.finding(
                        "warning",
                        f"{where}: checksum {c.get('actual_md5')} does not match the official "
                        f"release ({c.get('expected_md5')}): the file differs from the published data",
                        **c,
                    )
                )
            elif c.get("matches") is True:
                res.findings.append(
                    self.finding(
                        "info", f"{where}: checksum matches the official release ({c.get('actual_md5')})"
                    )
                )
        if not sums:
            res.findings.append(
                self.finding("info", "no official checksum to compare against (provenance not verifiable)")
            )
        for w in meta.warnings:
            if not any(f.message.endswith(w) for f in res.findings):
                res.findings.append(self.finding("warning", f"data source: {w}"))
        res.metrics["checksums_ok"] = all(c.get("matches") is not False for _, c in sums)
        res.metrics["provenance"] = meta.provenance
        return res
