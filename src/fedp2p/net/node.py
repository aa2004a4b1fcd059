"""Node: the facade the peer layer uses; it wires a Listener, Links, Membership and a ticker.

Threads of one node (all named ``fedp2p-...``, all joined by ``stop()``):
listener (accepts), maintenance (bootstrap, heartbeats, gossip), and a reader and a writer
per connection. One ``threading.Event`` says "stop" to all of them.
"""

from __future__ import annotations

import itertools
import logging
import queue
import random
import socket
import threading
import time

from fedp2p.net.config import NodeConfig
from fedp2p.net.events import NodeEvent, PeerJoined, PeerLeft, Received
from fedp2p.net.link import Link
from fedp2p.net.listener import Listener, tune
from fedp2p.net.membership import Membership, reachable_address
from fedp2p.wire import (
    Bye,
    Heartbeat,
    Hello,
    Message,
    PeerAddress,
    Peers,
    RemoteProtocolError,
    Role,
)

log = logging.getLogger(__name__)

_EMIT_TICK_S = 0.1  # how often a blocked event producer re-checks for stop


class Node:
    """A peer's transport: authenticated connections, membership gossip and topology links."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.events: queue.Queue[NodeEvent] = queue.Queue(config.event_queue_size)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # the registered links changed
        self._links: dict[int, Link] = {}  # the one registered link per peer
        self._all: set[Link] = set()  # every live link: handshaking, registered, retiring
        self._moving: dict[int, float] = {}  # peer -> deadline, while a duplicate is replaced
        self._serial = itertools.count()
        self._rng = random.Random()
        self._listener: Listener | None = None
        self._ticker: threading.Thread | None = None
        self._membership: Membership | None = None
        self._address: PeerAddress | None = None

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def peer_id(self) -> int:
        """Our own id."""
        return self.config.peer_id

    @property
    def address(self) -> PeerAddress:
        """Our address as peers learn it (the listen host; wildcard hosts get replaced there)."""
        if self._address is None:
            raise RuntimeError("node not started")
        return self._address

    def start(self) -> tuple[str, int]:
        """Bind, start listening and the maintenance thread (which dials the bootstrap peers)."""
        if self._listener is not None:
            raise RuntimeError("node already started")
        cfg = self.config
        self._listener = Listener(
            cfg.listen_host,
            cfg.listen_port,
            self._on_accept,
            name=str(cfg.peer_id),
            buffer_bytes=cfg.socket_buffer_bytes,
        )
        host, port = self._listener.address
        self._address = PeerAddress(cfg.peer_id, cfg.listen_host, port, cfg.arch)
        self._membership = Membership(self._address)
        self._listener.start()
        self._ticker = threading.Thread(target=self._maintain, name=f"fedp2p-maint-{cfg.peer_id}")
        self._ticker.start()
        log.info("node %d listening on %s:%d", cfg.peer_id, host, port)
        return host, port

    def stop(self) -> None:
        """Say Bye to every peer, close every socket and join every thread of this node."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            links = list(self._all)
        for link in links:
            if link.remote is not None:
                link.finish("node stopping")
            else:
                link.abort("node stopping")
        deadline = time.monotonic() + self.config.flush_timeout_s
        for link in links:
            if not link.join(max(deadline - time.monotonic(), 0)):
                link.abort("node stopping (flush timed out)")
        for link in links:
            link.join()
        if self._ticker is not None and self._ticker.ident is not None:
            self._ticker.join()
        log.info("node %d stopped", self.peer_id)

    def __enter__(self) -> Node:
        """Start on entry."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop on exit, whatever happened."""
        self.stop()

    # -- what the peer layer calls ------------------------------------------------------

    def send(self, peer_id: int, message: Message, timeout: float | None = 30.0) -> bool:
        """Queue a message for a peer; False if not connected or its queue stayed full for `timeout`."""
        if isinstance(message, Hello):
            raise ValueError("Hello is sent by the transport itself")
        with self._lock:
            link = self._links.get(peer_id)
        if link is None:
            return False
        return link.send(message, timeout)

    def connected(self) -> frozenset[int]:
        """Peers with a registered connection right now."""
        with self._lock:
            return frozenset(self._links)

    def known(self) -> dict[int, PeerAddress]:
        """Every peer we have heard of (not ourselves): id -> address."""
        return self._members.known()

    def wait_for_peers(self, n: int, timeout: float | None = None) -> bool:
        """Block until at least n other peers are known; False on timeout."""
        return self._members.wait_for(n, timeout)

    def wait_connected(
        self, peers: frozenset[int], *, exact: bool = False, timeout: float | None = None
    ) -> bool:
        """Block until connected() includes (or, with exact, equals) `peers`; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def done() -> bool:
            return set(self._links) == peers if exact else peers <= set(self._links)

        with self._changed:
            while not done():
                remaining = None if deadline is None else deadline - time.monotonic()
                if (remaining is not None and remaining <= 0) or self._stop.is_set():
                    return False
                self._changed.wait(remaining)
            return True

    def connect(self, host: str, port: int) -> int:
        """Dial with retries, authenticate and exchange Hellos; returns the peer's id.

        Raises ConnectionError when the peer cannot be reached or does not complete the
        handshake (a wrong secret looks like this).
        """
        return self._joined(self._open(host, port), host, port)

    def _open(self, host: str, port: int) -> Link:
        """Dial and start a link's handshake without waiting for it."""
        sock = self._dial(host, port)
        link = self._start_link(sock, Role.INITIATOR, server_hostname=host)
        if link is None:
            raise ConnectionError("node is stopping")
        return link

    def _joined(self, link: Link, host: str, port: int) -> int:
        """Wait for a dialed link's handshake and Hellos; the peer's id, or ConnectionError."""
        link.ready.wait()
        peer_id = link.peer_id
        # A duplicate may be in the middle of being replaced by the pair's other link.
        if (
            peer_id is not None
            and link.accepted
            and self.wait_connected(frozenset({peer_id}), timeout=self.config.handshake_timeout_s)
        ):
            return peer_id
        raise ConnectionError(f"could not join {host}:{port}: {link.failure or 'refused'}")

    def connect_neighbours(
        self, neighbours: frozenset[int], *, prune: bool = True, timeout: float | None = None
    ) -> bool:
        """Make connected() cover (prune: equal) `neighbours`; True when done within `timeout`.

        To avoid simultaneous dials, only the lower id of each pair dials; the higher one
        waits for it. With prune, links to peers outside `neighbours` are closed with Bye.
        """
        neighbours = frozenset(neighbours) - {self.peer_id}
        known = self.known()
        current = self.connected()
        dialed: list[tuple[int, PeerAddress, Link]] = []
        for peer_id in sorted(neighbours - current):
            if self.peer_id > peer_id:
                continue
            address = known.get(peer_id)
            if address is None:
                log.warning("node %d: neighbour %d has no known address", self.peer_id, peer_id)
                continue
            try:  # all handshakes run at once; only the TCP connects are one after another
                dialed.append((peer_id, address, self._open(address.host, address.port)))
            except ConnectionError as exc:
                log.warning("node %d: cannot reach neighbour %d: %s", self.peer_id, peer_id, exc)
        for peer_id, address, link in dialed:
            try:
                self._joined(link, address.host, address.port)
            except ConnectionError as exc:
                log.warning("node %d: cannot join neighbour %d: %s", self.peer_id, peer_id, exc)
        if prune:
            for peer_id in current - neighbours:
                self._drop(peer_id, "not a neighbour")
        return self.wait_connected(neighbours, exact=prune, timeout=timeout)

    # -- link callbacks (from link reader threads) --------------------------------------

    def on_hello(self, link: Link, hello: Hello) -> bool:
        """Register the link, unless it is to ourselves; a duplicate keeps one link per pair."""
        peer_id = hello.peer_id
        if peer_id == self.peer_id:
            link.failure = "connected to ourselves"
            log.debug("node %d: dropping a connection to itself", self.peer_id)
            return False
        address = reachable_address(
            PeerAddress(peer_id, hello.listen_host, hello.listen_port, hello.arch),
            link.observed_host,
        )
        loser: Link | None = None
        with self._lock:
            if self._stop.is_set():
                return False
            existing = self._links.get(peer_id)
            if existing is None:
                self._links[peer_id] = link
                joined = self._moving.pop(peer_id, None) is None
            else:
                joined = False
                if _keep_new(link, existing, self.peer_id, peer_id):
                    self._links[peer_id] = link
                    loser = existing
                else:
                    loser = link
            self._changed.notify_all()
        if loser is not None:
            log.info("node %d: duplicate connection to %d; closing one", self.peer_id, peer_id)
            loser.finish("duplicate")
        changed = self._members.learn([address])
        if joined:
            self._emit(PeerJoined(peer_id, address))
        link.try_send(self._members.peers_message())
        if changed:
            self._gossip(exclude=link)
        return True

    def on_message(self, link: Link, message: Message) -> None:
        """Consume transport messages; hand everything else to the peer layer."""
        peer_id = link.peer_id
        assert peer_id is not None
        if isinstance(message, Heartbeat):
            return
        if isinstance(message, Peers):
            if self._members.learn(message.addresses):
                self._gossip(exclude=link)
            return
        if isinstance(message, Bye):
            self._on_bye(link, peer_id, message.reason)
            return
        if isinstance(message, Hello):
            raise RemoteProtocolError("a second Hello on the same connection")
        self._emit(Received(peer_id, message))

    def on_closed(self, link: Link, reason: str) -> None:
        """Forget the link; tell the peer layer if it was the peer's registered one."""
        peer_id = link.peer_id
        with self._lock:
            self._all.discard(link)
            registered = peer_id is not None and self._links.get(peer_id) is link
            if registered:
                del self._links[peer_id]  # type: ignore[arg-type]
            self._changed.notify_all()
        if link.failure is None:
            link.failure = reason
        if peer_id is not None and (registered or link.left_reason is not None):
            log.info("node %d: peer %d left: %s", self.peer_id, peer_id, link.left_reason or reason)
            self._emit(PeerLeft(peer_id, link.left_reason or reason))

    # -- internals ------------------------------------------------------------------------

    @property
    def _members(self) -> Membership:
        if self._membership is None:
            raise RuntimeError("node not started")
        return self._membership

    def _hello(self) -> Hello:
        """What we tell every peer about ourselves."""
        cfg = self.config
        return Hello(
            peer_id=cfg.peer_id,
            listen_host=self.address.host,
            listen_port=self.address.port,
            arch=cfg.arch,
            version=cfg.version,
            capabilities=cfg.capabilities,
        )

    def _on_accept(self, sock: socket.socket) -> None:
        """A new incoming connection (listener thread)."""
        self._start_link(sock, Role.RESPONDER)

    def _start_link(
        self, sock: socket.socket, role: Role, server_hostname: str | None = None
    ) -> Link | None:
        """Wrap a connected socket in a Link and start its reader; None when refused."""
        name = f"{self.peer_id}-{next(self._serial)}"
        with self._lock:
            if self._stop.is_set() or len(self._all) >= self.config.max_connections:
                refused = True
            else:
                refused = False
                tune(sock, 0)
                link = Link(self, sock, role, self.config, self._hello(), name, server_hostname)
                self._all.add(link)
        if refused:
            log.warning(
                "node %d: refusing a connection (stopping or at max_connections)", self.peer_id
            )
            sock.close()
            return None
        link.start()
        return link

    def _dial(self, host: str, port: int) -> socket.socket:
        """A connected TCP socket, after up to 1 + connect_retries tries with backoff."""
        cfg = self.config
        last: OSError | None = None
        for attempt in range(cfg.connect_retries + 1):
            try:
                return self._dial_once(host, port)
            except OSError as exc:
                last = exc
            if attempt < cfg.connect_retries:
                delay = min(cfg.connect_backoff_s * 2**attempt, cfg.connect_backoff_max_s)
                if self._stop.wait(delay):
                    break
        raise ConnectionError(
            f"cannot reach {host}:{port} after {cfg.connect_retries + 1} tries: {last}"
        )

    def _dial_once(self, host: str, port: int) -> socket.socket:
        """One TCP connect, with buffers sized before the SYN so the window can scale."""
        last: OSError = OSError(f"no address for {host}")
        for family, kind, proto, _, addr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            try:
                tune(sock, self.config.socket_buffer_bytes)
                sock.settimeout(self.config.connect_timeout_s)
                sock.connect(addr)
                sock.settimeout(None)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        raise last

    def _drop(self, peer_id: int, reason: str) -> None:
        """Unregister a peer now and close its link gracefully; PeerLeft follows from its reader."""
        with self._lock:
            link = self._links.pop(peer_id, None)
            self._changed.notify_all()
        if link is not None:
            link.left_reason = reason
            link.finish(reason)

    def _on_bye(self, link: Link, peer_id: int, reason: str) -> None:
        """The peer is leaving this link; a "duplicate" Bye means another link replaces it."""
        with self._lock:
            registered = self._links.get(peer_id) is link
            if registered:
                del self._links[peer_id]
                if reason == "duplicate":
                    self._moving[peer_id] = time.monotonic() + self.config.handshake_timeout_s
                self._changed.notify_all()
        if registered and reason != "duplicate":
            link.left_reason = f"bye: {reason}" if reason else "bye"
        link.finish(reason, say_bye=False)

    def _gossip(self, exclude: Link | None = None) -> None:
        """Tell every connected peer everything we know (skipped where a queue is full)."""
        message = self._members.peers_message()
        with self._lock:
            links = [link for link in self._links.values() if link is not exclude]
        for link in links:
            link.try_send(message)

    def _emit(self, event: NodeEvent) -> None:
        """Put an event for the peer layer, waiting while its queue is full (until stop)."""
        while True:
            try:
                self.events.put(event, timeout=_EMIT_TICK_S)
                return
            except queue.Full:
                if self._stop.is_set():
                    log.debug("node %d: dropping %s at stop", self.peer_id, type(event).__name__)
                    return

    def _bootstrap(self) -> None:
        """Dial the bootstrap addresses (again, while we know nobody)."""
        for host, port in self.config.bootstrap:
            if self._stop.is_set():
                return
            try:
                self.connect(host, port)
            except ConnectionError as exc:
                log.warning("node %d: bootstrap %s:%d failed: %s", self.peer_id, host, port, exc)

    def _maintain(self) -> None:
        """Dial the bootstrap peers, then send heartbeats and gossip until stop."""
        cfg = self.config
        try:
            self._bootstrap()
            next_gossip = time.monotonic() + cfg.gossip_interval_s
            while not self._stop.wait(cfg.heartbeat_interval_s):
                now = time.monotonic()
                with self._lock:
                    links = list(self._links.values())
                    expired = [p for p, t in self._moving.items() if t <= now]
                    for peer_id in expired:
                        del self._moving[peer_id]
                # A link that carried anything lately needs no heartbeat to look alive.
                heartbeat = Heartbeat(sent_at=time.time())
                for link in links:
                    if now - link.last_write >= cfg.heartbeat_interval_s / 2:
                        link.try_send(heartbeat)
                for peer_id in expired:
                    if peer_id not in self.connected():
                        self._emit(
                            PeerLeft(peer_id, "duplicate connection closed, none replaced it")
                        )
                if now >= next_gossip:
                    next_gossip = now + cfg.gossip_interval_s
                    if links:
                        # Push gossip to one random peer per interval: O(n) messages overall.
                        self._rng.choice(links).try_send(self._members.peers_message())
                    elif not self.known():
                        self._bootstrap()
        except Exception:
            log.exception("node %d: maintenance thread failed", self.peer_id)


def _keep_new(new: Link, old: Link, own_id: int, peer_id: int) -> bool:
    """Dedupe rule: keep the link the lower id dialed; if both (or neither) were, the newer."""
    lower = min(own_id, peer_id)

    def by_lower(link: Link) -> bool:
        return (own_id if link.initiated_by_us else peer_id) == lower

    if by_lower(new) != by_lower(old):
        return by_lower(new)
    return True
