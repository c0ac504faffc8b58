"""A Jupyter kernel manager whose client cannot miss a message (for headless notebook runs).

nbclient waits for a cell's ``execute_reply`` with one ``zmq.asyncio`` poll of
the shell channel that lasts the cell's whole time limit (or forever). That
poll can miss its wake-up although the reply has arrived (the ZMQ file
descriptor is edge-triggered; nbclient#312 reports cells with widgets that
"sometimes block"). Here it hung notebook 08 in 2 of 6 runs, in the cell that
builds the ``ModelExplorer``: the kernel idle, nbclient still waiting.

:class:`RepollingChannel` polls in slices of :data:`POLL_SLICE` seconds
instead; each new poll checks the socket's events first, so a message that
arrived unannounced is read at most one slice late. Slices are whole
milliseconds, as the channel polls in milliseconds. ``run_notebook`` passes
:class:`RepollingKernelManager` to papermill as nbclient's
``kernel_manager_class``.
"""
from __future__ import annotations

from math import ceil
from queue import Empty
from time import monotonic
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from traitlets import DottedObjectName, Type

#: longest single poll of a kernel channel, in seconds
POLL_SLICE = 0.25


class RepollingChannel(AsyncZMQSocketChannel):
    """A kernel channel whose ``get_msg`` polls in slices of :data:`POLL_SLICE` seconds."""

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:  # type: ignore[override]
        """The next message; waits ``timeout`` seconds at most (None: no limit), then raises ``Empty``."""
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            left = POLL_SLICE if deadline is None else max(0.0, min(POLL_SLICE, deadline - monotonic()))
            # jupyter_client truncates to whole milliseconds: round up, or the last
            # fraction of a millisecond before the deadline becomes a busy loop of 0 ms polls
            left = ceil(left * 1000) / 1000
            try:
                return await super().get_msg(timeout=left)
            except Empty:
                if deadline is not None and monotonic() >= deadline:
                    raise


class RepollingKernelClient(AsyncKernelClient):
    """nbclient's asynchronous kernel client with :class:`RepollingChannel` for shell and IOPub."""

    shell_channel_class = Type(RepollingChannel)  # type: ignore[assignment]
    iopub_channel_class = Type(RepollingChannel)  # type: ignore[assignment]


class RepollingKernelManager(AsyncKernelManager):
    """nbclient's kernel manager, handing out :class:`RepollingKernelClient`."""

    client_class = DottedObjectName("labkit.kernel_client.RepollingKernelClient")
    client_factory = Type(RepollingKernelClient, klass=AsyncKernelClient)
