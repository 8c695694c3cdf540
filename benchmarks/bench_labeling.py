"""Labeling throughput of ``closedloop label`` in headless Chromium, keyboard only, no page reload.

A real review queue: a logistic regression trained on PneumoniaMNIST's train split predicts the test
split (data it never trained on); the N most uncertain test images are exported with the monitor's own
``export_queue`` (images, ``queue.csv`` with probabilities, ``queue.json``). A scripted labeler then
presses, for each item, Enter when the suggestion is the true class and the class's number key when it
is not, on a real uvicorn server. Printed: items labeled, items/minute (page + server + disk time per
item; a person's thinking time comes on top), that labels.csv equals the true classes, and that each
row was on disk before the next image was shown. Optionally rewrites docs/labeling.png.

Run: ``.venv/bin/python benchmarks/bench_labeling.py [--n 40] [--screenshot docs/labeling.png]``
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "labeling"))
from labeling_browser import body_attr, chrome, missing, open_page, press  # noqa: E402

from closedloop.labeling import background, create_app  # noqa: E402
from closedloop.monitoring.flywheel import export_queue, uncertainty  # noqa: E402

MEDMNIST = ROOT.parent / "shared" / "data" / "medmnist" / "pneumoniamnist.npz"
CLASSES = ["normal", "pneumonia"]


def build_queue_dir(root: Path, n: int) -> tuple[Path, dict[str, str]]:
    """Export the n most uncertain test images; returns the folder and each id's true class."""
    from sklearn.linear_model import LogisticRegression

    with np.load(MEDMNIST) as z:
        Xtr, ytr = z["train_images"], z["train_labels"].ravel()
        Xte, yte = z["test_images"], z["test_labels"].ravel()
    clf = LogisticRegression(C=0.01, max_iter=300).fit(Xtr.reshape(len(Xtr), -1) / 255.0, ytr)
    proba = clf.predict_proba(Xte.reshape(len(Xte), -1) / 255.0)
    ent, margin = uncertainty(proba, "binary")
    pred = proba.argmax(axis=1)
    df = pd.DataFrame(
        {
            "id": np.arange(len(Xte)),
            "entropy": ent,
            "margin": margin,
            "predicted": [CLASSES[c] for c in pred],
            "confidence": proba[np.arange(len(Xte)), pred],
            "priority": ent,
            "reason": "uncertain",
        }
    )
    queue = df.sort_values("priority", ascending=False).head(n).reset_index(drop=True)
    info = SimpleNamespace(kind="images", problem_type="binary", label_names=CLASSES, threshold=0.5)
    qdir = root / "queue"
    export_queue(queue, Xte[..., None], None, SimpleNamespace(info=info), qdir, proba=proba)  # type: ignore[arg-type]
    truth = {str(i): CLASSES[yte[i]] for i in queue["id"]}
    return qdir, truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="items to label")
    ap.add_argument("--screenshot", type=Path, help="also save a screenshot here (docs/labeling.png)")
    args = ap.parse_args()
    why = missing()
    if why:
        sys.exit(f"cannot run: {why}")
    print(
        f"# .venv/bin/python benchmarks/bench_labeling.py --n {args.n}  ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)"
    )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at start: {load} on {os.cpu_count()} cores (shared machine: times are inflated)")
    with tempfile.TemporaryDirectory() as tmp:
        qdir, truth = build_queue_dir(Path(tmp), args.n + 1)  # +1: the last label has a next image
        q = pd.read_csv(qdir / "queue.csv", dtype={"id": str})
        correct = sum(truth[i] == p for i, p in zip(q["id"], q["predicted"], strict=True))
        print(
            f"queue: {len(q)} most uncertain PneumoniaMNIST test images (never trained on) under a "
            f"logistic regression fit on the train split; suggestion right for {correct}/{len(q)}"
        )
        driver = chrome(1000, 720)
        try:
            with background(create_app(qdir, annotator="bench")) as url:
                open_page(driver, url)
                driver.execute_script("window.__sameDocument = 'yes'")
                keys = []
                t0 = time.perf_counter()
                for _ in range(args.n):
                    item = body_attr(driver, "itemId")
                    pred = q.loc[q["id"] == item, "predicted"].item()
                    key = "\ue007" if truth[item] == pred else str(CLASSES.index(truth[item]) + 1)
                    press(driver, key)  # returns once the key is handled and the next image is shown
                    keys.append((item, key))
                elapsed = time.perf_counter() - t0
                same = driver.execute_script("return window.__sameDocument") == "yes"
                log = driver.execute_script("return window.labelLog")
                if args.screenshot:
                    open_page(driver, url)
                    for k in ["\ue014", "\ue014"]:  # arrow right twice: show an item mid-queue
                        press(driver, k)
                    driver.save_screenshot(str(args.screenshot))
        finally:
            driver.quit()
        with open(qdir / "labels.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    ok_labels = [(r["id"], r["label"]) for r in rows] == [(i, truth[i]) for i, _ in keys]
    saved_at = [k for k, e in enumerate(log) if e["event"] == "saved"]
    ordered = 0
    for k, r in zip(saved_at, rows, strict=False):
        nxt = next((e for e in log[k + 1 :] if e["event"] == "shown"), None)
        t_row = datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp() * 1000
        ordered += nxt is not None and nxt["t"] >= log[k]["t"] and nxt["t"] >= t_row
    n = len(keys)
    n_enter = sum(k == "\ue007" for _, k in keys)
    print(
        f"keys: {n_enter} Enter (accept suggestion), {n - n_enter} number keys; page reloads: {0 if same else 'yes'}"
    )
    print(
        f"items labeled by keyboard without a reload: {n} in {elapsed:.1f} s = {60 * n / elapsed:.0f} items/minute"
    )
    print(f"labels.csv rows equal the true classes in key order: {ok_labels} ({len(rows)} rows)")
    print(f"each save on disk before the next image was shown: {ordered}/{len(saved_at)}")
    print("(items/minute is the tool's own time per item: page, server and fsync; human time comes on top)")


if __name__ == "__main__":
    main()
