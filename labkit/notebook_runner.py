"""Execute the lab's notebooks headless (papermill), as ``make run`` and the tests do.

Each notebook ``NN_topic.ipynb`` runs in order with its ``parameters`` cell
set to ``profile``, ``seed`` and ``out_dir = OUT/NN_topic``; the executed copy
and an HTML export go to ``OUT/``, and the metrics every notebook writes to
``out_dir/metrics.json`` are gathered into ``OUT/summary.json``.

The HTML exports open offline (:func:`export_html`): plotly figures are
rendered into the page with plotly.js embedded once per file, and equations
are typeset by a local copy of MathJax (``OUT/_mathjax/``, from the
``jupyter-server-mathjax`` package) instead of a CDN.
"""
from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from labkit.errors import LabkitError
from labkit.io import atomic_open, write_json

log = logging.getLogger(__name__)

PROFILES = ("fast", "full")
NOTEBOOK_NAME = re.compile(r"^\d\d_[A-Za-z0-9_]+\.ipynb$")


def default_notebook_dir() -> Path:
    """``notebooks/`` of the source checkout that labkit is installed from."""
    return Path(__file__).resolve().parent.parent / "notebooks"


def list_notebooks(notebook_dir: str | Path | None = None) -> list[Path]:
    """The ``NN_topic.ipynb`` notebooks of ``notebook_dir``, in run order."""
    folder = Path(notebook_dir) if notebook_dir else default_notebook_dir()
    if not folder.is_dir():
        raise LabkitError(f"notebook folder not found: {folder}")
    notebooks = sorted(p for p in folder.iterdir() if NOTEBOOK_NAME.match(p.name))
    if not notebooks:
        raise LabkitError(f"no NN_topic.ipynb notebooks in {folder}")
    return notebooks


def run_notebook(
    notebook: Path, out: Path, profile: str = "fast", seed: int = 0,
    parameters: dict[str, Any] | None = None, html: bool = True, cell_timeout: int | None = None,
) -> dict[str, Any]:
    """Execute one notebook into ``out/``; return its ``metrics.json`` content.

    ``cell_timeout``: seconds a cell may run before papermill stops the
    notebook with an error (None: no limit).
    """
    import papermill

    from labkit.kernel_client import RepollingKernelManager

    out.mkdir(parents=True, exist_ok=True)
    out_dir = (out / notebook.stem).resolve()
    params = {"profile": profile, "seed": seed, "out_dir": str(out_dir), **(parameters or {})}
    executed = out / notebook.name
    papermill.execute_notebook(
        str(notebook), str(executed), parameters=params, kernel_name="python3",
        cwd=str(notebook.parent), progress_bar=False, execution_timeout=cell_timeout,
        kernel_manager_class=RepollingKernelManager,  # nbclient can miss a reply otherwise: see labkit.kernel_client
    )
    if html:
        export_html(executed, executed.with_suffix(".html"))
    metrics_file = out_dir / "metrics.json"
    if not metrics_file.is_file():
        raise LabkitError(f"{notebook.name} ran but wrote no {metrics_file}")
    return json.loads(metrics_file.read_text())


PLOTLY_MIMETYPE = "application/vnd.plotly.v1+json"
#: folder next to the HTML exports that holds the local MathJax copy
MATHJAX_DIR = "_mathjax"
#: MathJax 2 configuration for the local copy, which ships the HTML-CSS output with the STIX-Web fonts only
_MATHJAX_CONFIG = (
    '<script>window.MathJax = {"HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", '
    'imageFont: null}, messageStyle: "none"};</script>\n'
)
_NO_REQUIRE = "labkit-no-requirejs"
#: nbconvert's inline loader that imports mermaid.js from a CDN when the page has diagrams
_MERMAID_LOADER = re.compile(
    r'<script type="module">\s*document\.addEventListener\("DOMContentLoaded", async \(\) => \{\s*'
    r'const diagrams = document\.querySelectorAll\("\.jp-Mermaid.*?</script>',
    re.DOTALL,
)


