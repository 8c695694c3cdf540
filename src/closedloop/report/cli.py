"""``closedloop runs`` and ``closedloop compare`` (added to the main CLI by :func:`add_commands`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from closedloop.core.io import write_text_atomic


def cmd_runs(args: argparse.Namespace) -> int:
    from closedloop.report.runs import find_runs, format_table, run_row

    rows = [run_row(p) for p in find_runs(args.runs_dir)]
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
    elif not rows:
        print(f"no runs under {args.runs_dir}")
    else:
        print(format_table(rows))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from closedloop.report.compare import compare_runs, comparison_html, format_comparison

    c = compare_runs(args.run_a, args.run_b, n_resamples=args.n_resamples)
    print(format_comparison(c))
    out = Path(args.html or f"compare-{Path(args.run_a).name}-vs-{Path(args.run_b).name}.html")
    write_text_atomic(out, comparison_html(c))
    print(f"\nhtml: {out}")
    if args.json:
        write_text_atomic(Path(args.json), c.model_dump_json(indent=2))
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``runs`` and ``compare`` to the main CLI's subparsers."""
    runs = subparsers.add_parser(
        "runs", help="list runs: status, test metric with interval, baseline, blessed"
    )
    runs.add_argument("runs_dir", nargs="?", default="runs", help="runs directory (default: runs)")
    runs.add_argument("--json", action="store_true", help="print the rows as JSON")
    runs.set_defaults(func=cmd_runs)

    cmp_ = subparsers.add_parser("compare", help="compare two runs: config differences and paired metrics")
    cmp_.add_argument("run_a", help="run directory A (the reference)")
    cmp_.add_argument("run_b", help="run directory B (differences are B - A)")
    cmp_.add_argument(
        "--html", metavar="PATH", help="where to write the HTML page (default: ./compare-A-vs-B.html)"
    )
    cmp_.add_argument("--json", metavar="PATH", help="also write the comparison as JSON")
    cmp_.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    cmp_.set_defaults(func=cmd_compare)
