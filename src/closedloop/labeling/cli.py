"""``closedloop label QUEUE_DIR``: the labeling page, or with ``--export``, ``--to-label-studio`` or
``--from-label-studio`` the matching one-shot action; ``closedloop human-baseline``: a blind queue
from a run's data and, once labeled, the measured human level (added to the main CLI by
:func:`add_commands`)."""

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
    actions = [
        a
        for a in (args.export, args.to_label_studio, args.from_label_studio, args.agreement, args.consensus)
        if a
    ]
    if len(actions) > 1:
        raise ConfigError(
            "give at most one of --export, --to-label-studio, --from-label-studio, --agreement, --consensus"
        )
    if args.agreement:
        from closedloop.labeling.agreement import write_agreement

        rep = write_agreement(args.queue_dir, args.agreement)
        f, a = rep.fleiss_kappa, rep.krippendorff_alpha
        print(
            f"{len(rep.annotators)} annotators, {rep.n_items_multi} items labeled by two or more: Fleiss' kappa "
            f"{f.value:.3f} [{f.ci95[0]:.3f}, {f.ci95[1]:.3f}], Krippendorff's alpha {a.value:.3f} "
            f"[{a.ci95[0]:.3f}, {a.ci95[1]:.3f}]"
        )
        for pr in rep.pairs:
            k = pr.kappa
            what = f"kappa {k.value:.3f} [{k.ci95[0]:.3f}, {k.ci95[1]:.3f}]" if k else pr.note
            print(f"  {pr.a} vs {pr.b}: {pr.n_shared} shared items, {what}")
        print(f"written: {args.agreement} (most disagreed items side by side) and its .json")
        return 0
    if args.consensus:
        from closedloop.labeling.consensus import queue_consensus

        res_c = queue_consensus(
            args.queue_dir,
            probs=args.probs,
            adjudicate_below=args.adjudicate_below,
            adjudicator=args.adjudicator,
            method=args.method,
        )
        src = f"model probabilities from {res_c.probs_from}" if res_c.probs_from else "no model probabilities"
        print(f"consensus of {res_c.n_items} items by {res_c.method} ({src}): {res_c.consensus_file}")
        for who, q in sorted(res_c.annotators.items(), key=lambda x: -x[1]):
            print(f"  annotator {who}: quality {q:.3f}")
        if res_c.to_adjudicate:
            where = (
                f"assigned to {res_c.adjudicator} in assignments.csv"
                if res_c.adjudicator
                else "give --adjudicator NAME to send them back to the queue"
            )
            print(
                f"{len(res_c.to_adjudicate)} item(s) below quality {args.adjudicate_below} or labeled by the "
                f"model alone: {where}"
            )
        return 0
    if args.export:
        from closedloop.labeling.export import export_labels

        res = export_labels(args.queue_dir, args.export, adjudicate_below=args.adjudicate_below, **opts)
        if res.labels_from != "labels.csv":
            print(f"several annotators: labels from {res.labels_from}")
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

    app = create_app(args.queue_dir, annotator=args.annotator, blind=args.blind, seed=args.seed, **opts)
    n = len(app.state.items)
    mode = " blind (no model output, random order)" if app.state.blind else ""
    print(
        f"labeling {n} items in {args.queue_dir}{mode} as {args.annotator!r}: http://{args.host}:{args.port}/"
    )
    accept = "" if app.state.blind else "Enter accept suggestion, "
    print(f"keys: 1-9 class, {accept}S skip, U unsure, Z undo, arrows move; Ctrl-C stops")
    serve(app, host=args.host, port=args.port)
    return 0


def _fmt(m: dict[str, object]) -> str:
    ci = m["ci95"]
    return f"{m['value']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"  # type: ignore[index]


