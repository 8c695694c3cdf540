"""The report as a person sees it: headless Chromium at 1280x800, every decision item on the first
screen (element boxes inside the viewport), collapsible sections, a sticky table of contents."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_run import audit, make_run, task  # noqa: E402

from closedloop.core.pipeline import RunResult  # noqa: E402
from closedloop.report.first_screen import ITEMS  # noqa: E402
from closedloop.report.html import write_report  # noqa: E402

needs_browser = pytest.mark.skipif(
    not (Path("/usr/bin/chromium").is_file() and Path("/usr/bin/chromedriver").is_file()),
    reason="headless Chromium + chromedriver not installed",
)


def _crowded_run(tmp_path: Path) -> Path:
    """The worst case for the first screen: four bars, eight audit findings, a tracking failure."""
    findings = [
        {"check": f"check_{i}", "severity": "warning" if i else "error", "message": "a long message " * 20}
        for i in range(8)
    ]
    run = make_run(
        tmp_path,
        artifacts={
            "task": task(acceptance={"auc": 0.9, "acc": 0.8, "balanced_accuracy": 0.8, "f1": 0.7}),
            "audit": audit(findings),
        },
        tracking={
            "backend": "mlflow",
            "ok": False,
            "error": "ConnectionError: cannot reach http://127.0.0.1:9",
        },
    )
    summary = json.loads((run / "summary.json").read_text())
    summary["test_openings"] = [
        {"time": f"t{i}", "stage": "train", "purpose": "evaluation", "reason": "final"} for i in range(50)
    ]
    write_report(run, SimpleNamespace(stages=[]), [], {}, summary)
    return run


def test_report_is_one_self_contained_file(tmp_path: Path) -> None:
    doc = (_crowded_run(tmp_path) / "report.html").read_text()
    # no external resources: only data: URIs and in-page anchors
    refs = re.findall(r'(?:src|href)="([^"]*)"', doc)
    assert all(r.startswith(("data:", "#")) for r in refs), refs
    assert doc.count("<details") >= 2 and 'class="toc"' in doc
    for item in ITEMS:
        assert f'data-decision="{item}"' in doc
    assert "Tracking (mlflow) failed" in doc and "cannot reach" in doc
    assert json.loads((tmp_path / "demo/20260101-000000-abcdef12/decision.json").read_text())["next_step"]


def test_notebook_repr_shows_the_decision(tmp_path: Path) -> None:
    run = _crowded_run(tmp_path)
    html = RunResult(run, json.loads((run / "summary.json").read_text()), {})._repr_html_()
    assert "Recommended next step" in html and "<iframe" in html


@needs_browser
def test_first_screen_shows_every_decision_item(tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.common.by import By

    from closedloop.report.browser import CHROMEDRIVER, CHROMIUM, check_first_screen

    run = _crowded_run(tmp_path)
    shot = tmp_path / "first_screen.png"
    fs = check_first_screen(run / "report.html", screenshot=shot)
    assert (fs.width, fs.height) == (1280, 800)
    missing = [i.item for i in fs.items if not i.visible]
    assert not missing, f"not on the first screen: {missing} ({fs.items})"
    assert shot.stat().st_size > 10_000

    # sections collapse and the table of contents stays in view when scrolled
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM[0]
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER[0]), options=opts)
    try:
        driver.get((run / "report.html").resolve().as_uri())
        custody = driver.find_element(By.XPATH, "//*[@id='custody']/ancestor::details")
        assert custody.get_attribute("open") is None
        driver.find_element(By.CSS_SELECTOR, 'nav.toc a[href="#custody"]').click()
        assert custody.get_attribute("open") is not None  # the link opened its section
        driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        assert driver.execute_script("return window.scrollY") > 200
        top = driver.execute_script("return document.querySelector('nav.toc').getBoundingClientRect().top")
        assert top == 0
    finally:
        driver.quit()
