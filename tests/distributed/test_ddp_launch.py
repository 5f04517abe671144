"""gradkit.distributed.spawn: a hang fails after the timeout (processes killed), errors surface."""

from __future__ import annotations

import time

import pytest

from gradkit.distributed import free_port, spawn


def _hang(rank: int, world: int) -> None:
    time.sleep(600)


def test_ddp_spawn_times_out_instead_of_hanging():
    t = time.monotonic()
    with pytest.raises(TimeoutError, match="did not finish within 3 s"):
        spawn(_hang, 2, timeout=3)
    assert time.monotonic() - t < 20


def test_ddp_free_port_is_bindable():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
