"""Test-wide settings.

Every test process and every notebook kernel it starts runs PyTorch on one
thread.  On a 2-core machine that shares its cores (CI runners, a laptop doing
other work) two OpenMP threads spin-wait on each other and a notebook runs
several times slower than on one thread (benchmarks/RESULTS.md, "Test suite
time, torch threads and CI", 2026-11-29).  The environment variables reach the
kernels papermill starts; they must be set before torch is imported.
"""
from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config, items):
    """Long tests first (notebooks, then other slow ones), so parallel workers end together.

    `make test` runs ``pytest -n 2 --dist loadgroup``: each test is its own unit
    of work and a worker holds at most two at a time, so notebook 01 (the
    longest) and 02 start on different workers and the short tests fill in.
    """
    def rank(item) -> int:
        if item.get_closest_marker("slow") is None:
            return 2
        return 0 if "test_notebooks.py" in item.nodeid else 1

    items.sort(key=rank)  # stable: file order within each rank
