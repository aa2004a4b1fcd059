import queue
import threading

from fedp2p.net.events import PeerJoined, PeerLeft, Received
from fedp2p.peer.mailbox import Mailbox
from fedp2p.wire.messages import Bye, Payload, PeerAddress


def payload(sender: int, rnd: int, kind: str = "logits") -> Payload:
    return Payload(sender, rnd, kind, ())


def test_collects_a_round_whatever_the_arrival_order_and_keeps_early_ones():
    box = Mailbox(queue.Queue())
    box.deliver(Received(2, payload(2, 2)))  # early: next round
    box.deliver(Received(1, payload(1, 1)))
    box.deliver(Received(2, payload(2, 1)))
    got = box.collect(1, {(1, "logits"), (2, "logits")}, timeout=5)
    assert set(got) == {(1, "logits"), (2, "logits")}
    assert set(box.collect(2, {(2, "logits")}, timeout=5)) == {(2, "logits")}


def test_late_payloads_and_forged_senders_are_dropped():
    box = Mailbox(queue.Queue())
    box.collect(1, set(), timeout=0)
    box.deliver(Received(3, payload(3, 1)))  # round 1 is over
    box.deliver(Received(4, payload(5, 2)))  # claims to be from 5
    assert box.collect(2, {(5, "logits")}, timeout=0.01) == {}


def test_a_peer_that_left_is_not_waited_for():
    box = Mailbox(queue.Queue())
    box.deliver(PeerLeft(7, "eof"))
    got = box.collect(1, {(7, "weights")}, timeout=60)  # returns at once, not after 60 s
    assert got == {}
    box.deliver(PeerJoined(7, PeerAddress(7, "127.0.0.1", 1, "cnn3")))
    assert 7 not in box.left()


def test_waits_for_a_payload_delivered_by_the_drain_thread():
    events: queue.Queue = queue.Queue()
    box = Mailbox(events)
    box.start()
    try:
        t = threading.Timer(0.05, events.put, args=(Received(1, payload(1, 1)),))
        t.start()
        got = box.collect(1, {(1, "logits")}, timeout=10)
        t.join()
        assert (1, "logits") in got
        events.put(Received(1, Bye("unrelated")))  # non-payload messages are ignored
    finally:
        box.stop()
