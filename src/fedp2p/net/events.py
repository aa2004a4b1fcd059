"""What a node tells the peer layer: small frozen dataclasses on one queue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from fedp2p.wire import Message, PeerAddress


@dataclass(frozen=True)
class PeerJoined:
    """A peer finished the handshake and its Hello; it can be sent to now."""

    peer_id: int
    address: PeerAddress


@dataclass(frozen=True)
class PeerLeft:
    """The connection to a peer is gone; `reason` says why (bye, eof, timeout, protocol error)."""

    peer_id: int
    reason: str


@dataclass(frozen=True)
class Received:
    """A message from a peer that the transport does not consume itself (Payload, mostly)."""

    peer_id: int
    message: Message


NodeEvent: TypeAlias = PeerJoined | PeerLeft | Received
