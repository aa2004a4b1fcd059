"""One peer's life: join the network, then rounds of train, share, collect, learn, evaluate.

No coordinator: every peer runs this loop on its own, tags what it sends with the round,
and waits for its neighbours' payloads of that round at most `round_timeout` seconds.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from fedp2p.config import RunConfig
from fedp2p.errors import UserError
from fedp2p.learn.learner import Learner
from fedp2p.net import Node, NodeConfig, neighbours
from fedp2p.peer.algorithms import (
    PLANS,
    audience,
    build_payloads,
    expected,
    learn_from,
    round_reference,
)
from fedp2p.peer.mailbox import Mailbox
from fedp2p.results import ClientRound
from fedp2p.workload import Workload

log = logging.getLogger(__name__)

Status = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class PeerSetup:
    """Where one peer listens, whom it asks first, and where it writes its metrics."""

    client: int
    listen: tuple[str, int]
    bootstrap: tuple[tuple[str, int], ...]
    secret: bytes
    metrics_path: Path


def json_status(stream: TextIO) -> Status:
    """Status lines on a stream, one JSON object each: how a launcher follows its peers."""

    def emit(event: dict[str, Any]) -> None:
        stream.write(json.dumps(event) + "\n")
        stream.flush()

    return emit


class Peer:
    """A client's learner joined to the network through its node."""

    def __init__(
        self, workload: Workload, setup: PeerSetup, device: torch.device, status: Status
    ) -> None:
        self.workload = workload
        self.config: RunConfig = workload.config
        self.setup = setup
        self.me = setup.client
        self.status = status
        self.plan = PLANS[self.config.algorithm]
        self.learner: Learner = workload.learner(self.me, device)
        self.node = Node(
            NodeConfig(
                peer_id=self.me,
                secret=setup.secret,
                arch=self.config.arch_of(self.me),
                listen_host=setup.listen[0],
                listen_port=setup.listen[1],
                bootstrap=setup.bootstrap,
                capabilities=("weights", "logits", "features"),
            )
        )
        self.mailbox = Mailbox(self.node.events, name=f"mailbox-{self.me}")
        self.generator = torch.Generator().manual_seed(self.config.seed * 7919 + self.me)

    def run(self) -> None:
        """Join, run every round, and leave cleanly whatever happens."""
        try:
            host, port = self.node.start()
        except OSError as exc:
            raise UserError(
                f"peer {self.me} cannot listen on {self.setup.listen[0]}:{self.setup.listen[1]} "
                f"({exc.strerror or exc}); pick another --listen port."
            ) from None
        self.status({"event": "listening", "client": self.me, "host": host, "port": port})
        self.mailbox.start()
        try:
            neigh = self._join()
            with self.setup.metrics_path.open("a", encoding="utf-8") as metrics:
                for rnd in range(1, self.config.rounds + 1):
                    record = self._round(rnd, neigh)
                    metrics.write(record.to_json() + "\n")
                    metrics.flush()
            self.status({"event": "done", "client": self.me})
        finally:
            self.node.stop()
            self.mailbox.stop()

    def _join(self) -> frozenset[int]:
        """Learn the other peers by gossip, then connect to this peer's neighbours in the topology."""
        c = self.config
        if not self.plan.weights and not self.plan.distills:
            return frozenset()  # local-only: nothing to share, nobody to wait for
        if not self.node.wait_for_peers(c.clients - 1, timeout=c.join_timeout):
            log.warning(
                "peer %d: only %d of %d peers known after %.0fs; going on with them",
                self.me,
                len(self.node.known()),
                c.clients - 1,
                c.join_timeout,
            )
        ids = sorted({self.me, *self.node.known()})
        neigh = neighbours(c.topology, ids, seed=c.seed, degree=min(c.degree, len(ids) - 1))[
            self.me
        ]
        if not self.node.connect_neighbours(neigh, prune=False, timeout=c.join_timeout):
            log.warning(
                "peer %d: connected to %d of %d neighbours",
                self.me,
                len(self.node.connected() & neigh),
                len(neigh),
            )
        self.status({"event": "joined", "client": self.me, "neighbours": sorted(neigh)})
        return neigh

    def _round(self, rnd: int, neigh: frozenset[int]) -> ClientRound:
        """One round; returns the metrics line it measured."""
        c, learner = self.config, self.learner
        seconds: dict[str, float] = {}
        t = time.perf_counter()
        loss = learner.train(c.local_epochs)
        seconds["train"] = time.perf_counter() - t

        ref = torch.empty(0)
        sent = received_bytes = 0
        heard = 0
        if self.plan.weights or self.plan.distills:
            ref_idx = round_reference(c, rnd, len(self.workload.partition.reference_idx))
            ref = learner.images(self.workload.reference_images()[ref_idx])
            t = time.perf_counter()
            payloads = build_payloads(self.plan, learner, self.me, rnd, ref)
            for kind, payload in payloads.items():
                size = sum(w.nbytes for w in payload.tensors)
                for peer in audience(kind, c, self.me, neigh):
                    if self.node.send(peer, payload, timeout=c.round_timeout):
                        sent += size
                    else:
                        log.warning("peer %d: could not send %s to %d", self.me, kind, peer)
            seconds["send"] = time.perf_counter() - t
            t = time.perf_counter()
            got = self.mailbox.collect(rnd, expected(self.plan, c, self.me, neigh), c.round_timeout)
            seconds["wait"] = time.perf_counter() - t
            heard = len({peer for peer, _ in got})
            received_bytes = sum(w.nbytes for p in got.values() for w in p.tensors)
            t = time.perf_counter()
            learn_from(self.plan, c, learner, got, ref, self.generator)
            seconds["distill"] = time.perf_counter() - t

        final = rnd == c.rounds
        t = time.perf_counter()
        if final or rnd % c.eval_every == 0:
            gx, gy = self.workload.global_test(final=final)
            ev = learner.evaluate(gx, gy)
            g, loc, size = ev.global_acc, ev.local_acc, ev.global_size
        else:
            g, loc, size = float("nan"), float("nan"), 0
        seconds["eval"] = time.perf_counter() - t
        record = ClientRound(
            c.algorithm,
            rnd,
            self.me,
            c.arch_of(self.me),
            g,
            loc,
            size,
            loss,
            seconds,
            sent,
            received_bytes,
            heard,
        )
        self.status(
            {
                "event": "round",
                "client": self.me,
                "round": rnd,
                "arch": record.arch,
                "global_acc": g if g == g else None,
                "heard": heard,
            }
        )
        return record
