"""Wire and transport throughput: encode/decode rates of a CNN7-sized weights Payload, and the
loopback rate of such messages Node -> Node against raw socket sendall/recv_into of the same
bytes in the same run.

Usage: python benchmarks/wire_throughput.py [--repeats 5] [--messages 20] [--params 1200000]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import socket
import statistics
import threading
import time

import numpy as np

from fedp2p.net import Node, NodeConfig, Received
from fedp2p.wire.connection import NEED_DATA, Connection, HandshakeComplete, Role
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


def bench_codec(payload: Payload, repeats: int) -> tuple[float, float]:
    """Median encode (send incl. MAC) and decode (receive incl. MAC check) rates, MB/s."""
    sender, receiver = connection_pair()
    size = nbytes(payload)
    enc, dec = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        buffers = sender.send(payload)
        enc.append(size / (time.perf_counter() - started) / MB)
        wire = b"".join(bytes(b) for b in buffers)
        started = time.perf_counter()
        receiver.receive_data(wire)
        event = receiver.next_event()
        dec.append(size / (time.perf_counter() - started) / MB)
        assert isinstance(event, Payload) and event.tensors[0].data == payload.tensors[0].data
        assert receiver.next_event() is NEED_DATA
    return statistics.median(enc), statistics.median(dec)


def bench_nodes(payload: Payload, messages: int) -> float:
    """Node -> Node over loopback: MB/s of tensor bytes, sender's first send to last Received."""
    a = Node(NodeConfig(peer_id=1, secret=SECRET, send_queue_size=8))
    b = Node(NodeConfig(peer_id=2, secret=SECRET))
    a.start()
    b.start()
    try:
        a.connect(b.address.host, b.address.port)
        assert b.wait_connected(frozenset({1}), timeout=10)
        started = time.perf_counter()
        for _ in range(messages):
            assert a.send(2, payload, timeout=30)
        got = 0
        while got < messages:
            event = b.events.get(timeout=30)
            if isinstance(event, Received):
                got += 1
        elapsed = time.perf_counter() - started
        assert event.message.tensors[-1].data == payload.tensors[-1].data
        return messages * nbytes(payload) / elapsed / MB
    finally:
        a.stop()
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
    got: list[Payload] = []

    def receive() -> None:
        while len(got) < messages:
            event = receiver.next_event()
            if event is NEED_DATA:
                view = receiver.read_buffer()
                if view is not None:
                    receiver.commit(into.recv_into(view))
                else:
                    receiver.receive_data(into.recv(256 * 1024))
            elif isinstance(event, Payload):
                got.append(event)

    reader = threading.Thread(target=receive)
    started = time.perf_counter()
    reader.start()
    for _ in range(messages):
        out.sendmsg(sender.send(payload))  # loopback with 4 MB buffers: one call suffices
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
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--params", type=int, default=1_200_000)
    args = parser.parse_args()

    for label, shapes in (
        ("CNN7 (real, 32x32x3)", cnn7_shapes()),
        (f"CNN7-shaped, {args.params / 1e6:.1f}M params", scaled_shapes(args.params)),
    ):
        payload = make_payload(shapes)
        size = nbytes(payload)
        enc, dec = bench_codec(payload, args.repeats * 2)
        print(f"{label}: {len(shapes)} tensors, {size / MB:.2f} MB of float32")
        print(f"  encode (send + HMAC)       {enc:9.0f} MB/s")
        print(f"  decode (receive + verify)  {dec:9.0f} MB/s")
        ours, bare, raw = [], [], []
        for _ in range(args.repeats):
            ours.append(bench_nodes(payload, args.messages))
            bare.append(bench_bare_connection(payload, args.messages))
            raw.append(bench_raw(size, args.messages))
        o, c, r = (statistics.median(x) for x in (ours, bare, raw))
        print(f"  loopback, {args.messages} messages, median of {args.repeats}:")
        print(f"    Node -> Node (threads, queues, events)   {o:7.0f} MB/s")
        print(f"    bare wire Connection over TCP            {c:7.0f} MB/s")
        print(f"    raw sendall / recv_into, same bytes      {r:7.0f} MB/s")
        print(f"    ratio Node/raw {o / r:.2f}, Node/bare wire {o / c:.2f}")


if __name__ == "__main__":
    main()
