"""A real browser runs notebooks/06_bandwidth_tuning.ipynb and moves the bandwidth slider.

JupyterLab is served on localhost (random port, random token) from a temporary
copy of the notebook; Debian's chromium, driven by Playwright, opens it, runs
every cell from the Run menu, types a new bandwidth into the slider's readout
and checks that the displayed cluster count changes. Without chromium the
test fails (it must not be skipped on CI): ``apt-get install -y chromium``.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
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


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(base URL, token, root directory) of a JupyterLab serving a copy of the notebook."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
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


def test_slider_reclusters_in_a_real_browser(lab):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) to run browser tests")
    from playwright.sync_api import expect, sync_playwright

    base, token, root = lab
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
        finally:
            browser.close()
    assert before != after, f"cluster count did not change: {before!r}"
