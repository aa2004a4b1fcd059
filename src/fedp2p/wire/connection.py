"""A sans-IO fedp2p connection: bytes in, events out, messages in, bytes out; no sockets here.

Driving it (the caller owns the socket)::

    conn = Connection(Role.INITIATOR, secret)        # RESPONDER on the accepting side
    sock.sendall(conn.initiate())                     # both roles, right after connect/accept
    while True:
        event = conn.next_event()                     # raises ProtocolError: close the socket
        if event is NEED_DATA:
            sock.sendall(conn.data_to_send())         # handshake replies; b"" most of the time
            view = conn.read_buffer()                 # inside a big frame: receive in place
            if view is not None:
                n = sock.recv_into(view)
                conn.commit(n) if n else conn.receive_data(b"")
            else:
                conn.receive_data(sock.recv(65536))   # b"" is EOF
        elif isinstance(event, HandshakeComplete):
            for buf in conn.send(Hello(...)):         # send() is allowed from now on
                sock.sendall(buf)
        elif isinstance(event, Closed):
            break
        else:
            handle(event)                             # Hello, Peers, Payload, Heartbeat, Bye

Handshake (both sides run the same code; see docs/wire.md)::

    1. each side sends NONCE(role, 32 random bytes)           -- initiate()
    2. on the peer's NONCE, each side derives the session keys and
       queues PROOF(own role's proof)                          -- data_to_send()
    3. on the peer's PROOF, checked in constant time           -- HandshakeComplete

Step 2 is why the API has ``data_to_send()`` beside ``initiate()``: the proof covers both nonces,
so it can only go out after the peer's nonce arrived. ``send()`` also prepends anything still
queued, so a caller that sends right after ``HandshakeComplete`` cannot reorder the proof.

After the handshake every frame ends with a 16-byte Poly1305 tag over seq || frame, under a
one-time key derived from the direction key and seq (``auth.FrameMac``); seq counts frames per
direction from 0 and is never sent. A frame that was altered, replayed, reordered, or reflected
back to its sender fails that check and raises RemoteProtocolError.

Zero-copy receive: once ``next_event()`` has parsed a header (and only then, after the limit
checks) the connection takes one buffer for the whole frame. While more than ``RECV_INTO_MIN``
bytes of it are missing, ``read_buffer()`` returns a writable view of the missing part for
``recv_into``; ``commit(n)`` records what arrived. Decoded tensors are views into that buffer,
so a big update is written to memory once, by the kernel.

Streaming verification: the MAC absorbs bytes as ``commit()``/``receive_data()`` deliver them
(while they are still in cache), but nothing of a frame is parsed or handed out before its
whole tag has been checked.

Buffer reuse: a multi-megabyte buffer that malloc takes fresh from the OS costs a page fault
per 4 KiB on first touch, on loopback about as much as receiving the bytes (malloc recycles
freed memory only some of the time). So the connection keeps the buffers of its last
``recv_buffers`` big frames and reuses one for a new frame only when nothing but the pool
refers to it any more (``sys.getrefcount``: every memoryview, tensor or array made from a
decoded message keeps the buffer referenced, so a buffer still in use is never overwritten).
Without CPython's reference counting (PyPy, free-threaded builds) it always allocates.
"""

from __future__ import annotations

import enum
import logging
import sys
from dataclasses import dataclass
from typing import TypeAlias

from fedp2p.wire.auth import (
    MAC_SIZE,
    NONCE_SIZE,
    FrameMac,
    SessionKeys,
    derive_session_keys,
    frame_mac,
    new_nonce,
    same_digest,
)
from fedp2p.wire.errors import LocalProtocolError, RemoteProtocolError
from fedp2p.wire.frames import (
    DEFAULT_LIMITS,
    HANDSHAKE_TYPES,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    FrameHeader,
    Limits,
    MsgType,
    coalesce,
    decode_message,
    encode_message,
    pack_header,
    parse_header,
)
from fedp2p.wire.messages import Message
from fedp2p.wire.secret import check_secret

log = logging.getLogger(__name__)

RECV_INTO_MIN = 64 * 1024  # below this many missing bytes, plain recv() + receive_data() is cheaper
RECV_BUFFERS = 3  # default pool of big-frame buffers per connection (see Buffer reuse above)
POOL_MIN_BYTES = 256 * 1024  # smaller frames come from malloc's free lists, without faults
# References to an idle pooled buffer as sys.getrefcount(pool[i]) sees them: the pool's list
# slot and the call's argument. Only trusted where reference counts are exact and immediate.
_IDLE_REFS = 2
_REUSE_OK = sys.implementation.name == "cpython" and getattr(sys, "_is_gil_enabled", lambda: True)()


