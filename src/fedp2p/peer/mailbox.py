"""Neighbours' payloads sorted by round, drained from the node on its own thread.

The round loop trains for many seconds at a time; a mailbox thread keeps the node's
event queue empty meanwhile, so no reader thread ever blocks on a busy peer layer.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Iterable

from fedp2p.net.events import NodeEvent, PeerJoined, PeerLeft, Received
from fedp2p.wire.messages import Payload

log = logging.getLogger(__name__)

Key = tuple[int, str]  # (peer id, payload kind)


class Mailbox:
    """Holds payloads by round until the round loop takes them; knows which peers have left."""

    def __init__(self, events: queue.Queue[NodeEvent], name: str = "mailbox") -> None:
        self._events = events
        self._cond = threading.Condition()
        self._by_round: dict[int, dict[Key, Payload]] = defaultdict(dict)
        self._left: dict[int, str] = {}
        self._floor = 0  # payloads for rounds below this are late and dropped
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name=f"fedp2p-{name}", daemon=True)

    def start(self) -> None:
        """Start draining the node's events."""
        self._thread.start()

    def stop(self) -> None:
        """Stop draining and join the thread."""
        self._stop.set()
        self._thread.join()

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._events.get(timeout=0.2)
            except queue.Empty:
                continue
            self.deliver(event)

    def deliver(self, event: NodeEvent) -> None:
        """File one node event (public so tests can feed events without a network)."""
        with self._cond:
            if isinstance(event, Received) and isinstance(event.message, Payload):
                msg = event.message
                if msg.sender != event.peer_id:
                    log.warning(
                        "peer %d sent a payload claiming sender %d; dropped",
                        event.peer_id,
                        msg.sender,
                    )
                elif msg.round >= self._floor:
                    self._by_round[msg.round][(event.peer_id, msg.kind)] = msg
            elif isinstance(event, PeerLeft):
                self._left[event.peer_id] = event.reason
            elif isinstance(event, PeerJoined):
                self._left.pop(event.peer_id, None)
            self._cond.notify_all()

    def left(self) -> dict[int, str]:
        """Peers whose connection is gone, with the reason."""
        with self._cond:
            return dict(self._left)

    def collect(self, rnd: int, expected: Iterable[Key], timeout: float) -> dict[Key, Payload]:
        """Wait until every expected payload of round `rnd` is here, its sender has left, or timeout.

        Returns what arrived and forgets everything of this round and earlier.
        """
        wanted = set(expected)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                have = self._by_round.get(rnd, {})
                missing = {k for k in wanted if k not in have and k[0] not in self._left}
                remaining = deadline - time.monotonic()
                if not missing or remaining <= 0:
                    break
                self._cond.wait(remaining)
            got = {k: v for k, v in self._by_round.get(rnd, {}).items() if k in wanted}
            for r in [r for r in self._by_round if r <= rnd]:
                del self._by_round[r]
            self._floor = rnd + 1
        if missing:
            log.warning("round %d: no payload from %s within %.0fs", rnd, sorted(missing), timeout)
        return got
