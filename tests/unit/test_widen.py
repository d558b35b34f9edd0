"""Transfer widening (megafs/api/widen.py, issue 23): more requests in flight only while they
raise the measured throughput, only on slow links, within the shared budget.  Simulated time:
a link where each of ``w`` concurrent requests of ``n`` bytes takes ``rtt + n / share``."""
from __future__ import annotations

import threading

from megafs.api.widen import Budget, Crew, Widener

MB = 1_000_000


def simulate(widener: Widener, *, rtt: float, per_conn: float, total: float,
             requests: int = 200, size: int = 4 * MB) -> int:
    """Run ``requests`` requests through the widener's workers; the width at the end."""
    now, running = 0.0, []          # (end, start) of each worker's request
    for _ in range(widener.width):
        running.append((rtt + size / min(per_conn, total / widener.width), 0.0))
    sent = len(running)
    while running:
        running.sort()
        end, start = running.pop(0)
        now = end
        share = min(per_conn, total / max(1, widener.width))
        more = widener.record(size, start, now, left=requests - sent)
        for _ in range(1 + more):
            if sent < requests:
                running.append((now + rtt + size / share, now))
                sent += 1
    widener.close()
    return widener.width


def test_a_per_connection_cap_is_widened_until_the_total_cap() -> None:
    # far: 20 Mbit/s per connection, 100 in total, RTT 150 ms: 4 (9.1 MB/s), then 8 fill the
    # 12.5 MB/s, and a step to 12 gains nothing
    widener = Widener(4, Budget(8))
    assert simulate(widener, rtt=0.15, per_conn=2.5 * MB, total=12.5 * MB) == 8
    assert widener.learned == widener.width
    # the next transfer starts there and does not probe again
    again = Widener(4, Budget(8), start=widener.learned)
    assert again.width == widener.width
    assert simulate(again, rtt=0.15, per_conn=2.5 * MB, total=12.5 * MB) == widener.width
    # without a cap in total it keeps doubling as long as the budget lasts
    assert simulate(Widener(4, Budget(8)), rtt=0.15, per_conn=2.5 * MB, total=1000 * MB) == 12


def test_a_total_cap_is_not_widened_past_one_probe() -> None:
    # home: 4 connections already fill 100 Mbit/s; one probe (to 8) finds no gain
    widener = Widener(4, Budget(8))
    assert simulate(widener, rtt=0.04, per_conn=6.25 * MB, total=12.5 * MB) == 8
    assert widener.learned == 8


def test_fast_requests_never_widen() -> None:
    # loopback: 4 MiB in a few ms
    widener = Widener(4, Budget(8))
    assert simulate(widener, rtt=0.0002, per_conn=500 * MB, total=1000 * MB) == 4
    assert widener.learned is None
    # a loaded loopback (measured: 4 connections 125-140 MB/s on 2 busy cores): 4 MB POSTs
    # take 0.13 s, but at over 30 MB/s a connection
    assert simulate(Widener(4, Budget(8)), rtt=0.0002, per_conn=100 * MB,
                    total=125 * MB) == 4


def test_the_budget_is_shared_and_given_back() -> None:
    budget = Budget(1)
    first = Widener(4, budget)
    assert simulate(first, rtt=0.15, per_conn=2.5 * MB, total=100 * MB) == 5
    assert budget.used == 0                 # given back by close()
    assert budget.take() == 1
    assert simulate(Widener(4, budget), rtt=0.15, per_conn=2.5 * MB, total=100 * MB) == 4
    assert Widener(4, budget, start=9).width == 4      # nothing left to start wider


def test_crew_joins_workers_added_while_it_runs() -> None:
    done, lock = [], threading.Lock()
    crew: Crew

    def work() -> None:
        with lock:
            done.append(1)
            grow = len(done) < 5
        if grow:
            crew.add()
    crew = Crew(work, "test", threading.Event())
    crew.run(2)
    assert len(done) == 6          # 2 started, and each of the first 4 added one more


def test_a_tail_span_is_cut_on_mac_chunk_boundaries() -> None:
    """The upload's tail on a widened (slow) link goes out in spans of about 1 MiB
    (``chunks.split_span``): they cover the span exactly, in order, each a run of whole MAC
    chunks (``chunks.spans``), none over 1 MiB unless one chunk is."""
    from megafs import chunks
    from megafs.chunks import split_span

    size = 20 * chunks.MIB + 12345
    starts = {start for start, _ in chunks.spans(size)} | {size}
    spans = list(chunks.groups(size, 5 * chunks.MIB))      # the upload's spans
    assert len(spans) == 5
    for offset, length in spans:
        pieces = split_span(offset, length, chunks.MIB)
        assert pieces[0][0] == offset and sum(n for _, n in pieces) == length
        assert all(a + n == b for (a, n), (b, _) in zip(pieces, pieces[1:]))
        assert all(start in starts and start + n in starts for start, n in pieces)
        assert all(n <= chunks.MIB for _, n in pieces)
        assert len(pieces) >= length // chunks.MIB


def test_a_long_round_trip_takes_the_first_step_at_once() -> None:
    # the g before a cold read took 0.15 s (far): the first epoch would be slow anyway
    budget = Budget(12)
    widener = Widener(4, budget)
    assert widener.long_link(0.15) == 4
    assert widener.width == 8 and budget.used == 4
    assert widener.long_link(0.15) == 0          # once, before any request completed
    # the step had no measured rate to beat, so the epoch at 8 takes the next one (16, as a
    # read that measured its first epoch at 4 reaches: 4 -> 8 -> 16 on the far profile), which
    # gains nothing over 8 and stops the growth
    assert simulate(widener, rtt=0.15, per_conn=2.5 * MB, total=12.5 * MB) == 16
    assert widener.learned == 16
    # a quick round trip, or a transfer already measuring, is left alone
    assert Widener(4, Budget(12)).long_link(0.04) == 0
    started = Widener(4, Budget(12))
    started.record(MB, 0.0, 0.3)
    assert started.long_link(0.15) == 0 and started.width == 4
    # the limit and the budget bound it
    assert Widener(4, Budget(12), limit=6).long_link(0.5) == 2
    assert Widener(4, Budget(1)).long_link(0.5) == 1
