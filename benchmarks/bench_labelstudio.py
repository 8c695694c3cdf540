"""Live Label Studio round trip: 50 tasks out with ``--to-label-studio``, annotated through Label
Studio's HTTP API by two users (one labels all 50, the other 20 of them and cancels 5 more), exported
as JSON and read back with ``--from-label-studio``; prints whether every label, annotator and
cancellation survived the trip, and the time of each step (Label Studio's first ``init`` runs its
database migrations: most of the time).

Needs Label Studio in its own venv (``bash .ci/label_studio_venv.sh``).
Run: ``.venv/bin/python benchmarks/bench_labelstudio.py [--n 50]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "labeling"))
from labeling_helpers import make_queue  # noqa: E402
from labelstudio_live import VENV, label_studio, missing, round_trip  # noqa: E402
from test_labeling_labelstudio_live import plan_for  # noqa: E402

from closedloop.labeling import LabelStore, from_label_studio, load_queue, to_label_studio  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50)
    args = ap.parse_args()
    why = missing()
    if why:
        sys.exit(why)
    stamp = sorted(VENV.glob(".installed-*"))
    print(
        f"Label Studio venv {VENV}: {stamp[-1].read_text().strip() if stamp else 'install time not recorded'}"
    )
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        qdir = make_queue(work, n=args.n)
        tasks = to_label_studio(qdir, work / "ls" / "tasks.json").tasks_file
        ids = load_queue(qdir).ids
        plan = plan_for(ids)
        with label_studio(work) as server:
            trip = round_trip(server, tasks, plan, work / "export.json")
            timings = {**server.timings, **trip.timings}
        t0 = time.perf_counter()
        res = from_label_studio(trip.export_file, qdir)
        timings["--from-label-studio"] = time.perf_counter() - t0
        q = load_queue(qdir)
        got = LabelStore(qdir / "labels.csv", q.ids, q.classes).current_by_annotator()
        who = sorted({a for _, a in got})
        full = next(a for a in who if sum(1 for (_, x) in got if x == a) == args.n)
        users = {full: "ann@example.org", **{a: "bob@example.org" for a in who if a != full}}
        read_back = {(cid, users[a]): r.label[0] for (cid, a), r in got.items()}
        same = read_back == trip.posted
        cancelled_ok = sorted((c.id, users.get(c.annotator, c.annotator)) for c in res.cancelled) == sorted(
            trip.cancelled
        )
    print(
        f"{args.n} tasks, 2 annotators ({', '.join(who)}): {len(trip.posted)} annotations posted, "
        f"{res.n_imported} imported, {len(res.cancelled)} cancelled reported ({len(trip.cancelled)} posted)"
    )
    print(f"labels and annotators identical after the trip: {same}; cancellations identical: {cancelled_ok}")
    for k, v in timings.items():
        print(f"  {k:<40} {v:6.1f} s")
    print(f"total {time.perf_counter() - t_all:.1f} s (shared 2-core machine)")


if __name__ == "__main__":
    main()
