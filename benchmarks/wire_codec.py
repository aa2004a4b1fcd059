"""CPU cost of the sans-IO wire codec on one big weights Payload, next to the MAC candidates.

Measures CPU time (time.process_time), so numbers stay meaningful on a busy machine.
Usage: python benchmarks/wire_codec.py [--mb 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import time
from collections.abc import Callable

from fedp2p.wire import NEED_DATA, Connection, Payload, Role, WireTensor
from fedp2p.wire.auth import frame_mac

SECRET = bytes(range(32))


def best_rate(nbytes: int, repeats: int, fn: Callable[[], object]) -> float:
    """Best of `repeats` runs, in MB/s of CPU time."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return nbytes / max(min(times), 1e-9) / 1e6


def pair() -> tuple[Connection, Connection]:
    """Two connections that completed their handshake."""
    a, b = Connection(Role.INITIATOR, SECRET), Connection(Role.RESPONDER, SECRET)
    b.receive_data(a.initiate())
    a.receive_data(b.initiate())
    for conn in (a, b):
        assert conn.next_event() is NEED_DATA
    b.receive_data(a.data_to_send())
    a.receive_data(b.data_to_send())
    a.next_event(), b.next_event()
    return a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n = int(args.mb * 1e6) // 4 * 4
    data = os.urandom(n)
    key = os.urandom(32)

    print(f"MAC candidates on {n / 1e6:.0f} MB (CPU MB/s):")
    candidates: dict[str, Callable[[], object]] = {
        "poly1305 frame MAC": lambda: frame_mac(key, 7, [data]),  # the one in use: key + tag
        "hmac-sha256": lambda: hmac.new(key, data, "sha256").digest(),
        "hmac-sha512": lambda: hmac.new(key, data, "sha512").digest(),
        "hmac-sha1": lambda: hmac.new(key, data, "sha1").digest(),
        "blake2b keyed": lambda: hashlib.blake2b(data, key=key, digest_size=32).digest(),
        "blake2s keyed": lambda: hashlib.blake2s(data, key=key).digest(),
    }
    for name, fn in candidates.items():
        print(f"  {name:20s} {best_rate(n, args.repeats, fn):8.0f}")

    tensors = (
        WireTensor("big", "float32", (n // 4 - 1000,), memoryview(data)[: n - 4000]),
        WireTensor("small", "float32", (1000,), memoryview(data)[n - 4000 :]),
    )
    msg = Payload(1, 1, "weights", tensors, {"arch": "cnn7"})
    a, _ = pair()
    size = sum(len(buf) for buf in a.send(msg))
    print(f"Connection on a {size / 1e6:.0f} MB Payload (CPU MB/s):")
    print(f"  {'send':20s} {best_rate(size, args.repeats, lambda: a.send(msg)):8.0f}")
    for name, in_place in [("receive_data", False), ("recv_into path", True)]:
        times = []
        for _ in range(args.repeats):
            a, b = pair()
            frame = b"".join(bytes(buf) for buf in a.send(msg))
            start = time.process_time()
            receive(b, frame, in_place)
            times.append(time.process_time() - start)
        print(f"  {name:20s} {size / min(times) / 1e6:8.0f}")
    a, b = pair()  # one connection throughout: its pooled frame buffer is reused
    times = []
    for _ in range(args.repeats + 1):
        frame = b"".join(bytes(buf) for buf in a.send(msg))
        start = time.process_time()
        receive(b, frame, True)
        times.append(time.process_time() - start)
    print(f"  {'recv_into, reused':20s} {size / min(times[1:]) / 1e6:8.0f}")


def receive(conn: Connection, frame: bytes, in_place: bool) -> None:
    """Feed one frame in 256 KiB pieces, into read_buffer() views when in_place (as recv_into would)."""
    pos = 0
    while (event := conn.next_event()) is NEED_DATA:
        target = conn.read_buffer() if in_place else None
        if target is None:
            conn.receive_data(frame[pos : pos + 256 * 1024])
            pos += 256 * 1024
        else:
            n = min(len(target), 256 * 1024)
            target[:n] = frame[pos : pos + n]  # stands in for the kernel's copy
            conn.commit(n)
            pos += n
    assert isinstance(event, Payload)


if __name__ == "__main__":
    main()
