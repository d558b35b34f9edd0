"""One locking API lane per session (issue 19, item 3; megafs/api/lane.py) against the real
local server, whose API lock answers ``-3`` to a second overlapping locking request of a
session (megafs/server/apilock.py).

A delay fault on one request keeps the lane busy for a second, so what other threads submit
meanwhile must wait and go out combined; the server's request and command counters show it.
"""
from __future__ import annotations

import threading
import time

from megafs.api.commands import PutItem
from megafs.errors import ApiCode, Cancelled, MegaError
from helpers.mount import listing_paths


def counts(srv) -> tuple[int, dict[str, int], int]:
    stats = srv.stats()
    return (stats["requests"].get("cs", 0), dict(stats["commands"]),
            stats.get("api_lock_refused", 0))


def run_threads(targets) -> list[object]:
    """Run each callable on its own thread; their results (or exceptions), in order."""
    out: list[object] = [None] * len(targets)

    def run(i, fn):
        try:
            out[i] = fn()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    return out


def while_busy(srv, client, others, delay: float = 1.0) -> list[object]:
    """Send one ``uq`` held back ``delay`` s by the server, and meanwhile (once it is in
    flight) the ``others`` on their own threads; returns the others' results."""
    srv.faults([{"where": "cs", "command": "uq", "delay": delay, "count": 1}])
    first = threading.Thread(target=client.quota)
    first.start()
    time.sleep(delay / 4)
    try:
        return run_threads(others)
    finally:
        first.join(30)


def test_concurrent_batches_are_combined_and_each_caller_gets_its_own(srv, client):
    root = client.fetch().roots()[2]
    cs0, cmd0, refused0 = counts(srv)
    names = ["lane-%d" % i for i in range(10)]
    made = while_busy(srv, client, [lambda n=n: client.mkdir(root, n) for n in names])
    cs1, cmd1, refused1 = counts(srv)
    # the delayed uq, then the ten mkdirs in ONE request
    assert cs1 - cs0 == 2
    assert cmd1.get("p", 0) - cmd0.get("p", 0) == 10
    assert refused1 == refused0
    listing = listing_paths(client)
    for name, node in zip(names, made):
        assert isinstance(node, dict), node
        assert listing["/" + name].handle == node["h"]      # its own result, not a neighbour's


def test_one_failing_command_fails_only_its_caller(srv, client):
    root = client.fetch().roots()[2]
    cs0, _, _ = counts(srv)
    calls = [lambda i=i: client.mkdir(root, "ok-%d" % i) for i in range(4)]
    calls.insert(2, lambda: client.mkdir("AAAAAAAA", "orphan"))     # no such parent: -9
    results = while_busy(srv, client, calls)
    assert counts(srv)[0] - cs0 == 2                 # combined: one request for all five
    assert isinstance(results[2], MegaError) and results[2].code == ApiCode.ENOENT
    ok = [r for i, r in enumerate(results) if i != 2]
    assert all(isinstance(r, dict) and r.get("h") for r in ok), ok


def test_transient_slot_is_resent_by_its_owner_only(srv, client):
    root = client.fetch().roots()[2]
    cs0, cmd0, _ = counts(srv)
    srv.faults([{"where": "cs", "command": "uq", "delay": 1.0, "count": 1},
                {"where": "cs", "command": "p", "level": "command", "error": -3, "count": 1}])
    first = threading.Thread(target=client.quota)
    first.start()
    time.sleep(0.25)
    results = run_threads([client.quota] * 5 + [lambda: client.mkdir(root, "after-eagain")])
    first.join(30)
    cs1, cmd1, _ = counts(srv)
    assert all(isinstance(r, tuple) for r in results[:5]), results
    assert isinstance(results[5], dict) and results[5].get("h")
    assert cmd1["uq"] - cmd0.get("uq", 0) == 6      # no uq was sent twice
    assert cmd1["p"] - cmd0.get("p", 0) == 2        # the p: -3 in its slot, then alone again
    assert cs1 - cs0 == 3


def test_cancelled_caller_does_not_break_the_others(srv, client):
    cancel = threading.Event()
    transport = client.transport

    def cancelled():
        return transport.batch([{"a": "uq"}], cancel=cancel)

    def cancel_soon():
        time.sleep(0.3)
        cancel.set()

    started = time.monotonic()
    results = while_busy(srv, client, [cancelled, client.quota, client.quota, cancel_soon],
                         delay=1.5)
    assert isinstance(results[0], Cancelled)
    assert all(isinstance(r, tuple) for r in results[1:3]), results
    assert time.monotonic() - started < 10


def test_lane_stops_api_lock_refusals_that_a_bypassed_client_gets(srv, client):
    """The same overlapping load: a client with its lane bypassed is refused (-3) by the
    server's API lock and survives by retrying; through the lane nothing is refused."""
    def load(rounds: int) -> list[object]:
        return run_threads([lambda: [client.quota() for _ in range(rounds)]] * 8)

    transport = client.transport
    direct = transport._send_batch
    _, _, refused0 = counts(srv)
    transport._send = lambda cmds, anonymous, backoff: direct(cmds, anonymous, backoff)
    try:
        for _ in range(10):             # overlap is a matter of timing: try until it happens
            results = load(10)
            assert not any(isinstance(r, Exception) for r in results), results
            if counts(srv)[2] > refused0:
                break
    finally:
        del transport._send
    _, _, refused1 = counts(srv)
    assert refused1 > refused0, "the bypassed client was never refused: the check is blind"
    results = load(20)
    assert not any(isinstance(r, Exception) for r in results), results
    assert counts(srv)[2] == refused1
    assert transport.lane.stats.jobs > transport.lane.stats.requests    # it did combine


def test_lockless_g_goes_straight_out(srv, client, tmp_path):
    """Batches of only ``g`` do not wait for the locking lane: a ``g`` sent while a delayed
    locking request is in flight returns long before it."""
    path = tmp_path / "g.bin"
    path.write_bytes(b"x" * 1000)
    root = client.fetch().roots()[2]
    node = client.put_files([PutItem(root, client.upload(str(path)), {"n": "g.bin"})])[0]
    assert isinstance(node, dict)
    handle = node["h"]
    lane_before = client.transport.lane.stats.requests
    srv.faults([{"where": "cs", "command": "uq", "delay": 2.0, "count": 1}])
    first = threading.Thread(target=client.quota)
    first.start()
    time.sleep(0.3)
    started = time.monotonic()
    reply = client.transport.call({"a": "g", "g": 1, "n": handle})
    took = time.monotonic() - started
    first.join(30)
    assert isinstance(reply, dict) and reply.get("g")
    assert took < 1.0
    assert client.transport.lane.stats.requests == lane_before + 1      # only the uq