def mathjax_source() -> Path:
    """The MathJax 2 tree shipped by the ``jupyter-server-mathjax`` package."""
    try:
        import jupyter_server_mathjax
    except ImportError as exc:  # a dependency of labkit: pyproject.toml / environment.yml
        raise LabkitError("offline HTML export needs the jupyter-server-mathjax package (pip install -e .)") from exc
    static = Path(jupyter_server_mathjax.__file__).resolve().parent / "static"
    if not (static / "MathJax.js").is_file():
        raise LabkitError(f"MathJax.js not found in {static}")
    return static


def install_mathjax(folder: Path) -> Path:
    """Copy the local MathJax tree to ``folder/_mathjax`` once (kept when already there); return it."""
    import shutil

    target = folder / MATHJAX_DIR
    if not (target / "MathJax.js").is_file():
        tmp = folder / f"{MATHJAX_DIR}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(mathjax_source(), tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target


def render_plotly_outputs(nb: Any) -> int:
    """Give every plotly output (JupyterLab's mimetype only) an HTML rendering; return how many.

    nbconvert drops ``application/vnd.plotly.v1+json``; the added ``text/html``
    is a ``<div>`` plus the ``Plotly.newPlot`` call with the figure's data, and
    needs plotly.js on the page (see :func:`export_html`).
    """
    import plotly.io as pio

    count = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if PLOTLY_MIMETYPE in data:
                if "text/html" not in data:
                    data["text/html"] = pio.to_html(
                        dict(data[PLOTLY_MIMETYPE]), include_plotlyjs=False, full_html=False, validate=False,
                    )
                count += 1
    return count


def export_html(notebook: Path, target: Path) -> None:
    """Write an HTML copy of an executed notebook that shows everything offline.

    * plotly figures: rendered from their JSON into the page, with plotly.js
      embedded once (a ``<script>`` in ``<head>``) when there is any figure;
    * equations: MathJax from ``target.parent/_mathjax/`` (copied there once
      by :func:`install_mathjax`), referenced by a relative URL, so the folder
      of exports can be moved or zipped as a whole;
    * no ``require.js`` from a CDN (nothing in the exports needs it).
    """
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook, as_version=4)
    figures = render_plotly_outputs(nb)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    install_mathjax(target.parent)
    exporter = HTMLExporter(
        mathjax_url=f"{MATHJAX_DIR}/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe",
        require_js_url=_NO_REQUIRE,
    )
    body, _ = exporter.from_notebook_node(nb)
    body = body.replace(f'<script src="{_NO_REQUIRE}"></script>', "")
    if not any("```mermaid" in cell.source for cell in nb.cells if cell.cell_type == "markdown"):
        body = _MERMAID_LOADER.sub("", body, count=1)  # it would import mermaid.js from a CDN
    body = body.replace("<!-- Load mathjax -->", "<!-- Load mathjax -->\n" + _MATHJAX_CONFIG, 1)
    if figures:
        body = body.replace("</head>", _plotly_script() + "</head>", 1)
    with atomic_open(target, "w") as f:
        f.write(body)


def _plotly_script() -> str:
    from plotly.offline import get_plotlyjs

    return f'<script type="text/javascript">{get_plotlyjs()}</script>\n'


def run_notebooks(
    out: str | Path = "runs/latest", profile: str = "fast", seed: int = 0,
    notebook_dir: str | Path | None = None, parameters: dict[str, Any] | None = None,
    html: bool = True,
) -> dict[str, Any]:
    """Execute every notebook in order; write and return ``out/summary.json``.

    A failing notebook is recorded in the summary (with its error) and the
    rest still run; a :class:`LabkitError` is raised at the end if any failed.
    """
    if profile not in PROFILES:
        raise LabkitError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"profile": profile, "seed": seed, "notebooks": {}}
    failed = []
    for nb in tqdm(list_notebooks(notebook_dir), desc="notebooks", unit="nb"):
        start = time.perf_counter()
        entry: dict[str, Any]
        try:
            entry = {"status": "ok", "metrics": run_notebook(nb, out, profile, seed, parameters, html)}
        except Exception as exc:  # keep going: one broken notebook must not hide the others
            log.error("%s failed: %s", nb.name, exc)
            entry = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            failed.append(nb.name)
        entry["seconds"] = round(time.perf_counter() - start, 1)
        summary["notebooks"][nb.stem] = entry
        write_json(out / "summary.json", summary)
    if failed:
        raise LabkitError(f"notebook(s) failed: {', '.join(failed)} (details in {out / 'summary.json'})")
    return summary
