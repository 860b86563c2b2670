"""PNG pictures of a built report (`vietnamese-ai report ... --png DIR`), for READMEs and docs.

A headless Chromium opens the HTML file and photographs the top of the page and each figure, so
the PNGs are exactly what a reader sees. This needs the optional `playwright` package and a
Chromium installed by the system (Debian: `apt-get install chromium`); Playwright's own browser
download is never used.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vietnamese_ai.errors import UserError
from vietnamese_ai.files import check_writable_directory

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """$CHROMIUM if set, else the first Chromium or Chrome on PATH."""
    for name in (os.environ.get("CHROMIUM"), *BROWSERS):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def check_png_output(directory: str) -> str:
    """Everything --png needs, checked before the report is built: a writable directory, a Chromium and
    playwright. Returns the browser's path."""
    check_writable_directory(directory, "--png")
    browser_path = find_chromium()
    if browser_path is None:
        raise UserError("--png: no Chromium found (install it, e.g. apt-get install chromium, or set CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise UserError("--png: needs the playwright package (pip install playwright)") from None
    return browser_path


def export_png(html_path: str, directory: str, width: int = 1280) -> list[str]:
    browser_path = check_png_output(directory)
    from playwright.sync_api import sync_playwright

    os.makedirs(directory, exist_ok=True)
    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": 900}, device_scale_factor=1)
            page.goto(Path(html_path).resolve().as_uri())
            page.wait_for_function("[...document.querySelectorAll('.figure')].every(f => f.querySelector('.main-svg'))")
            path = os.path.join(directory, "report.png")
            page.screenshot(path=path)
            written.append(path)
            for i, element in enumerate(page.query_selector_all(".figure")):
                path = os.path.join(directory, f"figure-{i + 1:02d}.png")
                element.screenshot(path=path)
                written.append(path)
        finally:
            browser.close()
    return written
