"""The kernel channel that polls in slices, so a missed zmq wake-up costs a slice, not the cell's time limit."""
import asyncio
from queue import Empty

import pytest

from labkit import kernel_client
from labkit.kernel_client import RepollingChannel, RepollingKernelClient, RepollingKernelManager


class MissedWakeupSocket:
    """A socket whose first ``misses`` polls report nothing, the way a missed edge-triggered wake-up does."""

    def __init__(self, misses):
        self.misses, self.timeouts = misses, []

    async def poll(self, timeout_ms=None):
        self.timeouts.append(timeout_ms)
        if len(self.timeouts) <= self.misses:
            await asyncio.sleep(0 if timeout_ms is None else timeout_ms / 1000)
            return 0
        return 1


def _channel(socket):
    channel = RepollingChannel.__new__(RepollingChannel)  # no session or loop: get_msg only uses the socket
    channel.socket = socket

    async def recv():
        return {"msg_type": "execute_reply"}

    channel._recv = recv
    return channel


def test_a_wait_without_limit_polls_in_slices_and_finds_the_message(monkeypatch):
    monkeypatch.setattr(kernel_client, "POLL_SLICE", 0.01)
    socket = MissedWakeupSocket(misses=3)
    msg = asyncio.run(_channel(socket).get_msg(timeout=None))
    assert msg == {"msg_type": "execute_reply"}
    assert socket.timeouts == [10, 10, 10, 10], "every poll must be one bounded slice, never an unbounded wait"


def test_a_wait_with_a_limit_still_raises_empty_at_the_limit(monkeypatch):
    monkeypatch.setattr(kernel_client, "POLL_SLICE", 0.02)
    socket = MissedWakeupSocket(misses=10**6)
    with pytest.raises(Empty):
        asyncio.run(_channel(socket).get_msg(timeout=0.05))
    # slices of at most 20 ms that together do not outlast the limit (a loaded machine's
    # late wake-ups only mean fewer of them)
    assert all(1 <= t <= 20 for t in socket.timeouts) and sum(socket.timeouts) <= 52


def test_a_deadline_less_than_a_millisecond_away_is_one_poll_not_a_busy_loop():
    socket = MissedWakeupSocket(misses=10**6)
    with pytest.raises(Empty):
        asyncio.run(_channel(socket).get_msg(timeout=0.0004))
    assert socket.timeouts == [1], "the channel truncates to whole ms: 0.4 ms must round up, not poll 0 ms in a loop"


def test_a_zero_timeout_polls_once():
    socket = MissedWakeupSocket(misses=1)
    with pytest.raises(Empty):
        asyncio.run(_channel(socket).get_msg(timeout=0))
    assert socket.timeouts == [0]


def test_the_manager_hands_out_repolling_channels():
    manager = RepollingKernelManager(kernel_name="python3")
    client = manager.client()
    assert isinstance(client, RepollingKernelClient)
    assert client.shell_channel_class is RepollingChannel and client.iopub_channel_class is RepollingChannel
