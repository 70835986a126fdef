"""The test doubles Orchestra ships: the network guard."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from orchestra.testing import NetworkBlocked, no_network

FAR = ("10.255.255.1", 9)
"""A host that is not this machine (never reached: the guard refuses it first)."""


def test_connect_ex_and_udp_sendto_to_another_host_are_refused_as_connect_is() -> None:
    """connect_ex returned an error number (0 when it connected) and sendto sent the datagram."""
    with no_network():
        with socket.socket() as tcp:
            tcp.settimeout(0.5)
            with pytest.raises(NetworkBlocked, match="10.255.255.1"):
                tcp.connect(FAR)
            with pytest.raises(NetworkBlocked, match="10.255.255.1"):
                tcp.connect_ex(FAR)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            with pytest.raises(NetworkBlocked, match="10.255.255.1"):
                udp.sendto(b"ping", FAR)
            with pytest.raises(NetworkBlocked, match="10.255.255.1"):
                udp.sendto(b"ping", 0, FAR)


def test_loopback_stays_reachable_by_every_guarded_call() -> None:
    with no_network(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(2)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"ping", receiver.getsockname())
            assert receiver.recv(16) == b"ping"
        with socket.socket() as listener, socket.socket() as client:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            assert client.connect_ex(listener.getsockname()) == 0


def test_an_async_client_refused_inside_its_task_group_is_network_blocked_when_it_leaves_the_block() -> None:
    """anyio connects inside a task group: the refusal came out as an ExceptionGroup, not NetworkBlocked."""

    async def fetch() -> None:
        async with httpx.AsyncClient() as client:
            await client.get(f"http://{FAR[0]}:{FAR[1]}/", timeout=2)

    with pytest.raises(NetworkBlocked, match="10.255.255.1"):
        with no_network():
            asyncio.run(fetch())
    with no_network():  # inside the block, the group holds it
        with pytest.raises(ExceptionGroup) as caught:
            asyncio.run(fetch())
        assert caught.group_contains(NetworkBlocked)