class Role(enum.Enum):
    """Which end of the TCP connection we are; it decides which proof and key we use."""

    INITIATOR = 1
    RESPONDER = 2


class NeedData:
    """Type of NEED_DATA: next_event() cannot make progress until more bytes arrive."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        """Keep one instance, so callers can test ``event is NEED_DATA``."""
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        """Show the sentinel's name."""
        return "NEED_DATA"


NEED_DATA = NeedData()


@dataclass(frozen=True)
class HandshakeComplete:
    """The peer proved it holds the secret; ``send()`` works from now on."""

    session_id: str  # same on both ends; for logs


@dataclass(frozen=True)
class Closed:
    """The peer closed the connection cleanly, between two frames."""


Event: TypeAlias = Message | HandshakeComplete | NeedData | Closed


class _State(enum.Enum):
    """Where the handshake stands."""

    NEW = enum.auto()
    AWAIT_NONCE = enum.auto()
    AWAIT_PROOF = enum.auto()
    OPEN = enum.auto()


_NONCE_BODY = 1 + NONCE_SIZE  # role byte, nonce
_PROOF_BODY = 32


class Connection:
    """One end of one authenticated fedp2p connection, with no I/O of its own."""

    def __init__(
        self,
        role: Role,
        secret: bytes,
        limits: Limits = DEFAULT_LIMITS,
        recv_buffers: int = RECV_BUFFERS,
    ) -> None:
        """Prepare a connection; nothing is sent until ``initiate()``.

        ``recv_buffers`` big-frame buffers are kept for reuse (0: allocate every frame anew);
        idle, they cost up to that many times the largest recent frame of memory.
        """
        if not isinstance(role, Role):
            raise LocalProtocolError(f"role must be a Role, not {role!r}")
        if not isinstance(limits, Limits):
            raise LocalProtocolError(f"limits must be a Limits, not {limits!r}")
        if type(recv_buffers) is not int or recv_buffers < 0:
            raise LocalProtocolError(f"recv_buffers must be an int >= 0, not {recv_buffers!r}")
        self._role = role
        self._secret = check_secret(secret)
        self._limits = limits
        self._nonce = new_nonce()
        self._state = _State.NEW
        self._outbox = bytearray()
        self._rx = bytearray()  # received bytes not yet in a frame buffer
        self._header: FrameHeader | None = None
        # The frame being received, taken after its header was checked; it may be longer than
        # the frame (a reused buffer): only its first _frame_len bytes are the frame.
        self._frame: bytearray | None = None
        self._frame_len = 0
        self._filled = 0
        self._mac: FrameMac | None = None  # the frame's MAC, fed as bytes arrive
        self._maced = 0  # how many of the frame's bytes the MAC has absorbed
        self._pool: list[bytearray] = []  # recent big-frame buffers, oldest first
        self._pool_size = recv_buffers if _REUSE_OK else 0
        self._eof = False
        self._error: RemoteProtocolError | None = None
        self._keys: SessionKeys | None = None
        self._send_key = b""
        self._recv_key = b""
        self._send_seq = 0
        self._recv_seq = 0

    @property
    def role(self) -> Role:
        """Return which end of the connection this is."""
        return self._role

    @property
    def limits(self) -> Limits:
        """Return the limits received frames are checked against."""
        return self._limits

    @property
    def handshake_done(self) -> bool:
        """Tell whether the peer has proved it holds the secret."""
        return self._state is _State.OPEN

    @property
    def frame_in_progress(self) -> bool:
        """Tell whether part of a frame has arrived, so a stall is a slow sender, not an idle one.

        Meaningful after ``next_event()`` returned NEED_DATA; small frames count too.
        """
        return self._frame is not None or bool(self._rx)

    # ------------------------------------------------------------------ sending

    def initiate(self) -> bytes:
        """Return our opening NONCE frame; both roles send it as soon as the socket is up."""
        if self._state is not _State.NEW:
            raise LocalProtocolError("initiate() may only be called once")
        self._state = _State.AWAIT_NONCE
        return pack_header(MsgType.NONCE, _NONCE_BODY, 0) + bytes([self._role.value]) + self._nonce

    def data_to_send(self) -> bytes:
        """Return (and forget) protocol bytes queued by ``next_event()``, i.e. our handshake proof."""
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def send(self, msg: Message) -> list[bytes | memoryview]:
        """Encode and MAC a message; write the returned buffers in order (tensor data uncopied)."""
        if self._state is not _State.OPEN:
            raise LocalProtocolError("send() before the handshake completed")
        encoded = encode_message(msg, self._limits, MAC_SIZE)
        parts: list[bytes | memoryview] = [encoded.head, *encoded.tensor_parts]
        parts.append(frame_mac(self._send_key, self._send_seq, parts))
        self._send_seq += 1
        if self._outbox:
            parts.insert(0, self.data_to_send())
        return coalesce(parts)

    # ------------------------------------------------------------------ receiving

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Hand over bytes read from the socket; ``b""`` means the peer closed its side."""
        if self._eof:
            raise LocalProtocolError("receive_data() after EOF")
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if not view:
            self._eof = True
            return
        if self._frame is not None and self._filled < self._frame_len:
            n = min(len(view), self._frame_len - self._filled)
            self._frame[self._filled : self._filled + n] = view[:n]
            self._filled += n
            view = view[n:]
            self._absorb()
        if view:
            self._rx += view

    def read_buffer(self) -> memoryview | None:
        """Return the missing part of a large frame for ``recv_into``, else None (use receive_data)."""
        if self._frame is None or self._error is not None or self._eof:
            return None
        if self._frame_len - self._filled < RECV_INTO_MIN:
            return None
        return memoryview(self._frame)[self._filled : self._frame_len]

    def commit(self, n: int) -> None:
        """Record that ``recv_into(read_buffer())`` wrote n bytes; EOF goes to receive_data(b"")."""
        if self._frame is None or self._eof:
            raise LocalProtocolError("commit() without a frame buffer to fill")
        missing = self._frame_len - self._filled
        if not 0 < n <= missing:
            raise LocalProtocolError(
                f"commit({n}) but {missing} bytes are missing; for EOF call receive_data(b'')"
            )
        self._filled += n
        self._absorb()

    def _absorb(self) -> None:
        """Feed the MAC the frame bytes that arrived since last time (the tag itself excluded)."""
        if self._mac is None or self._frame is None:
            return
        end = min(self._filled, self._frame_len - MAC_SIZE)
        if end > self._maced:
            with memoryview(self._frame) as view:
                self._mac.update(view[self._maced : end])
            self._maced = end

    def next_event(self) -> Event:
        """Return the next event, NEED_DATA, or Closed; raise ProtocolError on anything bad."""
        if self._error is not None:
            raise RemoteProtocolError(f"connection already failed: {self._error}")
        if self._state is _State.NEW:
            raise LocalProtocolError("call initiate() before next_event()")
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._error = exc
            self._frame, self._mac = None, None
            self._rx.clear()
            log.debug("%s connection failed: %s", self._role.name.lower(), exc)
            raise

    def _next_event(self) -> Event:
        """Advance through complete frames until one yields an event or bytes run out."""
        while True:
            if self._frame is None:
                if len(self._rx) < HEADER_SIZE:
                    return self._between_frames()
                self._start_frame()
            assert self._frame is not None
            if self._filled < self._frame_len:
                if self._eof:
                    raise RemoteProtocolError(
                        f"connection closed mid-frame: {self._filled} of {self._frame_len} "
                        "bytes arrived"
                    )
                return NEED_DATA
            event = self._finish_frame()
            if event is not None:
                return event

    def _between_frames(self) -> NeedData | Closed:
        """At a frame boundary (or inside a header): wait, or report how the peer closed."""
        if not self._eof:
            return NEED_DATA
        if self._rx:
            raise RemoteProtocolError(
                f"connection closed mid-frame: {len(self._rx)} of {HEADER_SIZE} header bytes arrived"
            )
        if self._state is not _State.OPEN:
            raise RemoteProtocolError("connection closed during the handshake")
        return Closed()

    def _start_frame(self) -> None:
        """Check a complete header, then take a frame buffer and move buffered bytes in."""
        is_open = self._state is _State.OPEN
        header = parse_header(
            bytes(self._rx[:HEADER_SIZE]), self._limits, MAC_SIZE if is_open else 0
        )
        self._check_phase(header)
        size = header.frame_len
        frame = self._take_buffer(size)
        n = min(len(self._rx), size)
        frame[:n] = self._rx[:n]
        del self._rx[:n]
        self._header, self._frame, self._frame_len, self._filled = header, frame, size, n
        self._mac = FrameMac(self._recv_key, self._recv_seq) if is_open else None
        self._maced = 0
        self._absorb()

    def _take_buffer(self, size: int) -> bytearray:
        """Reuse a pooled buffer nothing else refers to, or allocate (and pool) a new one."""
        if size < POOL_MIN_BYTES or not self._pool_size:
            return bytearray(size)
        pool = self._pool
        for i in range(len(pool)):
            # The size bound keeps one huge frame from pinning its buffer for small ones.
            if size <= len(pool[i]) <= 2 * size and sys.getrefcount(pool[i]) == _IDLE_REFS:
                buffer = pool.pop(i)
                pool.append(buffer)
                return buffer
        buffer = bytearray(size)
        pool.append(buffer)
        if len(pool) > self._pool_size:
            del pool[0]  # if the application still holds it, it stays alive for it
        return buffer

    def _check_phase(self, header: FrameHeader) -> None:
        """Refuse frames the handshake state does not allow, before allocating their buffer."""
        msg_type = header.msg_type
        if self._state is _State.OPEN:
            if msg_type in HANDSHAKE_TYPES:
                raise RemoteProtocolError(f"unexpected {msg_type.name} after the handshake")
            return
        expected, size = (
            (MsgType.NONCE, _NONCE_BODY)
            if self._state is _State.AWAIT_NONCE
            else (MsgType.PROOF, _PROOF_BODY)
        )
        if msg_type is not expected:
            raise RemoteProtocolError(
                f"expected {expected.name} during the handshake, got {msg_type.name}"
            )
        if header.meta_len != size:
            raise RemoteProtocolError(
                f"{msg_type.name} frame of {header.meta_len} bytes, not {size}"
            )

    def _finish_frame(self) -> Event | None:
        """Consume the complete frame: advance the handshake or verify and decode a message."""
        frame, header, mac = self._frame, self._header, self._mac
        assert frame is not None and header is not None
        self._frame, self._header, self._mac = None, None, None
        body = memoryview(frame)[HEADER_SIZE : HEADER_SIZE + header.meta_len + header.tensor_len]
        if self._state is _State.AWAIT_NONCE:
            self._on_nonce(body)
            return None
        if self._state is _State.AWAIT_PROOF:
            return self._on_proof(body)
        # Every byte before the tag has been absorbed; nothing was parsed or handed out yet.
        end = self._frame_len - MAC_SIZE
        assert mac is not None and self._maced == end
        with memoryview(frame) as view:
            authentic = mac.verify(view[end : self._frame_len])
        if not authentic:
            raise RemoteProtocolError(
                f"{header.msg_type.name} frame #{self._recv_seq} failed authentication "
                "(altered, replayed, reordered or reflected)"
            )
        self._recv_seq += 1
        return decode_message(header, body, self._limits)

    def _on_nonce(self, body: memoryview) -> None:
        """Derive this connection's keys from both nonces and queue our proof."""
        peer_role, peer_nonce = body[0], bytes(body[1:])
        if peer_role == self._role.value:
            raise RemoteProtocolError(
                f"the peer also claims to be the {self._role.name.lower()}; one end must "
                "initiate and the other respond"
            )
        if peer_role not in (Role.INITIATOR.value, Role.RESPONDER.value):
            raise RemoteProtocolError(f"unknown role {peer_role} in NONCE")
        if peer_nonce == self._nonce:
            raise RemoteProtocolError("the peer sent our own nonce back (reflection)")
        if self._role is Role.INITIATOR:
            keys = derive_session_keys(self._secret, self._nonce, peer_nonce, PROTOCOL_VERSION)
            own_proof = keys.initiator_proof
            self._send_key, self._recv_key = (
                keys.initiator_to_responder,
                keys.responder_to_initiator,
            )
        else:
            keys = derive_session_keys(self._secret, peer_nonce, self._nonce, PROTOCOL_VERSION)
            own_proof = keys.responder_proof
            self._send_key, self._recv_key = (
                keys.responder_to_initiator,
                keys.initiator_to_responder,
            )
        self._keys = keys
        self._outbox += pack_header(MsgType.PROOF, _PROOF_BODY, 0) + own_proof
        self._state = _State.AWAIT_PROOF

    def _on_proof(self, body: memoryview) -> HandshakeComplete:
        """Check the peer's proof in constant time; success opens the connection."""
        keys = self._keys
        assert keys is not None
        peer_proof = keys.responder_proof if self._role is Role.INITIATOR else keys.initiator_proof
        if not same_digest(peer_proof, body):
            raise RemoteProtocolError(
                "handshake failed: the peer does not hold our shared secret "
                "(or the handshake was tampered with)"
            )
        self._state = _State.OPEN
        log.debug("%s handshake complete, session %s", self._role.name.lower(), keys.session_id)
        return HandshakeComplete(keys.session_id)
