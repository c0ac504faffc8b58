"""Execute the lab's notebooks headless (papermill), as ``make run`` and the tests do.

Each notebook ``NN_topic.ipynb`` runs in order with its ``parameters`` cell
set to ``profile``, ``seed`` and ``out_dir = OUT/NN_topic``; the executed copy
and an HTML export go to ``OUT/``, and the metrics every notebook writes to
``out_dir/metrics.json`` are gathered into ``OUT/summary.json``.
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
    parameters: dict[str, Any] | None = None, html: bool = True,
) -> dict[str, Any]:
    """Execute one notebook into ``out/``; return its ``metrics.json`` content."""
    import papermill

    out.mkdir(parents=True, exist_ok=True)
    out_dir = (out / notebook.stem).resolve()
    params = {"profile": profile, "seed": seed, "out_dir": str(out_dir), **(parameters or {})}
    executed = out / notebook.name
    papermill.execute_notebook(
        str(notebook), str(executed), parameters=params, kernel_name="python3",
        cwd=str(notebook.parent), progress_bar=False,
    )
    if html:
        export_html(executed, executed.with_suffix(".html"))
    metrics_file = out_dir / "metrics.json"
    if not metrics_file.is_file():
        raise LabkitError(f"{notebook.name} ran but wrote no {metrics_file}")
    return json.loads(metrics_file.read_text())


def export_html(notebook: Path, target: Path) -> None:
    """Write an HTML copy of an executed notebook."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    with atomic_open(target, "w") as f:
        f.write(body)


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
