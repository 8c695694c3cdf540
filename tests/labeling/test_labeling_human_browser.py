"""Blind mode the way a person meets it: a human-baseline queue from a run, 40 items labeled by
keyboard in headless Chromium, no model output in the DOM or in any response the page received, and
the measured human level on the first screen of the next run's report (imports torch: slow)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from human_helpers import make_model_run  # noqa: E402
from labeling_browser import body_attr, chrome, missing, open_page, press, responses  # noqa: E402

from closedloop.cli import main  # noqa: E402
from closedloop.labeling import background, create_app  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(missing() is not None, reason=f"no headless browser: {missing()}"),
]
MODEL_KEYS = {"predicted", "confidence", "top", "reason", "reason_text", "priority", "p"}


def _keys(obj: object) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in _keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in _keys(v)}
    return set()


def test_blind_human_baseline_in_the_browser_reaches_the_next_report(tmp_path: Path) -> None:
    from selenium.webdriver.common.keys import Keys

    from closedloop.core.pipeline import Pipeline
    from closedloop.stages.task import DefineTask

    runs = tmp_path / "runs"
    run = make_model_run(runs, "demo")
    hb = tmp_path / "hb"
    assert main(["human-baseline", str(run), "--n", "40", "--out", str(hb), "--seed", "1"]) == 0
    held = pd.read_csv(hb / "heldback.csv", dtype={"id": str, "label": str})
    truth = dict(zip(held["id"], held["label"], strict=True))
    probs = {f"{v:.6f}".rstrip("0") for v in held.filter(like="p_").to_numpy().ravel() if 0.001 < v < 0.999}

    driver = chrome(network_log=True)
    try:
        with background(create_app(hb / "queue", annotator="ada")) as url:
            open_page(driver, url)
            assert body_attr(driver, "blind") == "1"
            for gone in ("prediction", "top3", "reason"):
                assert driver.find_elements("id", gone) == []
            first = body_attr(driver, "itemId")
            press(driver, Keys.ENTER)  # no suggestion to accept in blind mode
            assert "no suggestion" in driver.find_element("id", "hint").text
            assert body_attr(driver, "itemId") == first and not (hb / "queue" / "labels.csv").exists()
            typed = {}
            for k in range(40):
                item = body_attr(driver, "itemId")
                cls = int(truth[item])
                if k % 8 == 3:  # the person errs now and then
                    cls = (cls + 1) % 10
                press(driver, str(cls + 1) if cls < 9 else "0")  # keys 1..9, 0 = the tenth class
                typed[item] = str(cls)
            assert not driver.find_element("id", "done").get_attribute("hidden")
            text = driver.find_element("tag name", "body").text.lower()
            for word in ("confidence", "suggest", "model", "why queued", "top"):
                assert word not in text, word
            seen = responses(driver)
    finally:
        driver.quit()

    api = [(u, b) for u, mime, b in seen if "/api/" in u and "json" in mime]
    assert len(api) >= 41 and any("/api/queue" in u for u, _ in api)  # the queue and every save
    for u, b in api:
        leaked = _keys(json.loads(b)) & MODEL_KEYS
        assert not leaked, (u, leaked)
        assert not [p for p in probs if p in b], u
    html = next(b for u, mime, b in seen if mime == "text/html")
    assert "accept suggestion" not in html and 'id="prediction"' not in html

    rows = pd.read_csv(hb / "queue" / "labels.csv", dtype=str, keep_default_na=False)
    assert len(rows) == 40 and set(rows["predicted"]) == {""} and set(rows["annotator"]) == {"ada"}
    assert dict(zip(rows["id"], rows["label"], strict=True)) == typed

    assert main(["human-baseline", "--score", str(hb)]) == 0
    ref = json.loads((runs / "demo" / "human_reference.json").read_text())["reference"]
    assert ref["level"] == "human" and ref["n"] == 40 and ref["metrics"]["acc"] == pytest.approx(35 / 40)

    result = Pipeline(
        [DefineTask()], data={"source": "sklearn", "name": "digits"}, name="demo", runs_dir=runs
    ).run()
    task = json.loads(next(result.run_dir.glob("stages/*task/artifacts/task/artifact.json")).read_text())
    assert [r["level"] for r in task["references"]] == ["human"]
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert '"verdict": "not_distinguishable"' in json.dumps(summary)  # 39/40 vs 35/40: McNemar p = 0.22
    report = result.report_path.read_text()
    assert 'data-decision="human"' in report and "the measured human level" in report
    assert "acc 0.875" in report or "0.875" in report
