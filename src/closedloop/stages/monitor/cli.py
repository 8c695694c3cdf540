"""``closedloop monitor`` and ``closedloop retrain`` (added to the main CLI by :func:`add_commands`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.core.errors import DataError
from closedloop.stats.promotion_arguments import add_promotion_arguments

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp")


def read_data(path: str | Path, split: str = "test", kind: str = "images") -> tuple[Any, np.ndarray | None]:
    """Production data from an .npz (``images`` or MedMNIST ``<split>_images``; ``--split all``
    concatenates train, val, test), an image folder (files, or class subfolders whose names become
    labels), or a CSV/Parquet table. Returns (data, labels or None)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if "images" in keys:
                return z["images"], (z["labels"] if "labels" in keys else None)
            splits = ["train", "val", "test"] if split == "all" else [split]
            missing = [s for s in splits if f"{s}_images" not in keys]
            if missing:
                raise DataError(
                    f"{path}: no 'images' array and no {', '.join(f'{s}_images' for s in missing)}; "
                    f"arrays present: {sorted(keys)}"
                )
            X = np.concatenate([z[f"{s}_images"] for s in splits])
            y = (
                np.concatenate([z[f"{s}_labels"] for s in splits])
                if all(f"{s}_labels" in keys for s in splits)
                else None
            )
            return X, y
    if path.is_dir():
        from PIL import Image

        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXT)
        if not files:
            raise DataError(f"{path}: no image files ({', '.join(IMAGE_EXT)})")
        imgs = [np.asarray(Image.open(f)) for f in files]
        shapes = {i.shape for i in imgs}
        if len(shapes) > 1:
            raise DataError(f"{path}: images have different shapes {sorted(shapes)[:4]}; resize them first")
        return np.stack(imgs), None
    if path.suffix in (".csv", ".parquet"):
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        return df, None
    raise DataError(f"{path}: unsupported data file; expected .npz, .csv, .parquet or an image folder")


def cmd_monitor(args: argparse.Namespace) -> int:
    from closedloop.core.io import to_json, write_text_atomic
    from closedloop.monitoring.logreader import is_log_dir, log_files
    from closedloop.monitoring.monitor import Monitor

    path = Path(args.data)
    is_log = path.is_dir() and (is_log_dir(path) or any(path.glob("*.jsonl")))
    if args.set_reference is not None and not args.spot_check_labels:
        raise DataError(
            "--set-reference without a verified period: a new reference (and a reset of the stream test) needs "
            "a spot check that agrees with the current one; draw one with --spot-check N, label it, and pass "
            "--spot-check-labels spot_check.csv"
        )
    if (args.spot_check or args.spot_check_labels) and not is_log:
        raise DataError(
            f"{path}: --spot-check / --spot-check-labels draw from and join with a request log directory "
            "(the server's --log-dir)"
        )
    if is_log:
        log_files(path)  # a directory of .jsonl files without requests-*.jsonl: say what is missing
        spot = _spot_checks(args, path)  # first: a bad labels file fails before the long drift check
        if "new_reference" in spot:  # the log so far is the verified period: nothing after it to monitor yet
            if args.out:
                write_text_atomic(Path(args.out), to_json({"run_dir": str(args.run_dir), **spot}))
            return 0
        if args.shadow:
            raise DataError(
                f"--shadow with a request log: the log already holds the challenger's records; compare them "
                f"with 'closedloop compare-live {path}'"
            )
        from closedloop.monitoring.logmonitor import monitor_log

        out = monitor_log(
            Monitor.load(args.run_dir, model_dir=args.model),
            path,
            run_dir=args.run_dir,
            window=args.window,
            review=args.review,
            review_dir=args.review_dir,
        )
        out["run_dir"] = str(args.run_dir)
        out.update(spot)
        if args.plot:
            from closedloop.monitoring.monitor import MonitorResult

            res = MonitorResult(
                windows=out["windows"],
                window=out["window"],
                alpha=out["alpha"],
                stream_evidence=out.get("stream_evidence", "over_runs"),
                stream_evidence_delta=out.get("stream_evidence_delta"),
            )
            out["timeline_plot"] = str(res.plot(args.plot))
        if args.out:
            write_text_atomic(Path(args.out), to_json(out))
        _print_windows(out)
        lg = out["log"]
        print(
            f"log {path}: {lg['n_records']} champion record(s), {lg['n_rows']} row(s) from "
            f"{len(lg['files'])} file(s); {lg['n_labeled']} row(s) with feedback labels"
        )
        for w in lg["warnings"][:5]:
            print(f"  warning: {w}")
        if "review_queue" in out:
            print(f"review queue: {out['review_queue']['n']} row(s) in {out['review_queue']['dir']}")
        if args.out:
            print(f"written: {args.out}")
        return 0

    monitor = Monitor.load(args.run_dir, model_dir=args.model)
    data, labels = read_data(args.data, args.split, monitor.profile.info.kind)
    if args.label_column and hasattr(data, "columns"):
        if args.label_column not in data.columns:
            raise DataError(f"{args.data}: no label column {args.label_column!r}")
        labels = data.pop(args.label_column).to_numpy()
        info = monitor.profile.info
        if info.problem_type in ("binary", "multiclass", "ordinal"):
            # class names as the training file wrote them, or indices
            from closedloop.monitoring.production_labels import labels_to_index

            labels = labels_to_index(labels, list(info.label_names), Path(args.data))
    if args.no_labels:
        labels = None
    window = args.window or len(data)
    result = monitor.check_stream(data, window=window, labels=labels)
    out = result.to_dict()
    out["run_dir"] = str(args.run_dir)
    out["data"] = str(args.data)
    if args.plot:
        out["timeline_plot"] = str(result.plot(args.plot))
    if args.review:
        queue = monitor.review_queue(data, k=args.review, out_dir=args.review_dir, strategy=args.strategy)
        out["review_queue"] = {"n": len(queue), "dir": str(args.review_dir) if args.review_dir else None}
        out["review_queue"]["selected_by"] = {
            str(k): int(v) for k, v in queue["selected_by"].value_counts().items()
        }
    if args.shadow:
        out["shadow"] = {
            "challenger_run": str(args.shadow),
            **shadow_report(monitor, Monitor.load(args.shadow), data, out["windows"]),
        }
    if args.out:
        write_text_atomic(Path(args.out), to_json(out))
    out["window"] = window
    _print_windows(out)
    if args.shadow:
        sh = out["shadow"]["overall"]
        print(f"shadow mode against {args.shadow} on {sh['n']} samples:")
        for name in ("champion", "challenger"):
            est = ", ".join(f"{k}~{v:.3f}" for k, v in sh[name]["estimated"].items())
            print(f"  {name:<10} estimated {est}")
        if "disagreement" in sh:
            print(f"  disagreement {sh['disagreement']:.1%} ({sh['disagreement_count']} samples)")
    if args.out:
        print(f"written: {args.out}")
    return 0


