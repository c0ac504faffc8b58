"""A real browser opens the ``labkit compare`` report from disk: the charts render, the console stays clean.

The report of two training-free methods on three test scenes is opened in
Debian's chromium (Playwright) with no network: both plotly charts must draw
their bars from the embedded data, the prediction grid image must decode,
the table must have a row per method, and the console must log no error.
Without chromium the test fails (browser tests are not skipped on CI).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from labkit.compare import compare

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def report(tmp_path_factory, request):
    import labkit.data as data_module
    from labkit.data.synthetic import SyntheticScenes

    real = data_module.load_dataset
    mp = pytest.MonkeyPatch()
    mp.setattr(data_module, "load_dataset",
               lambda spec, split=None, **kw: SyntheticScenes(real(spec, split=split).family.name, split="test",
                                                              num_samples=3))
    try:
        out = tmp_path_factory.mktemp("report")
        compare(["watershed", "components"], "synthetic:sticks", out=out, device="cpu", grid_images=2, progress=False)
    finally:
        mp.undo()
    return out / "report.html"


def test_report_renders_offline_without_console_errors(report):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) to run browser tests")
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    remote: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: remote.append(r.url) if r.url.startswith(("http:", "https:")) else None)
            page.goto(report.resolve().as_uri())
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=60_000)
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2", timeout=60_000)
            bars = page.evaluate("Array.from(document.querySelectorAll('.js-plotly-plot'))"
                                 ".map(el => el.querySelectorAll('.bars path').length)")
            traces = page.evaluate("Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => el.data.length)")
            grid_width = page.evaluate("document.getElementById('prediction-grid').naturalWidth")
            table_rows = page.locator("#compare-table tbody tr").count()
            data = json.loads(page.evaluate("document.getElementById('compare-data').textContent"))
        finally:
            browser.close()
    assert len(traces) == 2 and all(t > 0 for t in traces)
    assert all(b > 0 for b in bars), f"a chart drew no bars: {bars}"
    assert grid_width > 0, "the prediction grid did not decode"
    assert table_rows == 2 and [r["name"] for r in data["rows"]] == ["watershed", "components"]
    assert not errors, f"console errors: {errors}"
    assert not remote, f"the report fetched {remote}"
