"""Headless Chromium (Debian's /usr/bin/chromium + chromedriver) driven by Selenium, for page tests and
the labeling benchmark."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def missing() -> str | None:
    """Why the browser cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists() and not shutil.which(Path(path).name):
            return f"{path} is not installed (Debian packages chromium and chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    return None


def chrome(width: int = 1000, height: int = 700, network_log: bool = False) -> Any:
    """A headless Chromium window; with ``network_log`` Chrome's performance log records every
    network event, so a test can read back each response the page received (:func:`responses`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    opts.add_argument(f"--window-size={width},{height}")
    if network_log:
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def responses(driver: Any) -> list[tuple[str, str, str]]:
    """(url, mime type, body) of every response since the last call (needs ``chrome(network_log=True)``);
    binary bodies come back base64-encoded, as Chrome gives them."""
    import json

    out = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") != "Network.responseReceived":
            continue
        params = msg["params"]
        try:
            body = driver.execute_cdp_cmd("Network.getResponseBody", {"requestId": params["requestId"]})
        except Exception:  # noqa: BLE001 - a response without a body (e.g. a redirect) has nothing to check
            continue
        out.append((params["response"]["url"], params["response"].get("mimeType", ""), body.get("body", "")))
    return out


def wait_for(cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def body_attr(driver: Any, name: str) -> str:
    return driver.execute_script(f"return document.body.dataset.{name} || ''")


def press(driver: Any, key: str) -> None:
    """Press one key on the page (keyboard only, as a person would) and wait until it is handled."""
    from selenium.webdriver.common.action_chains import ActionChains

    before = int(body_attr(driver, "handled") or 0)
    ActionChains(driver).send_keys(key).perform()
    wait_for(lambda: int(body_attr(driver, "handled") or 0) > before, what=f"key {key!r} to be handled")
    wait_for(lambda: driver.execute_script(SHOWN), what="the current item to be on screen")


# true once the item named by data-item-id is drawn (its image loaded, or its row filled in)
SHOWN = """
const shown = window.labelLog.filter((e) => e.event === "shown");
return shown.length > 0 && shown[shown.length - 1].id === document.body.dataset.itemId;
"""


def open_page(driver: Any, url: str) -> None:
    driver.get(url)
    wait_for(lambda: body_attr(driver, "state") in ("ready", "error"), what="the page to load")
