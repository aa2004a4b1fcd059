"""Wire and transport throughput: encode/decode rates of a CNN7-sized weights Payload, and the
loopback rate of such messages Node -> Node against raw socket sendall/recv_into of the same
bytes in the same run.

Node -> Node is measured two ways: both nodes in this process (they share one GIL, so the
sender's and the receiver's MAC and Python work cannot overlap), and the sender node in a child
process, as peers run in deployment. In both, a consumer thread takes Received events as they
come and drops them, as the peer layer does. Ratios are medians of per-repeat ratios, each
repeat measuring our transport and raw TCP back to back, so a busy machine shifts both.

Usage: python benchmarks/wire_throughput.py [--repeats 5] [--messages 40] [--params 1200000]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import multiprocessing
import socket
import statistics
import threading
import time
from multiprocessing.connection import Connection as Pipe

import numpy as np

from fedp2p.net import Node, NodeConfig, Received
from fedp2p.wire.connection import NEED_DATA, RECV_INTO_MIN, Connection, HandshakeComplete, Role
from fedp2p.wire.messages import Payload, WireTensor

SECRET = bytes(range(32))
MB = 1e6


def cnn7_shapes() -> list[tuple[int, ...]]:
    """The real CNN7 parameter shapes (CIFAR-sized input), or a stand-in without torch."""
    try:
        from fedp2p.learn.models import ModelConfig, build_model

        model = build_model(ModelConfig("cnn7", in_channels=3, image_size=32), seed=0)
        return [tuple(p.shape) for p in model.parameters()]
    except Exception:  # torch missing: same layer pattern, by hand
        chans = [3, 16, 32, 32, 64, 64, 64, 64]
        shapes: list[tuple[int, ...]] = []
        for cin, cout in itertools.pairwise(chans):
            shapes += [(cout, cin, 3, 3), (cout,)]
        return [*shapes, (128, 64 * 4 * 4), (128,), (10, 128), (10,)]


def scaled_shapes(params: int) -> list[tuple[int, ...]]:
    """CNN7's 18 tensors plus two, with the big ones widened until the total is ~`params`."""
    shapes = cnn7_shapes()
    base = sum(int(np.prod(s)) for s in shapes)
    factor = max(1.0, params / base)
    out = [(int(s[0] * factor), *s[1:]) if len(s) > 1 else s for s in shapes]
    rest = params - sum(int(np.prod(s)) for s in out)
    return [*out, (max(rest, 1),), (16,)]


def make_payload(shapes: list[tuple[int, ...]], seed: int = 0) -> Payload:
    """A weights Payload of float32 tensors with these shapes."""
    rng = np.random.default_rng(seed)
    tensors = []
    for i, shape in enumerate(shapes):
        array = rng.standard_normal(int(np.prod(shape)), dtype=np.float32)
        tensors.append(WireTensor(f"t{i}", "float32", shape, memoryview(array).cast("B")))
    return Payload(0, 1, "weights", tuple(tensors), {"arch": "cnn7"})


def nbytes(payload: Payload) -> int:
    """Tensor bytes only (the figure people care about)."""
    return sum(t.nbytes for t in payload.tensors)


def connection_pair() -> tuple[Connection, Connection]:
    """Two Connections that have completed the handshake through memory."""
    a, b = Connection(Role.INITIATOR, SECRET), Connection(Role.RESPONDER, SECRET)
    a_out, b_out = a.initiate(), b.initiate()
    done = {id(a): False, id(b): False}
    while not all(done.values()):
        b.receive_data(a_out) if a_out else None
        a.receive_data(b_out) if b_out else None
        a_out, b_out = b"", b""
        for conn in (a, b):
            event = conn.next_event()
            if isinstance(event, HandshakeComplete):
                done[id(conn)] = True
        a_out, b_out = a.data_to_send(), b.data_to_send()
    return a, b


def feed(conn: Connection, wire: memoryview, chunk: int = 256 * 1024) -> Payload:
    """Deliver one frame as the transport does: recv_into the frame buffer in pieces."""
    pos = 0
    while (event := conn.next_event()) is NEED_DATA:
        target = conn.read_buffer()
        if target is None:
            conn.receive_data(wire[pos : pos + RECV_INTO_MIN])
            pos += RECV_INTO_MIN
        else:
            n = min(len(target), chunk, len(wire) - pos)
            target[:n] = wire[pos : pos + n]  # stands in for the kernel's copy
            conn.commit(n)
            pos += n
    assert isinstance(event, Payload)
    return event


