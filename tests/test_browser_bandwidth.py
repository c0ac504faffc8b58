"""A real browser runs notebooks/06_bandwidth_tuning.ipynb with a checkpoint, moves sliders and saves.

JupyterLab is served on localhost (random port, random token) from a temporary
copy of the notebook whose ``checkpoint`` parameter points at a small model
(tests/explorer_checkpoint.py); Debian's chromium, driven by Playwright, opens
it and runs every cell from the Run menu. On the stored map's explorer it
types a new bandwidth into the slider's readout and checks that the displayed
cluster count changes; on the trained model's explorer it types a new value
of the method's first numeric decode parameter (``method.decode_grid()``),
clicks Save and checks that ``RUN_DIR/decode.json`` holds that value. (An
``interact`` callback's output lives in widget state, not in cell outputs, so
the file is the evidence.) Without chromium the test fails (it must not be
skipped on CI): ``apt-get install -y chromium``.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "06_bandwidth_tuning.ipynb"
TIMEOUT_MS = 90_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_serving(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"jupyter lab did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _copy_with_parameters(source: Path, target: Path, **values: str) -> None:
    """Copy a notebook, appending ``name = repr(value)`` lines to its ``parameters`` cell (as papermill would)."""
    import nbformat

    nb = nbformat.read(source, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = cell.source.rstrip("\n") + "".join(f"\n{k} = {v!r}" for k, v in values.items())
    nbformat.write(nb, target)


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    from explorer_checkpoint import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory, checkpoint_dir):
    """(base URL, token, root directory) of a JupyterLab serving a copy of the notebook, checkpoint set."""
    root = tmp_path_factory.mktemp("lab")
    _copy_with_parameters(NOTEBOOK, root / NOTEBOOK.name, checkpoint=str(checkpoint_dir))
    state = tmp_path_factory.mktemp("jupyter-state")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(state / "config"),
        JUPYTER_RUNTIME_DIR=str(state / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(state / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"),
        IPYTHONDIR=str(state / "ipython"),
    )
    log = state / "lab.log"
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
    ]
    if os.geteuid() == 0:  # containers and CI runners
        command.append("--allow-root")
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(f"{base}/api/status?token={token}", proc, log)
        yield base, token, root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _decode_target(checkpoint_dir: Path) -> tuple[str, float, float]:
    """(name, new value, tolerance) of the first numeric decode parameter of the checkpoint's method."""
    from labkit.train import load_checkpoint
    from labkit.viz.explorer import decode_control, initial_decode_params

    method, _, _ = load_checkpoint(checkpoint_dir, device="cpu")
    grid = method.decode_grid()
    start = initial_decode_params(method, grid)
    for name, values in grid.items():
        control = decode_control(name, values, start[name])
        if hasattr(control, "step"):  # a slider
            target = control.max if control.value != control.max else control.min
            return name, float(target), float(control.step) / 2
    pytest.fail(f"{method.key}.decode_grid() has no numeric parameter for the explorer's slider: {grid}")


def test_sliders_recluster_and_save_decode_json_in_a_real_browser(lab, checkpoint_dir):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) to run browser tests")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)  # a busy machine starts kernels and answers widgets slowly
    base, token, root = lab
    name, target, tolerance = _decode_target(checkpoint_dir)
    decode_json = checkpoint_dir / "decode.json"
    assert not decode_json.exists()
    metrics = root / "runs" / "06_bandwidth_tuning" / "metrics.json"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}")
            page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for()
            expect(page.locator(".jp-StatusBar-Widget")).to_contain_text("Idle")  # the kernel is up
            page.locator(".jp-NotebookPanel .jp-Cell").first.click()  # the notebook is the current widget
            page.locator(".lm-MenuBar-item", has_text="Run").first.click()
            label = page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$"))
            page.locator(".lm-Menu-item", has=label).click()

            deadline = time.monotonic() + TIMEOUT_MS / 1000
            while not metrics.is_file() and time.monotonic() < deadline:  # the last cell writes it
                time.sleep(0.5)
            if not metrics.is_file():
                page.screenshot(path=str(root / "timeout.png"))
                pytest.fail(f"the notebook did not finish (no metrics.json) within the timeout; see {root / 'timeout.png'}")

            count = page.locator(".labkit-cluster-count")
            expect(count).to_contain_text("clusters")
            before = count.inner_text()
            readout = page.locator(".widget-slider .widget-readout").first
            readout.scroll_into_view_if_needed()
            readout.click()
            page.keyboard.press("Control+A")
            page.keyboard.type("1.2")
            page.keyboard.press("Enter")
            expect(count).not_to_have_text(before)
            expect(count).to_contain_text("clusters")
            after = count.inner_text()

            explorer = page.locator(".labkit-model-explorer")
            expect(explorer.locator(".labkit-instance-count")).to_contain_text("instances")
            slider = explorer.locator(".widget-slider", has=page.locator(".widget-label", has_text=name))
            readout = slider.locator(".widget-readout").first
            readout.scroll_into_view_if_needed()
            readout.click()
            page.keyboard.press("Control+A")
            page.keyboard.type(f"{target:g}")
            page.keyboard.press("Enter")
            expect(readout).to_have_text(re.compile(rf"^{re.escape(f'{target:g}')}"))
            explorer.locator("button.labkit-save").click()
            expect(explorer.locator(".labkit-save-status")).to_contain_text("saved")
            deadline = time.monotonic() + 10
            while not decode_json.is_file() and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            browser.close()
    assert before != after, f"cluster count did not change: {before!r}"
    assert decode_json.is_file(), "Save did not write decode.json"
    saved = json.loads(decode_json.read_text())
    assert abs(saved[name] - target) <= tolerance, f"decode.json has {name}={saved[name]}, typed {target}"
