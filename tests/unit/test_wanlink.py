"""The bench's WAN emulator (scripts/wanlink.py, issue 23): its pacing maths, and one real
forwarded connection that shows the delay and the cap (a fraction of a second)."""
from __future__ import annotations

import importlib.util
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent.parent / "scripts" / "wanlink.py"
spec = importlib.util.spec_from_file_location("wanlink", SCRIPT)
assert spec is not None and spec.loader is not None
wanlink = importlib.util.module_from_spec(spec)
sys.modules.setdefault("wanlink", wanlink)     # dataclasses look their module up
spec.loader.exec_module(wanlink)


def send_all(pacer, now: float, sizes: list[int]) -> list[float]:
    """Departures of chunks all read at ``now``, each sent when its connection is ready."""
    return [pacer.send(pacer.ready(now), n) for n in sizes]


def test_one_connection_delay_and_rate() -> None:
    profile = wanlink.Profile("t", rtt=0.1, per_conn=1000.0, total=0.0)
    pacer = wanlink.Pacer(profile, wanlink.Wire(0.0))
    assert send_all(pacer, 0.0, [100, 100]) == pytest.approx([0.1, 0.2])   # 1000 B/s, queued
    assert send_all(pacer, 5.0, [100]) == pytest.approx([5.1])     # idle connection: from now
    assert pacer.arrival(5.1) == pytest.approx(5.15)                # + RTT / 2


def test_shared_wire_caps_the_sum_in_real_time_order() -> None:
    profile = wanlink.Profile("t", rtt=0.0, per_conn=1000.0, total=1500.0)
    wire = wanlink.Wire(profile.total)
    a, b = wanlink.Pacer(profile, wire), wanlink.Pacer(profile, wire)
    last = 0.0
    for _ in range(3):           # both have 3 x 1000 B at 0; they take turns as the loop would
        for pacer in sorted((a, b), key=lambda p: p.ready(0.0)):
            last = max(last, pacer.send(pacer.ready(0.0), 1000))
    assert last == pytest.approx(4.0)      # 6000 B at 1500 B/s, not 3 s at 2 x 1000 B/s
    # alone, a connection is held to its own rate, and the wire's time overlaps with it
    c = wanlink.Pacer(profile, wanlink.Wire(1500.0))
    assert send_all(c, 10.0, [1000, 1000]) == pytest.approx([11.0, 12.0])


def test_handshake_delays_the_first_bytes() -> None:
    profile = wanlink.Profile("t", rtt=0.2, per_conn=0.0, total=0.0)
    pacer = wanlink.Pacer(profile, wanlink.Wire(0.0), start=0.2)
    assert pacer.arrival(send_all(pacer, 0.0, [10])[0]) == pytest.approx(0.3)
    assert pacer.arrival(send_all(pacer, 1.0, [10])[0]) == pytest.approx(1.1)


def test_forwarded_connection_round_trip_and_cap() -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        conn, _ = listener.accept()
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    link = wanlink.Link(wanlink.Profile("t", rtt=0.1, per_conn=400_000.0, total=0.0))
    try:
        port = link.add("echo", "127.0.0.1", listener.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            start = time.monotonic()
            sock.sendall(b"x")
            assert sock.recv(10) == b"x"
            first = time.monotonic() - start        # handshake + one round trip
            payload = b"y" * 100_000
            start = time.monotonic()
            sock.sendall(payload)
            got = 0
            while got < len(payload):
                got += len(sock.recv(65536))
            bulk = time.monotonic() - start     # 0.25 s of pacing each way, overlapping, + RTT
        assert 0.2 <= first < 0.6
        assert 0.4 <= bulk < 1.2            # without the cap: about 0.1 s
        assert link.counters.connections == 1
        assert link.counters.up_bytes == 100_001
    finally:
        link.close()
        listener.close()
