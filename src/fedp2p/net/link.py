"""Link: one TCP connection to one peer, driven by a reader thread and a writer thread.

The reader thread does everything that happens before the link is usable (TLS, the wire
handshake, the exchange of Hellos), then reads frames for as long as the link lives and
enforces its timeouts. The writer thread drains a bounded queue into the socket, so a
peer that stops reading makes `send` block (then fail), never makes memory grow.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from fedp2p.net.config import NodeConfig
from fedp2p.wire import (
    NEED_DATA,
    Bye,
    Closed,
    Connection,
    Event,
    HandshakeComplete,
    Hello,
    Message,
    NeedData,
    ProtocolError,
    Role,
)

log = logging.getLogger(__name__)

_RECV_CHUNK = 256 * 1024
_IOV_MAX = 512


class LinkDown(Exception):
    """The link cannot go on; the message says why (it becomes PeerLeft.reason)."""


class ShortRead(LinkDown):
    """The peer went away in the middle of something; says how many bytes had arrived."""

    def __init__(self, what: str, partial: int) -> None:
        super().__init__(f"connection closed during {what} after {partial} byte(s)")
        self.partial = partial


class LinkOwner(Protocol):
    """What a link tells the node that owns it; each call comes from the link's reader thread."""

    def on_hello(self, link: Link, hello: Hello) -> bool:
        """The peer said who it is; False drops the link (self-connection, duplicate...)."""

    def on_message(self, link: Link, message: Message) -> None:
        """A message arrived after the Hellos."""

    def on_closed(self, link: Link, reason: str) -> None:
        """The link is gone, both threads have finished and the socket is closed."""


class _Stop:
    """Writer-queue marker: stop writing; `graceful` also half-closes after the last frame."""

    def __init__(self, graceful: bool) -> None:
        self.graceful = graceful


