"""The bounded inbox between the MQTT callback and the worker: back-pressure, and a shutdown
that never leaves the callback waiting."""

from __future__ import annotations

import threading

from ingest.mqtt import Inbox
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
    inbox.get(timeout=1)
    assert not done.wait(0.3)  # 3 left: still more than half
    inbox.get(timeout=1)
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
