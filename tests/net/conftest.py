"""Fixtures for transport tests: fast-timeout nodes, event waiting, and a hand-driven raw peer."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from fedp2p.net import Node, NodeConfig, NodeEvent
from fedp2p.wire.connection import NEED_DATA, Closed, Connection, HandshakeComplete, Role
from fedp2p.wire.messages import Hello, Message

SECRET = bytes(range(32))

FAST = {
    "handshake_timeout_s": 1.0,
    "dead_peer_timeout_s": 1.5,
    "slow_sender_timeout_s": 1.0,
    "heartbeat_interval_s": 0.2,
    "gossip_interval_s": 0.5,
    "connect_retries": 2,
    "connect_backoff_s": 0.05,
    "connect_timeout_s": 2.0,
    "flush_timeout_s": 1.0,
}

E = TypeVar("E")


def fast_config(peer_id: int, **overrides: Any) -> NodeConfig:
    return NodeConfig(**{"peer_id": peer_id, "secret": SECRET, **FAST, **overrides})


def our_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("fedp2p-"))


@pytest.fixture
def make_node() -> Iterator[Callable[..., Node]]:
    """Start nodes with fast timeouts; stop them all afterwards and check no thread is left."""
    nodes: list[Node] = []

    def make(peer_id: int, **overrides: Any) -> Node:
        node = Node(fast_config(peer_id, **overrides))
        node.start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()
    assert our_threads() == []


def wait_event(
    node: Node,
    kind: type[E],
    timeout: float = 5.0,
    where: Callable[[E], bool] = lambda e: True,
    seen: list[NodeEvent] | None = None,
) -> E:
    """The first event of `kind` matching `where`; others go to `seen` (if given)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {kind.__name__} within {timeout} s")
        try:
            event = node.events.get(timeout=remaining)
        except queue.Empty:
            continue
        if isinstance(event, kind) and where(event):
            return event
        if seen is not None:
            seen.append(event)


def drain(node: Node) -> list[NodeEvent]:
    out = []
    while True:
        try:
            out.append(node.events.get_nowait())
        except queue.Empty:
            return out


class RawPeer:
    """A peer driven by hand over a blocking socket, to misbehave in controlled ways."""

    def __init__(self, address: tuple[str, int], rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5.0)
        self.sock.connect(address)
        self.conn: Connection | None = None

    def join(self, peer_id: int, secret: bytes = SECRET) -> Hello:
        """Handshake and exchange Hellos like a real node; returns the node's Hello."""
        self.conn = Connection(Role.INITIATOR, secret)
        self.sock.sendall(self.conn.initiate())
        while True:
            event = self._next()
            if isinstance(event, HandshakeComplete):
                break
        port = self.sock.getsockname()[1]
        self.send(Hello(peer_id, "127.0.0.1", port, "raw", 1, ()))
        event = self._next()
        assert isinstance(event, Hello)
        return event

    def send(self, message: Message) -> None:
        assert self.conn is not None
        for buffer in self.conn.send(message):
            self.sock.sendall(buffer)

    def frame_bytes(self, message: Message) -> bytes:
        assert self.conn is not None
        return b"".join(bytes(b) for b in self.conn.send(message))

    def _next(self) -> object:
        assert self.conn is not None
        while True:
            event = self.conn.next_event()
            out = self.conn.data_to_send()
            if out:
                self.sock.sendall(out)
            if event is not NEED_DATA:
                return event
            self.conn.receive_data(self.sock.recv(65536))

    def next_message(self) -> object:
        event = self._next()
        assert not isinstance(event, Closed)
        return event

    def closed_within(self, timeout: float) -> bool:
        """Whether the node closes this connection within `timeout` (reads and discards)."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_peers() -> Iterator[Callable[..., RawPeer]]:
    peers: list[RawPeer] = []

    def make(address: tuple[str, int], rcvbuf: int | None = None) -> RawPeer:
        peer = RawPeer(address, rcvbuf)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.close()
