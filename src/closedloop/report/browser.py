"""Open a report in headless Chromium (Selenium) at a given window size: which decision items are
visible on the first screen, and a screenshot of it. Used by the tests and the benchmark."""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from closedloop.core.errors import ClosedLoopError
from closedloop.report.first_screen import ITEMS

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER = ("/usr/bin/chromedriver",)


class ItemBox(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: str
    found: bool
    top: float = 0.0
    bottom: float = 0.0
    left: float = 0.0
    right: float = 0.0
    visible: bool = False
    """The whole box lies inside the first viewport (and the element is displayed)."""


class FirstScreen(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width: int
    height: int
    items: list[ItemBox]
    screenshot: str | None = None

    @property
    def all_visible(self) -> bool:
        return all(i.visible for i in self.items)


def _find(candidates: tuple[str, ...], what: str) -> str:
    for c in candidates:
        if Path(c).is_file():
            return c
    found = shutil.which(Path(candidates[0]).name)
    if found:
        return found
    raise ClosedLoopError(f"{what} not found (looked at {', '.join(candidates)}); install it to check pages")


def check_first_screen(
    report: str | Path, *, width: int = 1280, height: int = 800, screenshot: str | Path | None = None
) -> FirstScreen:
    """Load ``report`` with a ``width`` x ``height`` viewport and measure each decision item's box."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    opts.binary_location = _find(CHROMIUM, "Chromium")
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ):
        opts.add_argument(a)
    opts.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(_find(CHROMEDRIVER, "chromedriver")), options=opts)
    try:
        driver.get(Path(report).resolve().as_uri())
        # --window-size sets the outer window; make the inner viewport exactly width x height.
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        driver.set_window_size(width + (width - inner[0]), height + (height - inner[1]))
        vw, vh = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        boxes = []
        for item in ITEMS:
            els = driver.find_elements(By.CSS_SELECTOR, f'[data-decision="{item}"]')
            if not els:
                boxes.append(ItemBox(item=item, found=False))
                continue
            r = driver.execute_script(
                "var r=arguments[0].getBoundingClientRect();return [r.top,r.bottom,r.left,r.right];", els[0]
            )
            visible = bool(els[0].is_displayed() and r[0] >= 0 and r[2] >= 0 and r[1] <= vh and r[3] <= vw)
            boxes.append(
                ItemBox(item=item, found=True, top=r[0], bottom=r[1], left=r[2], right=r[3], visible=visible)
            )
        shot = None
        if screenshot is not None:
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(screenshot))
            shot = str(screenshot)
        return FirstScreen(width=vw, height=vh, items=boxes, screenshot=shot)
    finally:
        driver.quit()
