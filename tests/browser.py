"""A headless Chromium for the report's layout tests: where the page's boxes lie, measured
by the browser itself, and screenshots.

The browser is the system's Chromium or Chrome (Debian: `apt-get install chromium`), or the
executable named by CALOFORGE_BROWSER; none is downloaded. Measurements run a small script
in a copy of the page (the report itself holds no script) and read its JSON back from the
DOM Chromium dumps (`--dump-dom`), so no driver package is needed.

As a script, a screenshot of a report (how docs/report-demo.png is made):

    python tests/browser.py demo-output/report/index.html docs/report-demo.png
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# Headless, as root in a sandboxed container, and quiet on a machine with no network: the
# background services would only try (and fail) to reach their hosts.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)
TIMEOUT_S = 120

# Where the boxes of the page lie (CSS pixels, the viewport's origin): the page's own width
# and the viewport's, each table box (its visible and its full width), each table, each
# verdict badge and each image, with the table box it lies in.
MEASURE = """
(() => {
  const rect = (e) => { const r = e.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, width: r.width}; };
  const boxes = [...document.querySelectorAll('.table-box')];
  const out = {
    viewport: document.documentElement.clientWidth,
    page: document.documentElement.scrollWidth,
    main: rect(document.querySelector('main')),
    boxes: boxes.map((b) => ({...rect(b), client: b.clientWidth, scroll: b.scrollWidth,
      text: b.innerText.slice(0, 40)})),
    tables: [...document.querySelectorAll('table')].map(rect),
    badges: [...document.querySelectorAll('.badge')].map((e) => ({...rect(e),
      text: e.innerText, box: boxes.indexOf(e.closest('.table-box'))})),
    images: [...document.querySelectorAll('img')].map(rect),
  };
  const pre = document.createElement('pre');
  pre.id = 'caloforge-measure';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
"""


def find_browser() -> str | None:
    """The Chromium or Chrome executable to use, or None."""
    named = os.environ.get("CALOFORGE_BROWSER")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(browser: str, args: list[str], profile: str) -> str:
    done = subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{browser} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def measure(page: Path, width: int, height: int = 900, browser: str | None = None) -> Any:
    """The layout of the HTML file `page` in a `width` x `height` viewport (see MEASURE)."""
    browser = browser or find_browser()
    if browser is None:
        raise RuntimeError("no Chromium or Chrome found (set CALOFORGE_BROWSER)")
    text = Path(page).read_text()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(text.replace("</body>", f"<script>{MEASURE}</script></body>", 1))
        dom = _run(
            browser,
            [f"--window-size={width},{height}", "--dump-dom", copy.as_uri()],
            str(Path(tmp) / "profile"),
        )
    start = dom.find('<pre id="caloforge-measure">')
    if start < 0:
        raise RuntimeError(f"the measuring script left no result in the page: {dom[-500:]}")
    body = dom[start:].split(">", 1)[1].split("</pre>", 1)[0]
    return json.loads(html.unescape(body))


def screenshot(
    page: Path, png: Path, width: int = 1300, height: int = 1500, browser: str | None = None
) -> Path:
    """A screenshot of the top `width` x `height` pixels of the HTML file `page`."""
    browser = browser or find_browser()
    if browser is None:
        raise RuntimeError("no Chromium or Chrome found (set CALOFORGE_BROWSER)")
    png = Path(png).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        _run(
            browser,
            [
                f"--window-size={width},{height}",
                f"--screenshot={png}",
                Path(page).resolve().as_uri(),
            ],
            str(Path(tmp) / "profile"),
        )
    if not png.is_file():
        raise RuntimeError(f"{browser} wrote no screenshot to {png}")
    return png


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tests/browser.py REPORT/index.html OUT.png")
    print(screenshot(Path(sys.argv[1]), Path(sys.argv[2])))