class Link:
    """One connection: socket, wire Connection, bounded send queue, reader and writer threads."""

    def __init__(
        self,
        owner: LinkOwner,
        sock: socket.socket,
        role: Role,
        config: NodeConfig,
        hello: Hello,
        name: str,
        server_hostname: str | None = None,
    ) -> None:
        self.owner = owner
        self.role = role
        self.config = config
        self.name = name
        self.remote: Hello | None = None
        self.observed_host = _peer_host(sock)
        self.ready = threading.Event()  # set when registered or failed
        self.accepted = False  # on_hello took it (registered, or a duplicate being retired)
        self.failure: str | None = None  # why the link ended, once it has
        self.left_reason: str | None = None  # set when the node dropped a registered link
        self._sock: socket.socket = sock
        self._server_hostname = server_hostname
        self._hello = hello
        self._conn = Connection(role, config.secret, config.limits, config.recv_buffers)
        self._conn_lock = threading.Lock()  # the reader and writer share one Connection
        self._queue: queue.Queue[tuple[Message, bool] | _Stop] = queue.Queue()
        self._slots = threading.BoundedSemaphore(config.send_queue_size)
        self._closing = threading.Event()
        self._close_reason: str | None = None
        self._aborted = False
        self._reader = threading.Thread(target=self._run_reader, name=f"fedp2p-read-{name}")
        self._writer = threading.Thread(target=self._run_writer, name=f"fedp2p-write-{name}")
        self.last_write = time.monotonic()  # when the writer last finished a message
        self._poll: select.poll | None = None  # made by the reader thread, after any TLS wrap

    @property
    def peer_id(self) -> int | None:
        """The peer's id once its Hello has arrived."""
        return None if self.remote is None else self.remote.peer_id

    @property
    def initiated_by_us(self) -> bool:
        """Whether we dialed this connection (the dedupe rule needs to know)."""
        return self.role == Role.INITIATOR

    @property
    def closing(self) -> bool:
        """Whether the link has been asked to go away (it may still be flushing)."""
        return self._closing.is_set()

    def start(self) -> None:
        """Start the reader thread; it starts the writer once the Hellos are exchanged."""
        self._reader.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the reader (which itself waits for the writer); True when both are gone."""
        if self._reader.ident is not None:
            self._reader.join(timeout)
        return not self._reader.is_alive() and not self._writer.is_alive()

    def send(self, message: Message, timeout: float | None) -> bool:
        """Queue a message; False when the queue stayed full for `timeout` or the link is closing."""
        if self.closing or not self._slots.acquire(timeout=timeout):
            return False
        if self.closing:
            self._slots.release()
            return False
        self._queue.put((message, True))
        return True

    def try_send(self, message: Message) -> bool:
        """Queue a control message only if there is room right now (heartbeats, gossip)."""
        return self.send(message, timeout=0)

    def finish(self, reason: str, say_bye: bool = True) -> None:
        """Close gracefully: flush what is queued, say Bye, half-close; the reader drains to EOF."""
        if self._closing.is_set():
            return
        self._close_reason = reason
        self._closing.set()
        if say_bye and self._writer.ident is not None:
            self._queue.put((Bye(reason=reason), False))
        self._queue.put(_Stop(graceful=True))

    def abort(self, reason: str) -> None:
        """Close now: shut the socket both ways, which wakes both threads."""
        if self._close_reason is None:
            self._close_reason = reason
        self._aborted = True
        self._closing.set()
        self._queue.put(_Stop(graceful=False))
        _shutdown(self._sock, socket.SHUT_RDWR)

    # -- reader thread -------------------------------------------------------------------

    def _run_reader(self) -> None:
        """Handshake, Hellos, then frames until EOF or an error; always cleans up."""
        reason = "closed"
        try:
            self._open()
            if self.closing:
                return
            assert self.remote is not None
            self.accepted = self.owner.on_hello(self, self.remote)
            if not self.accepted:
                self._close_reason = self._close_reason or "not registered"
                return
            self._writer.start()
            self.ready.set()
            self._read_frames()
        except ProtocolError as exc:
            reason = f"protocol error: {exc}"
            log.warning("link %s (peer %s): %s; closing it", self.name, self.peer_id, reason)
        except LinkDown as exc:
            reason = str(exc)
        except (OSError, ssl.SSLError) as exc:
            reason = f"socket error: {exc}"
        except Exception as exc:  # a bug here must not take the node down
            reason = f"internal error: {exc!r}"
            log.exception("link %s (peer %s) failed", self.name, self.peer_id)
        finally:
            if self._close_reason is not None:
                reason = self._close_reason
            self._teardown()
            self.failure = self.failure or reason
            self.ready.set()
            self.owner.on_closed(self, reason)

    def _open(self) -> None:
        """TLS (if configured), the authenticated wire handshake, then both Hellos."""
        deadline = time.monotonic() + self.config.handshake_timeout_s
        self._wrap_tls(deadline)
        self._sendall([self._conn.initiate()])
        while True:
            event = self._next_event()
            if event is NEED_DATA:
                self._fill(deadline - time.monotonic(), "handshake")
            elif isinstance(event, HandshakeComplete):
                break
            elif isinstance(event, Closed):
                raise LinkDown("peer closed the connection during the handshake")
            else:
                raise ProtocolError(f"expected the handshake, got {type(event).__name__}")
        with self._conn_lock:
            buffers = self._conn.send(self._hello)
        self._sendall(buffers)
        while True:
            event = self._next_event()
            if event is NEED_DATA:
                self._fill(deadline - time.monotonic(), "hello")
            elif isinstance(event, Hello):
                self.remote = event
                return
            elif isinstance(event, Closed):
                raise LinkDown("peer closed the connection before its Hello")
            else:
                raise ProtocolError(f"expected Hello, got {type(event).__name__}")

    def _wrap_tls(self, deadline: float) -> None:
        """Wrap the socket in TLS before anything else is said, if the node is configured so."""
        context = self.config.client_ssl if self.initiated_by_us else self.config.server_ssl
        if context is None:
            return
        tls = context.wrap_socket(
            self._sock,
            server_side=not self.initiated_by_us,
            server_hostname=self._server_hostname if self.initiated_by_us else None,
            do_handshake_on_connect=False,
        )
        self._sock = tls
        tls.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            tls.do_handshake()
        except TimeoutError as exc:
            raise LinkDown("TLS handshake timed out") from exc
        finally:
            tls.settimeout(None)

    def _read_frames(self) -> None:
        """Deliver messages until EOF, a Bye-then-EOF, a timeout or a protocol error."""
        while True:
            event = self._next_event()
            if isinstance(event, NeedData):
                with self._conn_lock:
                    mid_frame = self._conn.frame_in_progress
                timeout = (
                    self.config.slow_sender_timeout_s
                    if mid_frame
                    else self.config.dead_peer_timeout_s
                )
                self._fill(timeout, "frame" if mid_frame else "idle")
            elif isinstance(event, Closed):
                raise LinkDown("peer closed the connection")
            elif isinstance(event, HandshakeComplete):
                raise ProtocolError("a second handshake on an open connection")
            else:
                self.owner.on_message(self, event)

    def _next_event(self) -> Event:
        """The wire's next event, sending any handshake bytes it has for the peer."""
        with self._conn_lock:
            event = self._conn.next_event()
            outgoing = self._conn.data_to_send()
        if outgoing:
            self._sendall([outgoing])
        return event

    def _fill(self, timeout: float, what: str) -> None:
        """Wait up to `timeout` for bytes and feed them to the wire (zero-copy for big frames)."""
        # Mid-transfer the bytes are usually there already: try first, poll only if not.
        if self._receive(socket.MSG_DONTWAIT):
            return
        if not self._wait_readable(timeout):
            if what == "idle":
                raise LinkDown(f"dead peer: nothing heard for {timeout:g} s")
            if what == "frame":
                raise LinkDown(f"slow sender: a frame stalled for {timeout:g} s")
            raise LinkDown(f"{what} timed out after {self.config.handshake_timeout_s:g} s")
        self._receive(0)

    def _receive(self, flags: int) -> bool:
        """One recv (into the wire's frame buffer when it offers one); False if it would block."""
        if flags and isinstance(self._sock, ssl.SSLSocket):
            return False  # TLS sockets take no flags; the caller polls (and checks pending())
        with self._conn_lock:
            target = self._conn.read_buffer()
        try:
            if target is not None:
                n = self._sock.recv_into(target, 0, flags)
                with self._conn_lock:
                    if n:
                        self._conn.commit(n)
                    else:
                        self._conn.receive_data(b"")
            else:
                data = self._sock.recv(_RECV_CHUNK, flags)
                with self._conn_lock:
                    self._conn.receive_data(data)
        except BlockingIOError:
            return False
        return True

    def _wait_readable(self, timeout: float) -> bool:
        """Whether the socket has something to read (or EOF) within `timeout` seconds."""
        if isinstance(self._sock, ssl.SSLSocket) and self._sock.pending():
            return True
        if timeout <= 0:
            return False
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self._sock.fileno(), select.POLLIN)
        return bool(self._poll.poll(timeout * 1000))

    def _teardown(self) -> None:
        """Stop the writer, close the socket; runs once, in the reader's `finally`."""
        graceful = self._closing.is_set() and not self._aborted
        self._closing.set()
        self._queue.put(_Stop(graceful=False))
        if graceful and self._writer.ident is not None:
            # A graceful finish lets the writer flush; a stuck one is woken by the shutdown.
            self._writer.join(self.config.flush_timeout_s)
        _shutdown(self._sock, socket.SHUT_RDWR)
        if self._writer.ident is not None:
            self._writer.join()
        self._sock.close()

    # -- writer thread -------------------------------------------------------------------

    def _run_writer(self) -> None:
        """Encode and write queued messages in order until told to stop."""
        try:
            while True:
                item = self._queue.get()
                if isinstance(item, _Stop):
                    if item.graceful:
                        _shutdown(self._sock, socket.SHUT_WR)
                    return
                message, holds_slot = item
                try:
                    with self._conn_lock:
                        buffers = self._conn.send(message)
                    self._sendall(buffers)
                    self.last_write = time.monotonic()
                finally:
                    if holds_slot:
                        self._slots.release()
        except (OSError, ssl.SSLError, ProtocolError) as exc:
            if not self.closing:
                log.info("link %s (peer %s): write failed: %s", self.name, self.peer_id, exc)
            self.abort(f"write failed: {exc}")
        finally:
            self._drain_queue()

    def _drain_queue(self) -> None:
        """Free the slots of messages that will never be written, so no sender waits on them."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if not isinstance(item, _Stop) and item[1]:
                self._slots.release()

    def _sendall(self, buffers: Sequence[bytes | bytearray | memoryview]) -> None:
        """Write every buffer, with one sendmsg per batch (no joining copy) where possible."""
        if isinstance(self._sock, ssl.SSLSocket):
            for buffer in buffers:
                self._sock.sendall(buffer)
            return
        views = deque(memoryview(b).cast("B") for b in buffers if len(b))
        while views:
            batch = [views[i] for i in range(min(len(views), _IOV_MAX))]
            sent = self._sock.sendmsg(batch)
            while sent:
                head = views[0]
                if sent >= len(head):
                    sent -= len(head)
                    views.popleft()
                else:
                    views[0] = head[sent:]
                    sent = 0


def _shutdown(sock: socket.socket, how: int) -> None:
    """shutdown() that ignores a socket already gone."""
    with contextlib.suppress(OSError):
        sock.shutdown(how)


def _peer_host(sock: socket.socket) -> str:
    """The remote IP address, or "" when the socket has none (already reset)."""
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return ""