def _spot_checks(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """--spot-check N (draw random rows to label), --spot-check-labels FILE (realized metrics from
    them only) and --set-reference (a verified period becomes the new reference)."""
    out: dict[str, Any] = {}
    if not (args.spot_check or args.spot_check_labels):
        return out
    from closedloop.monitoring import spotcheck
    from closedloop.monitoring.logmonitor import champion_rows
    from closedloop.monitoring.monitor import Monitor

    monitor = Monitor.load(args.run_dir, model_dir=args.model)
    info = monitor.profile.info
    rows, _ = champion_rows(log_dir, args.run_dir)
    if args.spot_check:
        with_input = rows.take(np.flatnonzero(rows.has_input)) if rows.inputs is not None else rows
        picked = spotcheck.draw(with_input, args.spot_check, seed=args.seed)
        csv_path = spotcheck.export(with_input, picked, Path(args.spot_check_dir), info.kind)
        record = spotcheck.record_picks(Path(args.run_dir), with_input, picked, args.seed)
        out["spot_check_drawn"] = {"n": int(len(picked)), "file": str(csv_path), "record": str(record)}
        print(
            f"spot check: {len(picked)} row(s) drawn uniformly at random -> {csv_path} (fill in 'label', then "
            f"pass it as --spot-check-labels)"
        )
    if args.spot_check_labels:
        pos, y = spotcheck.read_labels(
            Path(args.spot_check_labels), rows, info.label_names, info.problem_type
        )
        check = spotcheck.measure(y, rows.proba[pos], info, seed=args.seed)
        out["spot_check"] = check
        got = ", ".join(
            f"{m}={v['value']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]"
            for m, v in check["metrics"].items()
        )
        agree = check.get("agrees_with_reference")
        print(
            f"spot check: realized on {check['n']} random row(s): {got}"
            + (
                ""
                if agree is None
                else f"; {'agrees' if agree else 'DISAGREES'} with the reference accuracy "
                f"{check['reference_acc']:.3f}"
            )
        )
        if args.set_reference is not None:
            from closedloop.stages.monitor.reference import set_reference

            new = set_reference(
                monitor,
                Path(args.run_dir),
                rows,
                pos,
                y,
                check,
                Path(args.set_reference) if args.set_reference else None,
            )
            out["new_reference"] = str(new)
            print(f"new reference from the verified period: {new} (the stream test restarts there)")
        elif hint := larger_reference_hint(check, info.reference_size + info.calibration_size):
            print(hint)
    return out


def larger_reference_hint(check: dict[str, Any], held: int) -> str | None:
    """What to say when a spot check verifies its period and holds more labeled rows than the reference's
    ``held`` held-out rows: a larger reference gave a closer label-free estimate and earlier stream alarms at no
    cost to the model (docs/monitor_decisions.md, measurement P22: 498 rows against 262).

    >>> larger_reference_hint({"agrees_with_reference": True, "n": 500}, 262)[:62]
    'spot check: this verified period has 500 random labeled row(s)'
    >>> larger_reference_hint({"agrees_with_reference": True, "n": 200}, 262) is None
    True
    """
    if not check.get("agrees_with_reference") or check["n"] <= held:
        return None
    return (
        f"spot check: this verified period has {check['n']} random labeled row(s), more than the reference's "
        f"{held}; --set-reference makes them the new reference (a larger reference gave a closer label-free "
        "estimate and earlier stream alarms in docs/monitor_decisions.md, measurement P22)"
    )


def _print_windows(out: dict[str, Any]) -> None:
    from closedloop.monitoring.stream import promise

    s = out["summary"]
    print(
        f"{s['n_windows']} window(s) of {out['window']}: {s['n_alarm']} alarm, {s['n_warn']} warn, {s['n_ok']} ok"
    )
    for w in out["windows"]:
        est = ", ".join(f"{k}~{v:.3f}" for k, v in w["estimated"].items())
        if w.get("estimate_withheld"):
            need = w.get("spot_check", {}).get("labels_needed")
            est = "estimate withheld" + (f" (spot check: {need} random labels)" if need else "")
        real = ", ".join(f"{k}={v:.3f}" for k, v in w.get("realized", {}).items())
        real = f"  realized {real} (n={w['n_labeled']})" if real and "n_labeled" in w else ""
        ev = "; ".join(w["evidence"][:2])
        st = w.get("stream", {})
        stream = f"  stream e={st['e_value']:.3g}{' ALARM' if st.get('alarm') else ''}" if st else ""
        print(
            f"  [{w['index']:>3}] {w['start']}-{w['end']}: {w['alert']:<5} min-p={w['min_p']:.2g}{stream}  "
            f"{est}{real}  {ev}"
        )
        mix = next((e for e in w["evidence"][2:] if e.startswith("class mix")), None)
        if mix:  # the estimate a person needs when the mix moved, even when other evidence came first
            print(f"        {mix}")
    st = out.get("stream") or {}
    if st:
        verdict = f"ALARM (raised at row {st['alarm_at']})" if st["alarm"] else "no alarm"
        how = ""
        if st.get("test") == "reference":  # against the fixed held-out rows, a look every look_rows rows
            p = st.get("p_value")
            how = f" against the fixed reference, {st['looks']} look(s)" + (f", last p={p:.2g}" if p else "")
        print(
            f"stream test over all {st['n']} row(s){how}: {verdict}; e-value {st['e_value']:.3g} "
            f"(alarm at {st['threshold']:.3g}; {promise(st['alpha'], st.get('delta'))})"
        )
    if out.get("guarantee"):
        print(f"guarantee: {out['guarantee']}")


def shadow_report(champion: Any, challenger: Any, data: Any, windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Shadow mode over the same windows as the drift check: both models score every production
    window; disagreement and each model's label-free estimate, overall and per window."""
    from closedloop.monitoring.monitor import Monitor

    def rows(start: int, end: int) -> Any:
        return data.iloc[start:end] if hasattr(data, "iloc") else data[start:end]

    per_window = []
    for w in windows:
        res = Monitor.shadow(champion, challenger, rows(w["start"], w["end"]))
        per_window.append({"index": w["index"], "start": w["start"], "end": w["end"], **res})
    return {
        "overall": Monitor.shadow(champion, challenger, data),
        "windows": per_window,
    }


def cmd_retrain(args: argparse.Namespace) -> int:
    from closedloop.stages.monitor.retrain import run_retrain

    out = run_retrain(
        args.config,
        args.add_labeled,
        champion=args.champion,
        overrides=args.set,
        on=args.on,
        alpha=args.alpha,
        unseal_test=args.unseal_test,
        eval_labels=args.eval_labels,
        margin=args.margin,
    )
    c = out["comparison"]
    print(
        f"challenger {out['challenger']}\nchampion   {out['champion']}\n{c['metric']}: "
        f"{c['value_b']:.4f} -> {c['value_a']:.4f} (delta {c['delta']:+.4f}, 95% CI [{c['ci95'][0]:+.4f}, "
        f"{c['ci95'][1]:+.4f}], p={c['p_value']:.3g}) on {out['decision']['n']} samples of "
        f"{out['decision']['evaluated_on']}"
    )
    ni = out["decision"].get("non_inferiority")
    if ni:
        print(f"non-inferiority {ni['sentence']}")
    ex = out.get("excluded") or {}
    if ex.get("n"):
        by = ", ".join(f"{k} {v}" for k, v in ex["by"].items())
        print(f"left out {ex['n']} of {ex['of']} held-out sample(s) a model trained on (content hash: {by})")
    dv = out.get("dataset_version") or {}
    if dv:
        print(f"dataset version {dv['dataset_version']}: {dv['n_added']} labeled sample(s) added to train")
    print(("PROMOTE: " if out["promote"] else "keep the champion: ") + "; ".join(out["reasons"]))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``monitor`` and ``retrain`` to the main CLI's subparsers."""
    mon = subparsers.add_parser("monitor", help="check production data against a run's reference profile")
    mon.add_argument("run_dir", help="run directory holding the monitor stage's reference profile")
    mon.add_argument(
        "data",
        help=".npz (images or <split>_images), image folder, CSV/Parquet, or a request log directory "
        "(the server's --log-dir: windows over the logged champion traffic, realized metrics from feedback)",
    )
    mon.add_argument(
        "--window", type=int, default=None, help="samples per window (default: one window; logs: 200)"
    )
    mon.add_argument("--out", help="write the JSON result here")
    mon.add_argument("--split", default="test", help="split of a MedMNIST-style .npz (train/val/test/all)")
    mon.add_argument("--model", help="model directory (default: the run's model artifact)")
    mon.add_argument("--plot", help="write the drift timeline PNG here")
    mon.add_argument(
        "--review", type=int, default=0, metavar="K", help="export the K samples most worth labeling"
    )
    mon.add_argument(
        "--review-dir", default="review_queue", help="where --review writes images and queue.csv"
    )
    mon.add_argument(
        "--strategy", help="review queue selection (default: the profile's, see docs/monitor.md)"
    )
    mon.add_argument("--label-column", help="table column holding labels (realized performance)")
    mon.add_argument("--no-labels", action="store_true", help="ignore labels found in the data")
    mon.add_argument(
        "--spot-check",
        type=int,
        default=0,
        metavar="N",
        help="request logs: draw N logged rows uniformly at random for labeling (spot_check.csv); the "
        "picks are recorded in RUN_DIR/spot_checks/ so their labels count as random, also via POST /feedback",
    )
    mon.add_argument("--spot-check-dir", default="spot_check", help="where --spot-check writes")
    mon.add_argument(
        "--spot-check-labels",
        metavar="FILE",
        help="the filled-in spot_check.csv: realized metrics with intervals from those random rows only",
    )
    mon.add_argument(
        "--set-reference",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="with --spot-check-labels that agree: the verified rows become the new reference "
        "(default RUN_DIR/references/<time>); the stream test restarts there",
    )
    mon.add_argument("--seed", type=int, default=0, help="seed of the spot check's random draw")
    mon.add_argument(
        "--shadow",
        metavar="CHALLENGER_RUN",
        help="shadow mode: also run this run's model on the same windows; report disagreement and "
        "each model's estimated performance",
    )
    mon.set_defaults(func=cmd_monitor)

    rt = subparsers.add_parser(
        "retrain", help="retrain with newly labeled samples and compare with the champion"
    )
    rt.add_argument("config", help="the pipeline YAML of the deployed model")
    rt.add_argument("--add-labeled", required=True, help="folder of class subfolders, or a labeled CSV")
    rt.add_argument("--champion", help="run directory of the deployed model (default: the latest run)")
    rt.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override as in 'closedloop run' (data.root=...); the comparison uses the same resolved data",
    )
    rt.add_argument("--on", choices=["test", "val"], default="test", help="held-out split for the comparison")
    add_promotion_arguments(rt)
    rt.add_argument("--out", help="write the comparison JSON here")
    rt.set_defaults(func=cmd_retrain)


def main(argv: list[str] | None = None) -> int:  # standalone use: python -m closedloop.stages.monitor.cli
    parser = argparse.ArgumentParser(prog="closedloop")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