def bench_codec(payload: Payload, repeats: int) -> tuple[float, float]:
    """Median encode (send incl. MAC) and decode (recv_into path incl. MAC check) rates, MB/s."""
    sender, receiver = connection_pair()
    size = nbytes(payload)
    enc, dec = [], []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        buffers = sender.send(payload)
        enc.append(size / (time.perf_counter() - started) / MB)
        wire = memoryview(b"".join(bytes(b) for b in buffers))
        started = time.perf_counter()
        event = feed(receiver, wire)
        dec.append(size / (time.perf_counter() - started) / MB)
        assert event.tensors[0].data == payload.tensors[0].data
        assert receiver.next_event() is NEED_DATA
        del event  # the application is done with it: its frame buffer can be reused
    return statistics.median(enc[1:]), statistics.median(dec[1:])


def _consume(node: Node, messages: int, out: list[object]) -> None:
    """Take Received events as they come and drop them; keep the last message and the time."""
    got = 0
    while got < messages:
        event = node.events.get(timeout=60)
        if isinstance(event, Received):
            got += 1
            if got == messages:
                out.append(event.message)
    out.append(time.perf_counter())


def bench_nodes(payload: Payload, messages: int) -> float:
    """Node -> Node in this process: MB/s of tensor bytes, first send to last Received."""
    a = Node(NodeConfig(peer_id=1, secret=SECRET, send_queue_size=8))
    b = Node(NodeConfig(peer_id=2, secret=SECRET))
    a.start()
    b.start()
    try:
        a.connect(b.address.host, b.address.port)
        assert b.wait_connected(frozenset({1}), timeout=10)
        out: list[object] = []
        consumer = threading.Thread(target=_consume, args=(b, messages, out))
        consumer.start()
        started = time.perf_counter()
        for _ in range(messages):
            assert a.send(2, payload, timeout=30)
        consumer.join()
        last, finished = out
        assert isinstance(last, Payload) and last.tensors[-1].data == payload.tensors[-1].data
        assert isinstance(finished, float)
        return messages * nbytes(payload) / (finished - started) / MB
    finally:
        a.stop()
        b.stop()


def _sender_process(port: int, shapes: list[tuple[int, ...]], messages: int, pipe: Pipe) -> None:
    """Child process: a Node that connects to the parent's node and sends when told to."""
    payload = make_payload(shapes)
    a = Node(NodeConfig(peer_id=1, secret=SECRET, send_queue_size=8))
    a.start()
    try:
        a.connect("127.0.0.1", port)
        assert a.wait_connected(frozenset({2}), timeout=10)
        pipe.send("ready")
        assert pipe.recv() == "go"
        for _ in range(messages):
            assert a.send(2, payload, timeout=30)
        assert pipe.recv() == "done"  # every message has arrived: safe to stop
    finally:
        a.stop()


def bench_node_processes(shapes: list[tuple[int, ...]], messages: int) -> float:
    """Node (child process) -> Node (here), as deployed peers: MB/s, "go" to last Received."""
    payload = make_payload(shapes)
    b = Node(NodeConfig(peer_id=2, secret=SECRET))
    b.start()
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    child = multiprocessing.get_context("spawn").Process(
        target=_sender_process, args=(b.address.port, shapes, messages, theirs)
    )
    try:
        child.start()
        assert ours.poll(60) and ours.recv() == "ready"
        assert b.wait_connected(frozenset({1}), timeout=10)
        out: list[object] = []
        consumer = threading.Thread(target=_consume, args=(b, messages, out))
        consumer.start()
        started = time.perf_counter()
        ours.send("go")
        consumer.join()
        ours.send("done")
        last, finished = out
        assert isinstance(last, Payload) and last.tensors[-1].data == payload.tensors[-1].data
        assert isinstance(finished, float)
        return messages * nbytes(payload) / (finished - started) / MB
    finally:
        child.join(30)
        b.stop()


