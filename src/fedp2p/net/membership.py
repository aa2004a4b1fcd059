"""Membership: the addresses a node knows, merged from Hellos and gossiped Peers lists."""

from __future__ import annotations

import logging
import threading
import time

from fedp2p.wire import PeerAddress, Peers

log = logging.getLogger(__name__)

_WILDCARD_HOSTS = {"", "0.0.0.0", "::"}


def reachable_address(advertised: PeerAddress, observed_host: str) -> PeerAddress:
    """The advertised address, with a wildcard listen host replaced by the host we saw it from."""
    if advertised.host in _WILDCARD_HOSTS:
        return PeerAddress(advertised.peer_id, observed_host, advertised.port, advertised.arch)
    return advertised


class Membership:
    """The table of known peers (never including ourselves), and a way to wait for it to grow."""

    def __init__(self, own: PeerAddress) -> None:
        self.own = own
        self._known: dict[int, PeerAddress] = {}
        self._changed = threading.Condition()

    def learn(self, addresses: tuple[PeerAddress, ...] | list[PeerAddress]) -> bool:
        """Add or refresh addresses; True when the table changed (so it is worth gossiping)."""
        changed = False
        with self._changed:
            for address in addresses:
                if address.peer_id == self.own.peer_id:
                    continue
                if self._known.get(address.peer_id) != address:
                    if address.peer_id in self._known:
                        log.info(
                            "peer %d moved to %s:%d", address.peer_id, address.host, address.port
                        )
                    self._known[address.peer_id] = address
                    changed = True
            if changed:
                self._changed.notify_all()
        return changed

    def known(self) -> dict[int, PeerAddress]:
        """A copy of the table: peer id -> address."""
        with self._changed:
            return dict(self._known)

    def peers_message(self) -> Peers:
        """Everything we know, ourselves included, as one gossip message."""
        with self._changed:
            addresses = (self.own, *sorted(self._known.values(), key=lambda a: a.peer_id))
        return Peers(addresses=addresses)

    def wait_for(self, n: int, timeout: float | None) -> bool:
        """Block until at least n other peers are known, or the timeout passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while len(self._known) < n:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True
