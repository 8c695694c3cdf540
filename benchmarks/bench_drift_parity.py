"""Drift tests before/after the registry redesign: same data and seed -> the same numbers.

Builds a reference profile (small digits CNN and a synthetic table, as in tests/monitor) and checks
a clean and a shifted stream; writes every threshold, p-value, statistic, alert and evidence line as
JSON. Run it once with the old sources and once with the new, then compare::

    PYTHONPATH=/tmp/old/src python benchmarks/bench_drift_parity.py dump old.json
    PYTHONPATH=src python benchmarks/bench_drift_parity.py dump new.json
    python benchmarks/bench_drift_parity.py compare old.json new.json

Every figure is computed on the datasets' validation split (reference and thresholds) and test split
(the checked stream), never on the rows the tiny models were fitted on.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "monitor"))


def _run(kind: str) -> dict[str, Any]:
    from monitor_helpers import digits_setup, table_setup

    from closedloop.monitoring import Monitor
    from closedloop.stages.monitor.stage import BuildMonitorProfileConfig, build_profile
    from closedloop.stages.task import DefineTaskConfig, build_task_spec

    bundle, model = digits_setup() if kind == "images" else table_setup()
    task = build_task_spec(DefineTaskConfig(), bundle)
    cfg = BuildMonitorProfileConfig(calibration_windows=60, permutations=60, window_sizes=[50, 100])
    profile = build_profile(cfg, bundle, task, model, np.random.default_rng(7))
    with tempfile.TemporaryDirectory() as tmp:
        profile.save(Path(tmp))
        profile_sha = hashlib.sha256((Path(tmp) / "profile.json").read_bytes()).hexdigest()
    mon = Monitor(profile, model, seed=3)
    test = bundle.splits["test"]  # outside a pipeline run: no ledger to record the opening in
    X, y = test.X, np.asarray(test.y)
    if kind == "images":
        shifted = np.clip(X.astype(np.int16) + 60, 0, 255).astype(np.uint8)
        stream = np.concatenate([X, shifted])
    else:
        shifted = X.copy()
        shifted["a"] = shifted["a"] + 1.5
        import pandas as pd

        stream = pd.concat([X, shifted], ignore_index=True)
    res = mon.check_stream(stream, window=50, labels=np.concatenate([y, y]))
    windows = [
        {
            k: w[k]
            for k in ("alert", "p_values", "min_p", "thresholds", "evidence", "estimated", "tests")
            if k in w
        }
        for w in res.windows
    ]
    return {"profile_json_sha256": profile_sha, "thresholds": profile.info.thresholds, "windows": windows}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "dump":
        out = {kind: _run(kind) for kind in ("images", "table")}
        Path(sys.argv[2]).write_text(json.dumps(out, indent=1, sort_keys=True, default=float))
        return
    if len(sys.argv) == 4 and sys.argv[1] == "compare":
        a, b = (json.loads(Path(p).read_text()) for p in sys.argv[2:])
        for kind in a:
            n = len(a[kind]["windows"])
            same_p = all(
                wa["p_values"] == wb["p_values"]
                for wa, wb in zip(a[kind]["windows"], b[kind]["windows"], strict=True)
            )
            print(
                f"{kind}: {n} windows; p-values identical: {same_p}; whole output identical: {a[kind] == b[kind]}"
            )
            print(
                f"{kind}: profile.json sha256 identical: {a[kind]['profile_json_sha256'] == b[kind]['profile_json_sha256']}"
            )
            w0 = a[kind]["windows"][-1]
            print(f"{kind}: last window p-values (old) {w0['p_values']}")
            print(f"{kind}: last window p-values (new) {b[kind]['windows'][-1]['p_values']}")
        if a != b:
            sys.exit(1)
        return
    sys.exit(__doc__)


if __name__ == "__main__":
    main()
