"""run_plot.py --html: one self-contained page of a real (tiny) results folder, checked as HTML and in headless
Chromium.

The results come from the real loop run in-process on generated MNIST-format data (two configurations, two runs,
three iterations). Without a browser the page's images must be valid base64 PNGs and its tables hold one row
per configuration; with Debian's ``/usr/bin/chromium`` the page is also loaded (no network: everything is inline)
and every image must decode and the page must paint.
"""
from __future__ import annotations

import base64
import html
import io
import json
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from fkal.data.synthetic import write_mnist
from fkal import reporting as report
from fkal.cli import main as run_main
from fkal.reporting import cli as run_plot

CHROMIUM = Path("/usr/bin/chromium")
CONFIGS = ("random", "pfk-phat-L80")
# The tables whose rows are the configurations, by their heading (``data-section``).
PER_CONFIGURATION = ("test accuracy (%)", "Label saving (test accuracy)", "Seconds per iteration",
                     "Accuracy, imbalance metrics and rare share", "configurations")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """``{out}/MNIST/run{0,1}/results.jsonl`` of the real loop: random and pfk-phat-L80 at IR 4, 3 iterations."""
    root = tmp_path_factory.mktemp("html_report")
    data = write_mnist(root / "data")
    out = root / "out"
    assert run_main(["--data-root", str(data), "--out", str(out), "--train-size", "400", "--val-size", "100",
                     "--unsup-epochs", "1", "--epochs", "1", "--iterations", "3", "--pool-size", "10",
                     "--no-progress", "--imbalance-ratios", "4", "--run-stop", "2", "--only", *CONFIGS]) == 0
    return out


class Page(HTMLParser):
    """What a test reads off the page: every ``<img>`` src, the ``<tbody>`` rows of each table that has a
    ``data-section`` (tables nested in its cells, the settings, are not its rows) and how many of them fold out
    (``<details>``) in their first cell, every URL attribute and the number of scripts."""

    def __init__(self, text: str):
        super().__init__()
        self.images: list[str] = []
        self.tables: list[tuple[str, int, int]] = []      # (section, body rows, rows whose first cell folds out)
        self.urls: list[str] = []
        self.scripts = 0
        self._table: list | None = None                   # [section, rows, folding] of the open outer table
        self._nested = 0                                  # tables open inside it
        self._cell = 0                                    # the cell of the current row
        self._folds = False                               # whether its first cell folded out already
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.urls += [value for name, value in attrs.items() if name in ("src", "href") and value]
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "script":
            self.scripts += 1
        elif tag == "table":
            if self._table is None and "data-section" in attrs:
                self._table = [attrs["data-section"], 0, 0]
            elif self._table is not None:
                self._nested += 1
        elif self._table is None or self._nested:
            return
        elif tag == "tr":
            self._cell, self._folds = 0, False
        elif tag == "td":
            self._cell += 1
            self._table[1] += self._cell == 1
        elif tag == "details" and self._cell == 1 and not self._folds:
            self._table[2] += 1
            self._folds = True

    def handle_endtag(self, tag):
        if tag != "table" or self._table is None:
            return
        if self._nested:
            self._nested -= 1
        else:
            self.tables.append(tuple(self._table))
            self._table = None


def configuration_rows(out: Path) -> int:
    """The table rows the records make: one per (configuration, IR, initial model, settings)."""
    records, _ = report.read_results(report.result_paths(out, "mnist"))
    return len(report.split_full_train(report.group_records(records))[0])


def png_of(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix):], validate=True)))
    image.load()
    return image


