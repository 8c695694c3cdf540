"""``closedloop export-web RUN_DIR OUT_DIR`` (added to the main CLI by :func:`add_commands`)."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_export_web(args: argparse.Namespace) -> int:
    from closedloop.web.build import export_web

    built = export_web(
        args.run_dir,
        args.out_dir,
        variant=args.variant,
        runtime_tarball=args.runtime_tarball,
        allow_unblessed=args.allow_unblessed,
    )
    s = built.spec
    print(
        f"wrote {built.out_dir} ({built.total_bytes / 1e6:.1f} MB): {s.card.name}, variant {s.model.variant}"
    )
    print(
        f"runtime: {s.runtime.package}@{s.runtime.version} (wasm, 1 thread), files checked against {s.runtime.integrity[:20]}..."
    )
    print(f"try it: python -m http.server -d {built.out_dir} 8000  -> http://127.0.0.1:8000/")
    print(f"   or:  closedloop serve {s.source.run_dir} --app {built.out_dir}  -> http://127.0.0.1:8000/app/")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "export-web",
        help="a static folder whose page runs the exported model in the browser (onnxruntime-web)",
    )
    p.add_argument("run_dir", help="a run directory with a finished, blessed export stage")
    p.add_argument("out_dir", help="folder to write (new, empty, or an earlier export-web folder)")
    p.add_argument(
        "--variant", help="model variant to ship (fp32, int8, ...; default: the run's shipped one)"
    )
    p.add_argument(
        "--runtime-tarball",
        metavar="TGZ",
        help="the onnxruntime-web npm tarball (npm pack onnxruntime-web@VERSION) instead of downloading it once",
    )
    p.add_argument(
        "--allow-unblessed",
        action="store_true",
        help="export a model that failed its checks (the page says so)",
    )
    p.set_defaults(func=cmd_export_web)
