"""Start N peer OS processes on this machine, follow their progress, and gather their metrics.

The launcher is a convenience, not a coordinator: it starts processes and reads what they
print, but the peers find each other and run their rounds on their own, exactly as the
same `fedp2p peer` command would on separate hosts.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

from fedp2p.errors import UserError
from fedp2p.results import ClientRound, RunWriter, read_metrics
from fedp2p.wire.secret import ENV_VAR, generate_secret
from fedp2p.workload import Workload

log = logging.getLogger(__name__)

STOP_GRACE_S = 15.0


@dataclass
class PeerProcess:
    """One child process and what we know of it."""

    client: int
    proc: subprocess.Popen[str]
    log_path: Path
    metrics_path: Path
    address: tuple[str, int] | None = None
    reported_exit: bool = False
    last_round: int = 0
    rounds: dict[int, float | None] = field(default_factory=dict)

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the peer's log, to explain why it died."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])


def _read_status(
    peer: PeerProcess, stream: IO[str], out: queue.Queue[tuple[int, dict[str, Any]]]
) -> None:
    """Forward a child's JSON status lines to the launcher's queue."""
    for line in stream:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            out.put((peer.client, event))


class Launcher:
    """Runs one collaborative algorithm as N processes and writes its metrics."""

    def __init__(
        self, workload: Workload, writer: RunWriter, progress: Any, device: torch.device
    ) -> None:
        self.workload = workload
        self.config = workload.config
        self.writer = writer
        self.progress = progress
        self.device = device
        self.folder = writer.folder
        self.events: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.peers: list[PeerProcess] = []
        self.readers: list[threading.Thread] = []
        self.shown = 0  # the last round whose progress line was printed
        self.env = dict(os.environ, **{ENV_VAR: generate_secret().hex()})
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.config_path = self.folder / "run.toml"
        self.config_path.write_text(self.config.to_toml(), encoding="utf-8")
        (self.folder / "peers").mkdir(exist_ok=True)
        (self.folder / "logs").mkdir(exist_ok=True)

    def _spawn(self, client: int, listen: tuple[str, int], bootstrap: str) -> PeerProcess:
        log_path = self.folder / "logs" / f"peer-{client:03d}.log"
        metrics_path = self.folder / "peers" / f"peer-{client:03d}.jsonl"
        cmd = [
            sys.executable,
            "-m",
            "fedp2p",
            "peer",
            "--config",
            str(self.config_path),
            "--id",
            str(client),
            "--listen",
            f"{listen[0]}:{listen[1]}",
            "--metrics",
            str(metrics_path),
            "--device",
            str(self.device),
        ]
        if bootstrap:
            cmd += ["--bootstrap", bootstrap]
        with log_path.open("w", encoding="utf-8") as err:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=self.env,
                text=True,
                start_new_session=True,
            )
        peer = PeerProcess(client, proc, log_path, metrics_path)
        assert proc.stdout is not None
        reader = threading.Thread(
            target=_read_status,
            args=(peer, proc.stdout, self.events),
            name=f"fedp2p-status-{client}",
            daemon=True,
        )
        reader.start()
        self.readers.append(reader)
        self.peers.append(peer)
        return peer

    def _wait_listening(self, peer: PeerProcess, timeout: float) -> tuple[str, int]:
        """The first peer's real address, which every other peer bootstraps from."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                client, event = self.events.get(timeout=0.5)
            except queue.Empty:
                if peer.proc.poll() is not None:
                    raise UserError(
                        f"peer {peer.client} exited before listening ({peer.log_tail(2)}); "
                        f"see {peer.log_path}."
                    ) from None
                continue
            self._handle(client, event)
            if peer.address is not None:
                return peer.address
        raise UserError(
            f"peer {peer.client} did not start listening within {timeout:.0f}s; see {peer.log_path}."
        )

    def _handle(self, client: int, event: dict[str, Any]) -> None:
        peer = self.peers[client] if client < len(self.peers) else None
        if peer is None:
            return
        kind = event.get("event")
        if kind == "listening":
            peer.address = (str(event["host"]), int(event["port"]))
        elif kind == "round":
            rnd = int(event["round"])
            peer.last_round = rnd
            peer.rounds[rnd] = event.get("global_acc")
            self._maybe_show(rnd)

    def _alive(self) -> list[PeerProcess]:
        return [
            p for p in self.peers if p.proc.poll() is None or p.last_round >= self.config.rounds
        ]

    def _maybe_show(self, rnd: int) -> None:
        """Print a round's line once every peer still alive has reported it."""
        alive = self._alive()
        if not all(rnd in p.rounds for p in alive):
            return
        if self.shown >= rnd:
            return
        self.shown = rnd
        accs: dict[str, list[float]] = defaultdict(list)
        for p in alive:
            acc = p.rounds.get(rnd)
            if acc is not None:
                accs[self.config.arch_of(p.client)].append(acc)
        self.progress.show(rnd, dict(accs), f"peers alive {len(alive)}/{len(self.peers)}")

    def _report_deaths(self) -> None:
        for p in self.peers:
            code = p.proc.poll()
            if code is not None and not p.reported_exit:
                p.reported_exit = True
                if code != 0:
                    print(
                        f"[{self.config.algorithm}] peer {p.client} exited with code {code} after round "
                        f"{p.last_round}: {p.log_tail(2)}",
                        file=self.progress.stream,
                        flush=True,
                    )
                for rnd in range(p.last_round, self.config.rounds + 1):
                    self._maybe_show(rnd)

    def run(self) -> None:
        """Start every peer, follow them until all exit, then gather their metrics."""
        c = self.config
        first = self._spawn(0, (c.host, c.base_port), "")
        boot_host, boot_port = self._wait_listening(first, timeout=c.join_timeout)
        bootstrap = f"{boot_host}:{boot_port}"
        for client in range(1, c.clients):
            port = c.base_port + client if c.base_port else 0
            self._spawn(client, (c.host, port), bootstrap)
        try:
            while any(p.proc.poll() is None for p in self.peers):
                try:
                    client, event = self.events.get(timeout=0.5)
                    self._handle(client, event)
                except queue.Empty:
                    pass
                self._report_deaths()
            while not self.events.empty():
                self._handle(*self.events.get_nowait())
            self._report_deaths()
        finally:
            self._stop_all()
        self._gather()

    def _stop_all(self) -> None:
        """Ask every live peer to stop (SIGTERM: it says Bye and closes), then insist."""
        live = [p for p in self.peers if p.proc.poll() is None]
        for p in live:
            p.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in live:
            try:
                p.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait()
        for reader in self.readers:
            reader.join(timeout=5)

    def _gather(self) -> None:
        """Merge the peers' metrics files into the run's metrics.jsonl, by round then client."""
        records: list[ClientRound] = []
        for p in self.peers:
            if p.metrics_path.is_file():
                records.extend(read_metrics(p.metrics_path))
        for r in sorted(records, key=lambda r: (r.round, r.client)):
            self.writer.add(r)


def run_peers(workload: Workload, writer: RunWriter, progress: Any, device: torch.device) -> None:
    """Run a collaborative algorithm as one OS process per peer on this machine."""
    Launcher(workload, writer, progress, device).run()
