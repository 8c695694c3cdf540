"""split_shift on small splits (issue #25, item 5): the fixed AUC cut (0.6) alone vs the cut plus the
AUC's p-value against the split sizes (alpha 0.01). No-shift draws (train and test from one
distribution) give the false-warning rate; draws with a 0.5-sd shift of one column give the power.

Run: .venv/bin/python benchmarks/bench_audit_shift_null.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_audit_common import run_audit  # noqa: E402
from tests.audit.test_audit_shift_null import _table  # noqa: E402

DRAWS = 20


def main() -> None:
    print(f"train 300 rows, two columns; {DRAWS} draws per line; warning = AUC > 0.6 [and p < 0.01]")
    for n_test in (12, 30, 100):
        for shift in (0.0, 0.5):
            old = new = 0
            aucs = []
            for seed in range(DRAWS):
                out, _, _ = run_audit(_table(300, n_test, shift, seed), checks=["split_shift"], stop_on=[])
                m = out.audit.results["split_shift"]["metrics"]
                aucs.append(m["adversarial_auc_test"])
                old += m["adversarial_auc_test"] > 0.6
                new += m["adversarial_auc_test"] > 0.6 and m["adversarial_p_test"] < 0.01
            what = "false warnings" if shift == 0 else "warnings (power)"
            print(
                f"test {n_test:3d} rows, shift {shift}: {what}: fixed cut {old}/{DRAWS}, cut + p-value {new}/{DRAWS} "
                f"(AUC median {np.median(aucs):.3f}, max {np.max(aucs):.3f})"
            )


if __name__ == "__main__":
    main()
