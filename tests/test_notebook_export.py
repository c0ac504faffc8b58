"""The HTML export of an executed notebook shows its 3D figures and equations offline.

A small notebook with an equation and a plotly 3D scatter is executed with
papermill and exported by :func:`labkit.notebook_runner.export_html`: the HTML
must hold the figure's data and plotly.js, load no script from the network,
and typeset the equation with the local MathJax copy. The browser test opens
the export from disk in chromium (Debian's ``chromium``; the test fails
without it, as the other browser test does).
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from labkit.notebook_runner import MATHJAX_DIR, export_html

CHROMIUM = "/usr/bin/chromium"
SCRIPT_SRC = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?([^\"' >]+)", re.IGNORECASE)
# a coordinate that appears only in the figure's data (the code cell builds it from a computation)
PROBE_Z = 0.0078125


def _probe_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("The pull margin $\\delta_v$ and the push margin $$\\delta_d > 2\\delta_v.$$"),
        nbformat.v4.new_code_cell(
            "import plotly.graph_objects as go\n"
            "z = [2.0 ** -k for k in (5, 6, 7)]\n"
            "go.Figure(go.Scatter3d(x=[1, 2, 3], y=[3, 1, 2], z=z, mode='markers'))"
        ),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    import papermill

    folder = tmp_path_factory.mktemp("export")
    _probe_notebook(folder / "probe.ipynb")
    papermill.execute_notebook(
        str(folder / "probe.ipynb"), str(folder / "probe_run.ipynb"), kernel_name="python3", progress_bar=False
    )
    executed = nbformat.read(folder / "probe_run.ipynb", as_version=4)
    kinds = {k for o in executed.cells[1].outputs for k in o.get("data", {})}
    assert "application/vnd.plotly.v1+json" in kinds, f"the kernel emitted {kinds}; the test needs plotly's mimetype"
    export_html(folder / "probe_run.ipynb", folder / "html" / "probe.html")
    return folder / "html" / "probe.html"


def test_export_holds_the_figure_data_and_no_external_script(exported):
    html = exported.read_text()
    assert str(PROBE_Z) in html, "the 3D figure's data is missing from the export"
    assert '"type":"scatter3d"' in html.replace(" ", "")
    assert html.count("Plotly.newPlot") == 1
    head = html[: html.index("</head>")]
    assert head.count("* plotly.js v") == 1, "plotly.js is not embedded once in the page head"
    sources = SCRIPT_SRC.findall(html)
    external = [s for s in sources if re.match(r"(https?:)?//", s)]
    assert not external, f"scripts loaded from the network: {external}"
    assert f"{MATHJAX_DIR}/MathJax.js" in " ".join(sources), "MathJax is not loaded from the local copy"
    assert (exported.parent / MATHJAX_DIR / "MathJax.js").is_file()
    assert "mermaid.esm.min.mjs" not in html, "nbconvert's mermaid loader (a CDN import) is still in the page"


def test_export_without_plotly_embeds_no_plotly(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("Only an equation: $x^2$.")]
    nbformat.write(nb, tmp_path / "plain.ipynb")
    export_html(tmp_path / "plain.ipynb", tmp_path / "plain.html")
    html = (tmp_path / "plain.html").read_text()
    assert "Plotly.newPlot" not in html and len(html) < 1_000_000  # plotly.js alone is several MB


@pytest.mark.browser
def test_export_renders_offline_in_a_real_browser(exported):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) to run browser tests")
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(exported.resolve().as_uri())
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=60_000)
            page.wait_for_selector(".MathJax, .MathJax_Display", timeout=60_000)
            trace = page.evaluate("document.querySelector('.js-plotly-plot').data[0]")
            raw_tex = page.evaluate("document.body.innerText.includes('$\\\\delta_v$')")
        finally:
            browser.close()
    assert trace["type"] == "scatter3d" and PROBE_Z in trace["z"]
    assert not raw_tex, "the equation was left as raw LaTeX"
    remote = [u for u in requests if u.startswith(("http://", "https://"))]
    assert not remote, f"the export fetched {remote}"
