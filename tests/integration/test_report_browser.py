"""The validation report in a real headless browser: every table, verdict badge and plot
lies inside the page at the widths people read it at, nothing runs past the right edge or
hides in a table's scroll box; and a screenshot of it is taken.

The boxes are measured by Chromium itself (`browser.measure`: element bounding boxes, not
pixels). Skipped where no Chromium or Chrome is installed (Debian: `apt-get install
chromium`; or CALOFORGE_BROWSER=/path/to/chrome).

The report is that of a tiny `caloforge validate` run built to stress the layout: five
energy bins, long set labels, and a generated set whose every cell is 1.6 times too high
(FAIL badges, deviations of two and three digits). The default tests take its tables alone
(no plots, no cell-level subsample: seconds of work); the slow one draws every plot too.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from browser import find_browser, measure, screenshot
from caloforge.cli import main
from caloforge.data.canonical import ShowerWriter
from caloforge.data.io import open_showers
from caloforge.data.source import Batch, iter_batches
from caloforge.simulation.run import simulate_to_file

BROWSER = find_browser()
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="no headless Chromium or Chrome to render the report in (apt-get install "
    "chromium, or set CALOFORGE_BROWSER to one)",
)
# The demo screenshot's width, a laptop's and a narrow window's (CSS pixels).
WIDTHS = (1300, 1024, 900)


def scaled_copy(source: Path, target: Path, factor: float) -> Path:
    with open_showers(source) as s, ShowerWriter(target, s.geometry, producer="test") as w:
        for batch in iter_batches(s, 512):
            w.write(Batch((batch.showers * factor).astype(np.float32), batch.conditions))
    return target


def validate_report(folder: Path, *options: str) -> Path:
    sets = [
        simulate_to_file(
            folder / f"{seed}.h5",
            geometry="clic-25",
            n=300,
            energy=(10.0, 200.0),
            seed=seed,
            workers=1,
            calibration="none",
        )
        for seed in (1, 2)
    ]
    generated = scaled_copy(sets[1], folder / "generated.h5", 1.6)
    out = folder / "report"
    arguments = ["--reference", str(sets[0]), "--generated", str(generated), "--out", str(out)]
    labels = "Geant4 reference,GAN after 100 steps"
    options = ("--energy-bins", "5", "--min-showers", "15", "--labels", labels, *options)
    assert main(["validate", *arguments, *options]) == 0
    return out / "index.html"


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return validate_report(
        tmp_path_factory.mktemp("report-browser"), "--subsample", "0", "--no-plots"
    )


def check_layout(page: Path, width: int) -> dict:
    """The page at `width`: nothing beyond the viewport, no table scrolling in its box, each
    badge inside its table's box; returns the measurements."""
    m = measure(page, width, browser=BROWSER)
    assert m["viewport"] == width
    assert m["page"] <= m["viewport"], "the page scrolls sideways"
    for box in m["boxes"]:
        # A table wider than its box would scroll inside it, its right part out of view.
        assert box["scroll"] <= box["client"], f"table scrolls at {width}px: {box['text']!r}"
        assert box["right"] <= m["viewport"]
    for badge in m["badges"]:
        assert badge["width"] > 0
        assert badge["right"] <= m["viewport"]
        if badge["box"] >= 0:
            assert badge["right"] <= m["boxes"][badge["box"]]["right"] + 0.5, badge
    for image in m["images"]:
        assert image["left"] >= 0 and image["right"] <= m["main"]["right"] + 0.5
    return m


@pytest.mark.parametrize("width", WIDTHS)
def test_every_table_and_badge_lies_inside_the_page(page, width):
    m = check_layout(page, width)
    assert len(m["boxes"]) > 5
    # The headline's 7 rows, 2 badges in each response row but the lowest energy bin's
    # (too few showers: a row-wide note instead).
    assert len(m["badges"]) >= 7 + 2 * 5
    assert sum(b["text"] == "FAIL" for b in m["badges"]) >= 6


def test_a_screenshot_of_the_report(page, tmp_path):
    png = screenshot(page, tmp_path / "report.png", 1300, 1500, browser=BROWSER)
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1300, 1500)
    assert len(data) > 50_000  # a page, not a blank


@pytest.mark.slow
def test_the_plots_lie_inside_the_page_too(tmp_path):
    page = validate_report(tmp_path, "--subsample", "60")
    m = check_layout(page, 1024)
    assert len(m["images"]) >= 10
