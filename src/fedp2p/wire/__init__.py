"""Sans-IO wire protocol: bytes in, messages out. No sockets, no threads, no torch.

The caller owns the socket; see ``fedp2p.wire.connection`` for how to drive a Connection,
and docs/wire.md for the frame layout, the handshake and the threat model.
"""

from fedp2p.wire.connection import (
    NEED_DATA,
    RECV_BUFFERS,
    RECV_INTO_MIN,
    Closed,
    Connection,
    Event,
    HandshakeComplete,
    NeedData,
    Role,
)
from fedp2p.wire.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from fedp2p.wire.frames import DEFAULT_LIMITS, PROTOCOL_VERSION, Limits
from fedp2p.wire.messages import (
    DTYPES,
    KINDS,
    Bye,
    Heartbeat,
    Hello,
    Message,
    MetaValue,
    Payload,
    PeerAddress,
    Peers,
    WireTensor,
)
from fedp2p.wire.secret import SecretError, generate_secret, load_secret

__all__ = [
    "DEFAULT_LIMITS",
    "DTYPES",
    "KINDS",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "RECV_BUFFERS",
    "RECV_INTO_MIN",
    "Bye",
    "Closed",
    "Connection",
    "Event",
    "HandshakeComplete",
    "Heartbeat",
    "Hello",
    "Limits",
    "LocalProtocolError",
    "Message",
    "MetaValue",
    "NeedData",
    "Payload",
    "PeerAddress",
    "Peers",
    "ProtocolError",
    "RemoteProtocolError",
    "Role",
    "SecretError",
    "WireTensor",
    "generate_secret",
    "load_secret",
]