def check_page(path: Path, out: Path) -> Page:
    """The page's own checks, no browser: inline PNGs that decode, a table row per configuration, each name
    folding out its settings, nothing to fetch and no script."""
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert len(page.images) == 2                          # accuracy and selection figures of IR 4
    for src in page.images:
        width, height = png_of(src).size
        assert width > 0 and height > 0
    assert page.scripts == 0
    assert all(url.startswith(("data:image/png;base64,", "#")) for url in page.urls), "an external resource"
    rows = configuration_rows(out)
    assert rows == len(CONFIGS)
    sections = {section for section, _, _ in page.tables}
    assert set(PER_CONFIGURATION) <= sections
    for section, body_rows, folding in page.tables:
        if section in PER_CONFIGURATION:
            assert (body_rows, folding) == (rows, rows), section
    # the imbalance metrics at every labeled count when --compare-at is not given: 10, 20 and 30 labels
    assert [s for s, _, _ in page.tables].count("Accuracy, imbalance metrics and rare share") == 3
    for needle in ("settings id <code>", "--pool-size", "<td>125</td>", "pfk-phat-L80", "random"):
        assert needle in text, needle
    return page


def test_html_alone_writes_one_self_contained_page(results, tmp_path, capsys):
    page = tmp_path / "look" / "page.html"
    assert run_plot.main(["--out", str(results), "--html", str(page), "--resamples", "200"]) == 0
    assert f"wrote {page}" in capsys.readouterr().out
    check_page(page, results)
    assert not (results / "MNIST" / "figures").exists()      # --html alone writes the page and nothing else
    assert [p.name for p in page.parent.iterdir()] == ["page.html"]   # atomically: no temporary file left


def test_html_beside_save_lands_in_the_figures_folder(results, tmp_path, capsys):
    figures = tmp_path / "figures"
    assert run_plot.main(["--out", str(results), "--save", "--html", "--figures", str(figures),
                          "--saving-vs-best", "pfk-phat-L80", "--resamples", "200"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {figures / 'report.html'}" in printed
    page = check_page(figures / "report.html", results)
    for src, stem in zip(page.images, ("accuracy_IR4", "selection_IR4")):  # the figures --save draws
        with Image.open(figures / f"{stem}.png") as saved:
            assert png_of(src).size == saved.size
    versus = [t for t in page.tables if t[0].startswith("Label saving against the best of the others")]
    assert len(versus) == 1 and versus[0][1] == 3             # a row per labeled count: 10, 20, 30
    assert "saving_vs_best.csv" in printed


PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.from(document.images).map(function (i) { return i.complete ? i.naturalWidth : -1; });
  var tables = Array.from(document.querySelectorAll("table[data-section]")).map(function (t) {
    return [t.getAttribute("data-section"), t.tBodies[0].rows.length]; });
  var probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({images: images, tables: tables});
  document.body.appendChild(probe);
});
</script>"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with nothing that reaches out (no network needed: the page is self-contained)."""
    profile = tmp_path / "chromium-profile"
    return subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install -y chromium)")
def test_page_renders_in_headless_chromium(results, tmp_path):
    page = tmp_path / "report.html"
    assert run_plot.main(["--out", str(results), "--html", str(page), "--resamples", "200"]) == 0
    probed = tmp_path / "probed.html"                     # the test's copy only: the report itself has no script
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    done = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    start = done.stdout.find('<pre id="probe">')
    assert start >= 0, "the probe did not run: " + done.stdout[:500] + done.stderr[-1000:]
    probe = json.loads(html.unescape(done.stdout[start + len('<pre id="probe">'):done.stdout.index("</pre>", start)]))
    assert len(probe["images"]) == 2 and all(width > 0 for width in probe["images"]), probe["images"]
    rows = configuration_rows(results)
    for section, body_rows in probe["tables"]:
        if section in PER_CONFIGURATION:
            assert body_rows == rows, section
    assert set(PER_CONFIGURATION) <= {section for section, _ in probe["tables"]}

    shot = tmp_path / "shot.png"
    done = chromium(tmp_path, "--screenshot=" + str(shot), "--window-size=1280,2000", page.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        gray = image.convert("L")
        low, high = gray.getextrema()
        assert high - low > 100                           # text and figures on a white page, not a blank one
        assert len(gray.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50


def test_html_needs_no_browser_to_name_a_bad_output(results, tmp_path, capsys):
    """--html into a path that is a folder: one error line, exit code 2."""
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "x").write_text("")
    assert run_plot.main(["--out", str(results), "--html", str(folder), "--resamples", "200"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write") and err.count("\n") == 1