def tcp_pair(buffer_bytes: int = 4 * 2**20) -> tuple[socket.socket, socket.socket]:
    """A connected TCP loopback pair with large buffers, as Node sets them."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_bytes)
    client.connect(server.getsockname())
    conn, _ = server.accept()
    server.close()
    return client, conn


def bench_bare_connection(payload: Payload, messages: int) -> float:
    """The wire alone over TCP: one thread encodes + sendmsg, one recv_into + decodes. MB/s."""
    sender, receiver = connection_pair()
    out, into = tcp_pair()
    got: list[Payload] = []  # only the last one is kept, as a consumer that is done with them

    def receive() -> None:
        count = 0
        while count < messages:
            event = receiver.next_event()
            if event is NEED_DATA:
                if (view := receiver.read_buffer()) is not None:
                    receiver.commit(into.recv_into(view))
                else:
                    receiver.receive_data(into.recv(256 * 1024))
                view = None
            elif isinstance(event, Payload):
                count += 1
                got[:] = [event]

    reader = threading.Thread(target=receive)
    started = time.perf_counter()
    reader.start()
    for _ in range(messages):
        for buf in sender.send(payload):
            out.sendall(buf)
    reader.join()
    elapsed = time.perf_counter() - started
    assert got[-1].tensors[-1].data == payload.tensors[-1].data
    out.close()
    into.close()
    return messages * nbytes(payload) / elapsed / MB


def bench_raw(frame_bytes: int, messages: int, buffer_bytes: int = 4 * 2**20) -> float:
    """Raw TCP loopback: sendall of frame-sized buffers, recv_into a preallocated one, MB/s."""
    client, conn = tcp_pair(buffer_bytes)
    data = np.random.default_rng(1).integers(0, 255, frame_bytes, dtype=np.uint8).tobytes()
    sink = bytearray(frame_bytes)
    elapsed = [0.0]

    def receive() -> None:
        view = memoryview(sink)
        for _ in range(messages):
            filled = 0
            while filled < frame_bytes:
                n = conn.recv_into(view[filled:])
                if not n:
                    raise ConnectionError("short read")
                filled += n
        elapsed[0] = time.perf_counter() - started

    started = time.perf_counter()
    reader = threading.Thread(target=receive)
    reader.start()
    for _ in range(messages):
        client.sendall(data)
    reader.join()
    assert hashlib.sha256(sink).digest() == hashlib.sha256(data).digest()
    for sock in (client, conn):
        sock.close()
    return messages * frame_bytes / elapsed[0] / MB


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--params", type=int, default=1_200_000)
    parser.add_argument("--no-processes", action="store_true", help="skip the two-process run")
    args = parser.parse_args()

    for label, shapes in (
        ("CNN7 (real, 32x32x3)", cnn7_shapes()),
        (f"CNN7-shaped, {args.params / 1e6:.1f}M params", scaled_shapes(args.params)),
    ):
        payload = make_payload(shapes)
        size = nbytes(payload)
        enc, dec = bench_codec(payload, args.repeats * 4)
        print(f"{label}: {len(shapes)} tensors, {size / MB:.2f} MB of float32")
        print(f"  encode (send + MAC)                    {enc:7.0f} MB/s")
        print(f"  decode (recv_into path + verify)       {dec:7.0f} MB/s")
        runs: dict[str, list[float]] = {"node": [], "proc": [], "bare": [], "raw": []}
        ratios: dict[str, list[float]] = {"node": [], "proc": [], "bare": []}
        for _ in range(args.repeats):
            measured = {
                "node": bench_nodes(payload, args.messages),
                "raw": bench_raw(size, args.messages),
                "bare": bench_bare_connection(payload, args.messages),
            }
            if not args.no_processes:
                measured["proc"] = bench_node_processes(shapes, args.messages)
                measured["raw"] = statistics.mean([measured["raw"], bench_raw(size, args.messages)])
            for key, rate in measured.items():
                runs[key].append(rate)
                if key != "raw":
                    ratios[key].append(rate / measured["raw"])
        med = {k: statistics.median(v) for k, v in runs.items() if v}
        rat = {k: statistics.median(v) for k, v in ratios.items() if v}
        print(f"  loopback, {args.messages} messages, median of {args.repeats}:")
        print(
            f"    Node -> Node, one process             {med['node']:7.0f} MB/s  ratio {rat['node']:.2f}"
        )
        if "proc" in med:
            print(
                f"    Node -> Node, two processes           {med['proc']:7.0f} MB/s  ratio {rat['proc']:.2f}"
            )
        print(
            f"    bare wire Connection over TCP          {med['bare']:7.0f} MB/s  ratio {rat['bare']:.2f}"
        )
        print(f"    raw sendall / recv_into, same bytes    {med['raw']:7.0f} MB/s")


if __name__ == "__main__":
    main()
