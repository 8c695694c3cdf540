"""The labeling page in a real headless Chromium against a real uvicorn server: 20 items labeled with
the keyboard only, without a reload, and labels.csv checked against the keys pressed."""

from __future__ import annotations

import csv
import sys
from datetime import datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from labeling_browser import body_attr, chrome, missing, open_page, press  # noqa: E402
from labeling_helpers import CLASSES, make_queue  # noqa: E402

from closedloop.labeling import background, create_app, load_queue  # noqa: E402

pytestmark = pytest.mark.skipif(missing() is not None, reason=f"no headless browser: {missing()}")


@pytest.fixture(scope="module")
def driver():
    d = chrome()
    yield d
    d.quit()


def _rows(qdir: Path) -> list[dict[str, str]]:
    path = qdir / "labels.csv"
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _ms(t: str) -> float:
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() * 1000


def test_label_twenty_items_by_keyboard(driver, tmp_path: Path) -> None:
    from selenium.webdriver.common.keys import Keys

    qdir = make_queue(tmp_path, n=24)
    pred = {it.id: it.predicted[0] for it in load_queue(qdir).items}
    with background(create_app(qdir, annotator="ada")) as url:
        open_page(driver, url)
        driver.execute_script("window.__sameDocument = 'yes'")  # gone if the page ever reloads
        assert body_attr(driver, "itemId") == "100"
        expected: list[tuple[str, str, str]] = []  # (id, label, status) rows labels.csv must hold

        def step(key: str, row: tuple[str, str, str] | None, then_id: str) -> None:
            n_before = len(_rows(qdir))
            press(driver, key)
            if row is not None:
                expected.append(row)
            got = [(r["id"], r["label"], r["status"]) for r in _rows(qdir)]
            # the next item is on screen only once the decision is in labels.csv
            assert body_attr(driver, "itemId") == then_id, key
            assert got == expected, key
            assert len(got) == n_before + (row is not None)

        step("1", ("100", "cat", "labeled"), "101")
        step("2", ("101", "dog", "labeled"), "102")
        step(Keys.ENTER, ("102", pred["102"], "labeled"), "103")  # accept the model's suggestion
        step("s", ("103", "", "skipped"), "104")
        step("u", ("104", "", "unsure"), "105")
        step("z", ("104", "", "undone"), "104")  # undo goes back to the item
        step("3", ("104", "fox", "labeled"), "105")
        step("7", None, "105")  # not a class: ignored, with a hint
        assert "key 7 is not a class" in driver.find_element("id", "hint").text
        step(Keys.ARROW_RIGHT, None, "106")
        step("1", ("106", "cat", "labeled"), "107")
        step(Keys.ARROW_LEFT, None, "106")
        step(Keys.ARROW_LEFT, None, "105")
        step("2", ("105", "dog", "labeled"), "107")  # next undecided after 105
        cycle = ["1", "2", "3", Keys.ENTER]
        for i, item in enumerate(range(107, 121)):
            key = cycle[i % 4]
            label = pred[str(item)] if key == Keys.ENTER else CLASSES[int(key) - 1]
            step(key, (str(item), label, "labeled"), str(item + 1))

        assert driver.execute_script("return window.__sameDocument") == "yes"  # no reload
        assert body_attr(driver, "labeled") == "20"
        assert "20 labeled · 1 skipped · 0 unsure · 3 to go" in driver.find_element("id", "progress").text
        assert driver.find_element("id", "counter").text == "22 / 24"
        rows = _rows(qdir)
        assert {r["annotator"] for r in rows} == {"ada"}
        assert all(r["predicted"] == pred[r["id"]] for r in rows)

        # each row was on disk before the next item was shown: the i-th "saved" event is the i-th
        # non-undo row, and the first "shown" event after it is no earlier than the row's time
        log = driver.execute_script("return window.labelLog")
        labeled_rows = [r for r in rows if r["status"] != "undone"]
        saved_at = [k for k, e in enumerate(log) if e["event"] == "saved"]
        assert [log[k]["id"] for k in saved_at] == [r["id"] for r in labeled_rows]
        for k, r in zip(saved_at, labeled_rows, strict=True):
            nxt = next(e for e in log[k + 1 :] if e["event"] == "shown")
            assert nxt["t"] >= log[k]["t"] and nxt["t"] >= _ms(r["time"]), r

        driver.save_screenshot(str(tmp_path / "labeling.png"))  # test artifact
        assert (tmp_path / "labeling.png").stat().st_size > 0

        # reopening resumes at the first undecided item (121; 103 was skipped, so it counts as decided)
        open_page(driver, url)
        assert body_attr(driver, "itemId") == "121"


def test_multilabel_toggles_and_enter_confirms(driver, tmp_path: Path) -> None:
    from selenium.webdriver.common.keys import Keys

    qdir = make_queue(tmp_path, n=6, multilabel=True)
    first = load_queue(qdir).items[0]
    with background(create_app(qdir, annotator="bo")) as url:
        open_page(driver, url)
        on = [li.get_attribute("data-cls") for li in driver.find_elements("css selector", "#classes li.on")]
        assert on == first.predicted  # the model's suggestion starts switched on
        press(driver, "1")
        press(driver, "3")
        assert _rows(qdir) == []  # toggles alone save nothing
        press(driver, Keys.ENTER)
        want = sorted(set(first.predicted) ^ {"cat", "fox"}, key=CLASSES.index)
        (row,) = _rows(qdir)
        assert row["id"] == first.id and row["status"] == "labeled"
        assert (row["label"].split(";") if row["label"] else []) == want
        assert body_attr(driver, "itemId") == "101"


def test_table_rows_show_features(driver, tmp_path: Path) -> None:
    qdir = make_queue(tmp_path, n=5, kind="table")
    with background(create_app(qdir)) as url:
        open_page(driver, url)
        text = driver.find_element("id", "features").text
        assert "age" in text and "bmi" in text and "smoker" in text
        assert not driver.find_element("id", "img").is_displayed()
        press(driver, "2")
        assert [(r["id"], r["label"]) for r in _rows(qdir)] == [("100", "dog")]


def test_invalid_labels_file_named_on_the_page(driver, tmp_path: Path) -> None:
    qdir = make_queue(tmp_path, n=5)
    (qdir / "labels.csv").write_text(
        "id,label,annotator,time,status,predicted\n"
        "100,cat,ada,2026-11-30T20:00:00.000Z,labeled,cat\n"
        "101,wolf,ada,2026-11-30T20:00:01.000Z,labeled,cat\n"
    )
    with background(create_app(qdir)) as url:
        open_page(driver, url)
        assert body_attr(driver, "state") == "error"
        err = driver.find_element("id", "error").text
        assert "labels.csv line 3" in err and "wolf" in err


def test_labels_file_broken_while_labeling(driver, tmp_path: Path) -> None:
    qdir = make_queue(tmp_path, n=5)
    with background(create_app(qdir)) as url:
        open_page(driver, url)
        press(driver, "1")
        with open(qdir / "labels.csv", "a") as fh:  # someone edits the file by hand meanwhile
            fh.write("101,dog,bo,2026-11-30T20:00:01.000Z,maybe,cat\n")
        press(driver, "2")
        assert "labels.csv line 3: status 'maybe'" in driver.find_element("id", "error").text
        assert body_attr(driver, "itemId") == "101"  # not moved on: nothing was saved
        assert (qdir / "labels.csv").read_text().count("\n") == 3
