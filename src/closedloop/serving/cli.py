"""``closedloop serve`` and ``closedloop compare-live`` (added to the main CLI by :func:`add_commands`).

Standalone and torch-free: ``python -m closedloop.serving serve RUN_DIR``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from typing import Any

from closedloop.core.errors import ClosedLoopError


def cmd_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from closedloop.serving.model import ServeError
    from closedloop.serving.service import ServeOptions, Service, check_log_dir, resolve

    if args.max_queue_delay_ms is not None and args.max_batch_size is None:
        raise ServeError("--max-queue-delay-ms needs --max-batch-size N (dynamic batching is off without it)")
    if args.canary_share is not None and not args.canary:
        raise ServeError("--canary-share needs --canary RUN_DIR")
    try:
        opts = ServeOptions(
            run_dir=resolve(args.run_dir) or "",
            variant=args.variant,
            log_dir=resolve(args.log_dir),
            shadow=resolve(args.shadow),
            canary=resolve(args.canary),
            canary_share=0.1 if args.canary_share is None else args.canary_share,
            model_name=args.model_name,
            max_body_bytes=args.max_body_bytes,
            input_reduction=args.log_inputs,
            fsync=args.fsync,
            workers=args.workers,
            metrics=not args.no_metrics,
            max_batch_size=args.max_batch_size,
            **({} if args.max_queue_delay_ms is None else {"max_queue_delay_ms": args.max_queue_delay_ms}),
            app_dir=resolve(args.app),
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ServeError(
            f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']} (got {err.get('input')!r})"
        ) from None
    import uvicorn

    if opts.workers == 1:
        from closedloop.serving.app import build_app

        app = build_app(Service(opts))  # a bad run directory stops here with a one-line reason
        print(
            f"serving {app.state.service.name} from {opts.run_dir} on http://{args.host}:{args.port}",
            file=sys.stderr,
        )
        uvicorn.run(
            app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=30
        )
        return 0

    from closedloop.serving.app import OPTIONS_ENV

    Service(opts.model_copy(update={"log_dir": None, "metrics": False}))  # refuse to start before forking
    if opts.log_dir:
        check_log_dir(opts.log_dir)
    own_prom_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_prom_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="closedloop-prom-")
    os.environ[OPTIONS_ENV] = opts.model_dump_json()
    print(
        f"serving {opts.run_dir} with {opts.workers} workers on http://{args.host}:{args.port}",
        file=sys.stderr,
    )
    uvicorn.run(
        "closedloop.serving.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=opts.workers,
        log_level=args.log_level,
        timeout_graceful_shutdown=30,
    )
    if own_prom_dir:
        shutil.rmtree(own_prom_dir, ignore_errors=True)
    return 0


def cmd_compare_unavailable(args: argparse.Namespace) -> int:
    raise ClosedLoopError(
        f"compare-live is not available in this install: closedloop.monitoring.compare cannot be imported ({args.why})"
    )


def add_commands(subparsers: Any) -> None:
    """Add ``serve`` and ``compare-live`` to the main CLI's subparsers."""
    srv = subparsers.add_parser(
        "serve",
        help="serve a run's exported model over HTTP (Open Inference Protocol V2, /predict, /monitor)",
    )
    srv.add_argument("run_dir", help="run directory holding the export stage's output")
    srv.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8080)
    srv.add_argument("--variant", help="model file: int8, fp32, student, ... (default: the shipped variant)")
    srv.add_argument(
        "--log-dir", help="append every request to this request log (needed by /feedback, /monitor)"
    )
    srv.add_argument(
        "--log-inputs", choices=["full", "none"], default="full", help="keep raw inputs in the log"
    )
    srv.add_argument(
        "--fsync", choices=["none", "always"], default="none", help="fsync the log after each record"
    )
    srv.add_argument(
        "--shadow", metavar="RUN_DIR", help="challenger scored on every request, logged, never returned"
    )
    srv.add_argument("--canary", metavar="RUN_DIR", help="challenger answering a share of the requests")
    srv.add_argument(
        "--canary-share", type=float, default=None, help="share answered by --canary (default 0.1)"
    )
    srv.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    srv.add_argument(
        "--max-batch-size",
        type=int,
        default=None,
        help="dynamic batching: gather concurrent requests into model calls of up to N inputs (default off)",
    )
    srv.add_argument(
        "--max-queue-delay-ms",
        type=float,
        default=None,
        help="dynamic batching: longest wait for batch-mates (default 2; below the task's max_latency_ms)",
    )
    srv.add_argument("--model-name", help="OIP model name (default: the pipeline's name)")
    srv.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024, help="larger bodies get 413")
    srv.add_argument("--app", metavar="WEB_DIR", help="an export-web folder of this run, served at /app/")
    srv.add_argument("--no-metrics", action="store_true", help="do not count requests for /metrics")
    srv.add_argument("--log-level", default="warning", help="uvicorn's log level")
    srv.set_defaults(func=cmd_serve)

    try:
        from closedloop.monitoring.compare import add_arguments, run
    except ImportError as exc:
        cmp = subparsers.add_parser(
            "compare-live", help="champion vs challenger from a request log (unavailable)"
        )
        cmp.add_argument("rest", nargs=argparse.REMAINDER)
        cmp.set_defaults(func=cmd_compare_unavailable, why=str(exc))
        return
    cmp = subparsers.add_parser(
        "compare-live", help="champion vs challenger from a request log: paired statistics, promote or keep"
    )
    add_arguments(cmp)
    cmp.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m closedloop.serving``), same commands as the main CLI."""
    parser = argparse.ArgumentParser(prog="closedloop")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ClosedLoopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
