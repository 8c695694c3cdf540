"""``closedloop label QUEUE_DIR``: the labeling page, or with ``--export``, ``--to-label-studio`` or
``--from-label-studio`` the matching one-shot action (added to the main CLI by :func:`add_commands`)."""

from __future__ import annotations

import argparse
import getpass


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "anonymous"


def _classes(value: str | None) -> list[str] | None:
    return [c.strip() for c in value.split(",") if c.strip()] if value else None


def cmd_label(args: argparse.Namespace) -> int:
    from closedloop.core.errors import ConfigError

    opts = {"classes": _classes(args.classes), "multilabel": True if args.multilabel else None}
    actions = [a for a in (args.export, args.to_label_studio, args.from_label_studio) if a]
    if len(actions) > 1:
        raise ConfigError("give at most one of --export, --to-label-studio, --from-label-studio")
    if args.export:
        from closedloop.labeling.export import export_labels

        res = export_labels(args.queue_dir, args.export, **opts)
        per = ", ".join(f"{k} {v}" for k, v in sorted(res.per_class.items())) or "none"
        print(f"exported {res.n_exported} labeled samples to {res.out_dir} ({per})")
        by: dict[str, list[str]] = {}
        for n in res.not_exported:
            by.setdefault(n.status, []).append(n.id)
        for status, ids in sorted(by.items()):
            more = " ..." if len(ids) > 10 else ""
            print(f"not exported, {status}: {len(ids)} ({', '.join(ids[:10])}{more})")
        print(f"listed in {res.out_dir / 'not_exported.csv'}")
        print(f"next: closedloop retrain CONFIG --add-labeled {res.add_labeled}")
        return 0
    if args.to_label_studio:
        from closedloop.labeling.labelstudio import to_label_studio

        res_ls = to_label_studio(
            args.queue_dir,
            args.to_label_studio,
            image_url_prefix=args.image_url_prefix,
            model_version=args.model_version,
            **opts,
        )
        print(f"wrote {res_ls.n_tasks} Label Studio tasks with predictions to {res_ls.tasks_file}")
        print(f"labeling config: {res_ls.config_file}")
        return 0
    if args.from_label_studio:
        from closedloop.labeling.labelstudio import from_label_studio

        res_in = from_label_studio(args.from_label_studio, args.queue_dir, **opts)
        print(
            f"imported {res_in.n_imported} annotations into {args.queue_dir}/labels.csv "
            f"({res_in.n_unchanged} already there, {res_in.n_without_annotation} of {res_in.n_tasks} tasks "
            "without an annotation)"
        )
        for c in res_in.cancelled:
            print(f"cancelled annotation {c.annotation} on id {c.id} by {c.annotator}: not imported")
        return 0
    from closedloop.labeling.app import create_app
    from closedloop.labeling.server import serve

    app = create_app(args.queue_dir, annotator=args.annotator, **opts)
    n = len(app.state.queue.items)
    print(f"labeling {n} items in {args.queue_dir} as {args.annotator!r}: http://{args.host}:{args.port}/")
    print("keys: 1-9 class, Enter accept suggestion, S skip, U unsure, Z undo, arrows move; Ctrl-C stops")
    serve(app, host=args.host, port=args.port)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``label`` to the main CLI."""
    p = sub.add_parser(
        "label",
        help="label a review queue in the browser, export it, or round-trip it through Label Studio",
        description="Serve a keyboard-first labeling page for QUEUE_DIR (written by 'closedloop monitor "
        "... --review K'); labels go to QUEUE_DIR/labels.csv.",
    )
    p.add_argument("queue_dir", metavar="QUEUE_DIR")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: this machine only)")
    p.add_argument("--annotator", default=_user(), help="name recorded with each label")
    p.add_argument("--classes", metavar="A,B,C", help="class list, for queues without queue.json")
    p.add_argument("--multilabel", action="store_true", help="treat the queue as multi-label")
    p.add_argument("--export", metavar="DIR", help="write labeled samples for 'retrain --add-labeled'")
    p.add_argument("--to-label-studio", metavar="FILE", help="write Label Studio tasks + labeling config")
    p.add_argument(
        "--image-url-prefix",
        metavar="URL",
        help="with --to-label-studio: prefix of image URLs (default /data/local-files/?d=<queue name>/)",
    )
    p.add_argument("--model-version", default="closedloop", help="with --to-label-studio: model_version")
    p.add_argument(
        "--from-label-studio", metavar="EXPORT.json", help="append a Label Studio JSON export to labels.csv"
    )
    p.set_defaults(func=cmd_label)
