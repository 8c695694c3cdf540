"""``closedloop worker CONFIG --storage URL`` (added to the main CLI by :func:`add_commands`).

It lives outside ``stages/train/``: importing any module of that package runs its ``__init__``, which
imports torch, and the command line must start without torch (``closedloop serve`` in a serving-only
environment)."""

from __future__ import annotations

import argparse


def cmd_worker(args: argparse.Namespace) -> int:
    from closedloop.stages.train.worker import join_study

    res = join_study(
        args.config,
        args.storage,
        overrides=args.set,
        study_name=args.study,
        wait_s=args.wait,
        scratch=args.scratch,
    )
    print(
        f"study {res.study} at {res.storage}: this worker finished {len(res.trials)} trial(s) "
        f"{res.trials}; the study holds {res.counted} of {res.n_trials} counted trials"
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser(
        "worker",
        help="run tuning trials for a leader's study (closedloop run CONFIG --storage URL) from another machine",
    )
    w.add_argument("config", help="the leader's pipeline YAML (the same config: its fingerprint is checked)")
    w.add_argument("--storage", required=True, help="the study's postgresql:// URL or .journal file")
    w.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, as for run")
    w.add_argument("--study", help="the study name (default: the open study with this config's fingerprint)")
    w.add_argument(
        "--wait", type=float, default=600.0, metavar="SECONDS", help="how long to wait for the leader's study"
    )
    w.add_argument("--scratch", help="scratch folder for the stages before train (default: a temporary one)")
    w.set_defaults(func=cmd_worker)
