"""The folder link's change gate (tree/linkfeed.py ``ChangeGate``): a listing waits while an
owner's change is applied but the kernel's cached entries for it are not yet dropped, and never
longer than the gate's bound."""
from __future__ import annotations

import threading
import time

from megafs.tree.linkfeed import ChangeGate


def test_a_listing_waits_for_a_half_published_change():
    gate = ChangeGate()
    order: list[str] = []
    held, passed = threading.Event(), threading.Event()

    def publisher() -> None:
        with gate:
            held.set()
            passed.wait(0.3)          # a listing must not get through meanwhile
            order.append("published")

    def lister() -> None:
        held.wait(5)
        gate.passes()
        order.append("listed")
        passed.set()
    threads = [threading.Thread(target=publisher), threading.Thread(target=lister)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert order == ["published", "listed"]


def test_a_stuck_publisher_delays_a_listing_by_the_bound_only():
    gate = ChangeGate()
    gate.WAIT = 0.2
    with gate:
        started = time.monotonic()
        gate.passes()
        waited = time.monotonic() - started
    assert 0.15 <= waited < 2.0
    started = time.monotonic()
    gate.passes()                      # free: no wait
    assert time.monotonic() - started < 0.15
