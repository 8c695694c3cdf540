"""Command line: ``closedloop <command>``; ``closedloop --help`` lists every command.

A user error (bad config, missing file, wrong wiring) prints a one-screen message and exits with
status 2; a stage that fails during a run exits with status 1 after writing the summary and report.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from closedloop.core.errors import ClosedLoopError

EXIT_USER_ERROR = 2
EXIT_STAGE_FAILED = 1

# Each feature adds its own subcommands through ``add_commands(subparsers)`` in its module, so the
# CLI stays one short file and a feature's optional dependencies are imported only when its command runs.
COMMAND_MODULES = (
    "closedloop.stages.monitor.cli",  # monitor, retrain
    "closedloop.serving.cli",  # serve, compare-live
    "closedloop.labeling.cli",  # label
    "closedloop.report.cli",  # runs, compare
    "closedloop.adapt.cli",  # adapt
    "closedloop.web.cli",  # export-web
    "closedloop.stages.worker_cli",  # worker (outside stages/train: that package imports torch)
)


def _pipeline(args: argparse.Namespace) -> Any:
    from closedloop.core.pipeline import Pipeline

    if args.resume and not args.config:
        return Pipeline.from_yaml(Path(args.resume) / "config.yaml", overrides=args.set)
    if not args.config:
        raise ClosedLoopError("give a CONFIG file (or --resume RUN_DIR)")
    return Pipeline.from_yaml(args.config, overrides=args.set)


def cmd_run(args: argparse.Namespace) -> int:
    args.set += [f"train.workers={args.workers}"] if args.workers else []  # docs/scaling.md
    args.set += [f"train.storage={args.storage}"] if args.storage else []
    pipeline = _pipeline(args)
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    result = pipeline.run(
        out=args.out, resume=args.resume, only=only, unseal_test=args.unseal_test, cache=not args.no_cache
    )
    print("\n".join(stage_lines(result.summary)))
    print(f"status: {result.summary['status']}")
    print(f"report: {result.report_path}")
    print(f"summary: {result.run_dir / 'summary.json'}")
    return 0 if result.ok else EXIT_STAGE_FAILED


def stage_lines(summary: dict[str, Any]) -> list[str]:
    """A line per stage (status, seconds), its error, the error-severity findings it reported and which checks
    warned: a run that ends "ok" with an audit error (a leaking column, say) says so here too, not only in the
    report.

    >>> audit = {"status": "ok", "seconds": 1.0, "findings": [
    ...     {"check": "target_leakage", "severity": "error", "message": "'x' alone predicts the target. Remove it"}]}
    >>> print("\\n".join(stage_lines({"stages": {"audit": audit}})))
      audit        ok           1.0 s
          1 error finding(s): [target_leakage] 'x' alone predicts the target
    >>> audit["findings"] = [{"check": "repeated_entities", "severity": "warning", "message": "column 'nr' ..."}]
    >>> print("\\n".join(stage_lines({"stages": {"audit": audit}})))
      audit        ok           1.0 s
          1 warning(s) from repeated_entities (see the report)
    """
    lines = []
    for name, st in summary["stages"].items():
        extra = " (cached)" if st.get("cached") else ""
        lines.append(f"  {name:<12} {st['status']:<8} {st['seconds']:7.1f} s{extra}")
        if st.get("error"):
            lines.append(f"      {st['error']}")
        errors = [f for f in st.get("findings") or [] if isinstance(f, dict) and f.get("severity") == "error"]
        if errors:
            first = errors[0]
            more = f" (and {len(errors) - 1} more; see the report)" if len(errors) > 1 else ""
            text = str(first.get("message", "")).split(". ")[0]
            lines.append(f"      {len(errors)} error finding(s): [{first.get('check')}] {text}{more}")
        warned = [
            f for f in st.get("findings") or [] if isinstance(f, dict) and f.get("severity") == "warning"
        ]
        if warned:  # which checks warned, in one line: the messages are in the report
            checks = ", ".join(dict.fromkeys(str(f.get("check")) for f in warned))
            lines.append(f"      {len(warned)} warning(s) from {checks} (see the report)")
    return lines


def cmd_validate(args: argparse.Namespace) -> int:
    from closedloop.core.pipeline import Pipeline

    p = Pipeline.from_yaml(args.config, overrides=args.set)
    print(f"{args.config}: ok ({len(p.stages)} stages: {', '.join(s.name for s in p.stages)})")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from closedloop.core.schema import pipeline_schema

    print(json.dumps(pipeline_schema(), indent=2))
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    from closedloop.core.registry import SOURCES, STAGES

    print("stages:")
    for key, cls in STAGES.items().items():
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"  {key:<10} {doc}")
    print("data sources:")
    for key, cls in SOURCES.items().items():
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"  {key:<13} {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="closedloop",
        description="closedloop: the machine-learning lifecycle from a YAML config, and its production loop.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a pipeline from a YAML config")
    run.add_argument("config", nargs="?", help="pipeline YAML file")
    run.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.max_epochs=3"
    )
    run.add_argument("--out", help="run directory to create (default runs/<name>/<timestamp>-<hash>)")
    run.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a crashed run from its first unfinished stage"
    )
    run.add_argument("--only", metavar="STAGES", help="comma-separated stages to run (plus what they need)")
    run.add_argument(
        "--unseal-test", metavar="REASON", help="re-open the test split for an already evaluated pipeline"
    )
    run.add_argument(
        "--no-cache", action="store_true", help="do not reuse identical stages from earlier runs"
    )
    run.add_argument("--workers", type=int, metavar="N", help="tuning trials in N processes on one study")
    run.add_argument(
        "--storage", metavar="URL", help="the tuning study's storage (closedloop worker joins it)"
    )
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", help="check a config without running it")
    val.add_argument("config")
    val.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    val.set_defaults(func=cmd_validate)

    sch = sub.add_parser("schema", help="print the JSON Schema of pipeline configs (for editor completion)")
    sch.set_defaults(func=cmd_schema)

    stg = sub.add_parser("stages", help="list registered stages and data sources")
    stg.set_defaults(func=cmd_stages)

    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("closedloop"):
                continue  # that feature's module is not part of this install
            raise
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # stage log files get INFO; the terminal only what was asked
        handler.setLevel(level)
    try:
        return int(args.func(args) or 0)
    except ClosedLoopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; resume with: closedloop run --resume <run dir>", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