def cmd_human_baseline(args: argparse.Namespace) -> int:
    from closedloop.core.errors import ConfigError

    if args.score:
        if args.run_dir:
            raise ConfigError("give RUN (to make the blind queue) or --score DIR (to score it), not both")
        from closedloop.labeling.human import score_human_baseline

        res = score_human_baseline(
            args.score,
            annotator=args.annotator,
            metric=args.metric,
            publish=not args.no_publish,
            seed=args.seed,
            run=args.run,
        )
        for s in res.annotators:
            if not s.human:
                print(f"{s.annotator}: {s.n_labeled} labeled, too few to score")
                continue
            line = ", ".join(f"{k} {_fmt(v.model_dump())}" for k, v in s.human.items())
            print(f"{s.annotator} ({s.n_labeled} labeled, {s.n_skipped} skipped/unsure): {line}")
            mline = ", ".join(f"{k} {_fmt(v.model_dump())}" for k, v in s.model.items())
            print(f"  model on the same items: {mline}")
        for c in res.comparisons:
            print(
                f"model - human {c['metric']}: {c['delta']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}], "
                f"p = {c['p_value']:.3g} ({c['method']}): {c['verdict'].replace('_', ' ')}"
            )
        print(f"human level ({res.annotator}, {res.n_scored} items) written to: {', '.join(res.written)}")
        print("the next run of this pipeline reads it as a reference of level 'human' (task.human_reference)")
        return 0
    if not args.run_dir or not args.out:
        raise ConfigError("give RUN and --out DIR (to make the blind queue), or --score DIR (to score it)")
    from closedloop.labeling.assign import check_annotators
    from closedloop.labeling.human import create_human_baseline

    people = check_annotators(_classes(args.annotators) or []) if args.annotators else []
    plan = create_human_baseline(
        args.run_dir,
        args.out,
        split=args.split,
        n=args.n,
        seed=args.seed,
        annotators=people,
        overlap=args.overlap,
        per_item=args.per_item,
    )
    print(
        f"blind queue of {plan.n} items drawn at random (seed {plan.seed}) from {plan.n_pool} {plan.split} rows "
        f"the model never trained on: {args.out}/queue"
    )
    print(f"truth and model probabilities held back in {args.out}/heldback.csv (never served)")
    who = f" --annotator {people[0]}" if people else ""
    print(
        f"next: closedloop label {args.out}/queue{who}   then: closedloop human-baseline --score {args.out}"
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``label`` and ``human-baseline`` to the main CLI."""
    h = sub.add_parser(
        "human-baseline",
        help="measure the human level: a blind random sample of a run's validation data, then score it",
        description="With RUN: draw --n items at random from the validation rows the run's model never "
        "trained on and write a blind labeling queue (no model output) to --out DIR. With --score DIR: "
        "score the labels against the held-back truth, the model on the same items (paired), and write "
        "human_reference.json where the next run of the pipeline reads it.",
    )
    h.add_argument("run_dir", metavar="RUN", nargs="?")
    h.add_argument("--out", metavar="DIR", help="folder for the blind queue and the held-back truth")
    h.add_argument("--split", default="val", help="split to draw from (val: rows the model never trained on)")
    h.add_argument("--n", type=int, default=200, help="items to draw (default 200)")
    h.add_argument("--seed", type=int, default=0, help="seed of the draw and of the bootstrap (recorded)")
    h.add_argument("--annotators", metavar="A,B,C", help="several annotators: assign items to them")
    h.add_argument("--overlap", type=float, default=0.0, help="share of items labeled by several annotators")
    h.add_argument("--per-item", type=int, default=None, help="annotators per overlapping item (default all)")
    h.add_argument("--score", metavar="DIR", help="score a labeled human-baseline folder")
    h.add_argument("--annotator", default=None, help="with --score: whose labels make the human level")
    h.add_argument(
        "--run",
        metavar="RUN",
        help="with --score: compare this run's model (e.g. a retrained one) on the same items",
    )
    h.add_argument(
        "--metric",
        default="acc",
        help="with --score: acc or balanced_accuracy, for an ordinal task also qwk or mae (the verdict)",
    )
    h.add_argument(
        "--no-publish", action="store_true", help="with --score: do not write into the pipeline's runs folder"
    )
    h.set_defaults(func=cmd_human_baseline)
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
    p.add_argument(
        "--blind",
        action="store_true",
        help="hide every model output (prediction, confidence, top-3, why queued, accept key); random order",
    )
    p.add_argument("--seed", type=int, default=None, help="with --blind: seed of the random order (recorded)")
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
    p.add_argument("--agreement", metavar="OUT.html", help="agreement between annotators (and OUT.json)")
    p.add_argument(
        "--consensus", action="store_true", help="consensus labels and annotator quality (CROWDLAB)"
    )
    p.add_argument(
        "--probs",
        metavar="CSV",
        help="with --consensus: model probabilities (id, p_<class>; default queue.csv's; 'none': majority vote)",
    )
    p.add_argument(
        "--adjudicate-below",
        type=float,
        default=0.5,
        help="consensus quality under which an item goes back for adjudication (default 0.5)",
    )
    p.add_argument("--adjudicator", help="with --consensus: assign low-quality items to this annotator")
    p.add_argument(
        "--method",
        default="dawid_skene",
        choices=["dawid_skene", "crowdlab", "majority_vote"],
        help="with --consensus: how labels are combined (default dawid_skene; see docs/labeling.md)",
    )
    p.set_defaults(func=cmd_label)
