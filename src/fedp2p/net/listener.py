"""Listener: a listening socket and the thread that accepts on it, woken promptly on close."""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def tune(sock: socket.socket, buffer_bytes: int) -> None:
    """Large kernel buffers (set before connect/listen so TCP can scale its window) and no Nagle."""
    if buffer_bytes > 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_bytes)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Listener:
    """Accepts connections and hands each new socket to `on_accept`, until `close()`."""

    def __init__(
        self,
        host: str,
        port: int,
        on_accept: Callable[[socket.socket], None],
        name: str,
        buffer_bytes: int = 0,
        backlog: int = 128,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tune(self._sock, buffer_bytes)
            self._sock.bind((host, port))
            self._sock.listen(backlog)
        except OSError:
            self._sock.close()
            raise
        self._on_accept = on_accept
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name=f"fedp2p-listen-{name}")

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is the real one even when 0 was asked for."""
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Start accepting in the background."""
        self._thread.start()

    def close(self) -> None:
        """Stop accepting, join the thread and close the sockets."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread.ident is not None:
            self._thread.join()
        for sock in (self._sock, self._wake_r, self._wake_w):
            sock.close()

    def _run(self) -> None:
        """Accept until woken by close()."""
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self._sock, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while True:
                    for key, _ in selector.select():
                        if key.fileobj is self._wake_r:
                            return
                        try:
                            conn, _addr = self._sock.accept()
                        except OSError as exc:  # e.g. the client reset before we accepted
                            log.debug("accept failed: %s", exc)
                            continue
                        self._on_accept(conn)
        except Exception:
            log.exception("listener failed; no new connections will be accepted")
