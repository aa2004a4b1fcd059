"""NodeConfig: every knob of one node's transport, in one frozen dataclass."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from fedp2p.wire import RECV_BUFFERS, Limits


@dataclass(frozen=True)
class NodeConfig:
    """What a node needs to listen, dial, authenticate and notice dead or slow peers."""

    peer_id: int
    secret: bytes = field(repr=False)
    arch: str = ""
    listen_host: str = "127.0.0.1"
    listen_port: int = 0  # 0: let the OS choose; Node.start() returns the real port
    # Addresses to dial at start; gossip finds the rest.
    bootstrap: tuple[tuple[str, int], ...] = ()
    limits: Limits = field(default_factory=Limits)
    version: int = 1  # our software version, told to peers in Hello
    capabilities: tuple[str, ...] = ()
    # Backpressure: messages waiting per connection before send() blocks.
    send_queue_size: int = 8
    # Events (Received, PeerJoined, PeerLeft) waiting for the peer layer before readers block.
    event_queue_size: int = 256
    max_connections: int = 256
    # Dialing: tries = 1 + connect_retries, sleeping backoff * 2**k (capped) in between.
    connect_retries: int = 5
    connect_backoff_s: float = 0.1
    connect_backoff_max_s: float = 2.0
    connect_timeout_s: float = 5.0
    # A connection that has not finished the handshake and both Hellos by then is dropped.
    handshake_timeout_s: float = 5.0
    heartbeat_interval_s: float = 1.0
    # No byte at all from a peer for this long (heartbeats included): the peer is dead.
    dead_peer_timeout_s: float = 10.0
    # A peer that has begun a frame and sends no further byte for this long is dropped.
    slow_sender_timeout_s: float = 10.0
    # How long stop() lets each connection flush its queue and say Bye.
    flush_timeout_s: float = 2.0
    gossip_interval_s: float = 5.0
    # Kernel socket buffers; large ones keep big frames flowing on fast links.
    socket_buffer_bytes: int = 4 * 1024 * 1024
    # Big-frame receive buffers each connection keeps for reuse (no page faults on a stream of
    # big messages); idle, they hold up to this many of the largest recent frames. 0: none.
    recv_buffers: int = RECV_BUFFERS
    # Optional TLS around the authenticated wire protocol (both or neither).
    server_ssl: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    client_ssl: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Refuse values that cannot work, saying which."""
        if not 0 <= self.peer_id < 2**63:
            raise ValueError(f"peer_id must be a non-negative 63-bit integer, got {self.peer_id}")
        if not self.secret:
            raise ValueError("secret must not be empty")
        if self.recv_buffers < 0:
            raise ValueError(f"recv_buffers must be >= 0, got {self.recv_buffers}")
        if self.send_queue_size < 1 or self.event_queue_size < 1:
            raise ValueError("send_queue_size and event_queue_size must be at least 1")
        for name in (
            "connect_backoff_s",
            "connect_timeout_s",
            "handshake_timeout_s",
            "heartbeat_interval_s",
            "dead_peer_timeout_s",
            "slow_sender_timeout_s",
            "gossip_interval_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if (self.server_ssl is None) != (self.client_ssl is None):
            raise ValueError("give both server_ssl and client_ssl, or neither")
