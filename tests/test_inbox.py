"""The bounded inbox between the MQTT callback and the worker: back-pressure, and a shutdown
that never leaves the callback waiting."""

from __future__ import annotations

import threading
import time

from ingest.mqtt import Inbox, pubacks
from ingest.pipeline import Message

M = Message("root/gw/json", b"{}", 0.0)


def put_in_thread(inbox: Inbox) -> threading.Event:
    done = threading.Event()

    def run() -> None:
        inbox.put(M)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done


def test_a_full_inbox_holds_the_callback_until_the_worker_takes_half() -> None:
    inbox = Inbox(limit=4)
    for _ in range(4):
        inbox.put(M)
    done = put_in_thread(inbox)
    assert not done.wait(0.3)  # full: the callback waits (the broker is slowed, nothing lost)
    assert inbox.take(1, timeout=1) == [M]
    assert not done.wait(0.3)  # 3 left: still more than half
    assert inbox.take(1, timeout=1) == [M]
    assert done.wait(5)  # 2 left: room again, the message goes in
    assert inbox.qsize() == 3


def test_closing_releases_a_waiting_callback_and_refuses_more() -> None:
    inbox = Inbox(limit=2)
    inbox.put(M)
    inbox.put(M)
    done = put_in_thread(inbox)
    assert not done.wait(0.3)
    inbox.close()
    assert done.wait(5)
    inbox.put(M)
    assert inbox.qsize() == 2  # refused while closing: left unacknowledged for redelivery


def test_take_keeps_arrival_order_and_put_back_returns_to_the_front() -> None:
    inbox = Inbox(limit=100)
    sent = [Message("root/gw/json", bytes([i]), float(i)) for i in range(5)]
    for m in sent:
        inbox.put(m)
    first = inbox.take(3, timeout=1)
    assert first == sent[:3]
    inbox.put_back(first[1:])  # taken but not used: the next batch starts with them
    inbox.put(M)
    assert inbox.take(10, timeout=1) == [*sent[1:], M]
    assert inbox.take(10, timeout=0.05) == []


def test_take_wakes_up_when_a_message_arrives() -> None:
    inbox = Inbox(limit=10)
    timer = threading.Timer(0.2, inbox.put, (M,))
    timer.start()
    started = time.monotonic()
    got: list[Message] = []
    while not got and time.monotonic() - started < 5:
        got = inbox.take(10, timeout=5)
    assert got == [M]
    assert time.monotonic() - started < 2  # woken by the put, not by the timeout
    timer.join()


def test_acknowledgements_are_consecutive_mqtt_pubacks() -> None:
    assert pubacks([1, 0x1234, 65535]) == (
        b"\x40\x02\x00\x01" + b"\x40\x02\x12\x34" + b"\x40\x02\xff\xff"
    )
    assert pubacks([]) == b""
