"""Two real OS processes over loopback: a 10 MB float32 tensor each way, bit for bit; then a kill."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from fedp2p.net import PeerJoined, PeerLeft, Received
from fedp2p.wire.messages import Payload, WireTensor

from .conftest import SECRET, wait_event
from .peer_process import tensor_bytes

NBYTES = 10 * 2**20


def test_ten_megabytes_between_processes_then_kill(make_node) -> None:
    a = make_node(1, dead_peer_timeout_s=10.0)
    child = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("peer_process.py")),
            "127.0.0.1",
            str(a.address.port),
            "2",
            "123",
            str(NBYTES),
        ],
        stdin=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdin is not None
        child.stdin.write(SECRET.hex() + "\n")
        child.stdin.flush()
        assert wait_event(a, PeerJoined, timeout=20).peer_id == 2
        data = tensor_bytes(7, NBYTES)
        sent = Payload(1, 3, "weights", (WireTensor("big", "float32", (NBYTES // 4,), data),))

        assert a.send(2, sent, timeout=10)

        reply = wait_event(a, Received, timeout=20).message
        assert isinstance(reply, Payload) and reply.sender == 2 and reply.round == 3
        assert reply.meta["sha256"] == hashlib.sha256(data).hexdigest()
        got = reply.tensors[0]
        assert got.shape == (NBYTES // 4,)
        assert (
            hashlib.sha256(got.data).digest() == hashlib.sha256(tensor_bytes(123, NBYTES)).digest()
        )

        child.kill()  # no Bye: the kernel closes the socket under it

        left = wait_event(a, PeerLeft, timeout=5)
        assert left.peer_id == 2 and "bye" not in left.reason
    finally:
        child.kill()
        child.wait(timeout=10)
