"""Many small files closed together cross to the server in a few batched requests (issue 23,
goal 1): one request of ``u`` for the waiting files, their POSTs in parallel, one ``p`` per
file but all in one request, the ``l`` likewise; and a command refused in its slot of a batch
retries only its own file.  Counted with the server's ``requests_with`` (``/cs`` requests
holding a command name, megafs/server/stats.py)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time

import pytest

from megafs.api.client import MegaClient
from megafs.writeback.scheduler import HOLD_MAX
from helpers.mount import MountProcess, megafs, run_with_timeout

pytestmark = [pytest.mark.fuse,
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]


def make_files(tmp_path, count):
    src = tmp_path / "src"
    src.mkdir()
    expected = {}
    for i in range(count):
        name = "f%03d.bin" % i
        expected[name] = os.urandom(4096)
        (src / name).write_bytes(expected[name])
    return src, expected


def stats_diff(before, after):
    diff = {"cs": after["requests"]["cs"] - before["requests"]["cs"]}
    for key in ("commands", "requests_with"):
        diff[key] = {name: n - before[key].get(name, 0) for name, n in after[key].items()}
    return diff


def copy_until_linked(server, tmp_path, count, rules, warm=False):
    """Copy ``count`` x 4 KiB files into a fresh mount with one ``cp`` under fault ``rules``;
    wait until every ``.link`` is readable.  Returns ((seconds until cp returned, until the
    last link), the server's stats difference, {name: link}, {name: data}).  ``warm``: one
    file is uploaded first (its link read), so the mount knows its upload host and the burst
    sends no scout (megafs/writeback/scheduler.py)."""
    src, expected = make_files(tmp_path, count)
    m = MountProcess(tmp_path / "mnt", server.url, tmp_path / "state").start()
    try:
        if warm:
            (m.mnt / "warm.bin").write_bytes(b"warm")
            run_with_timeout(lambda: (m.mnt / "warm.bin.link").read_text(), 120)
        server.faults(rules)
        before = server.stats()
        start = time.monotonic()
        subprocess.run(["cp"] + [str(src / n) for n in sorted(expected)] + [str(m.mnt)],
                       check=True, timeout=120)
        copied = time.monotonic() - start
        links = {name: run_with_timeout(
            lambda n=name: (m.mnt / (n + ".link")).read_text().strip(), 120)
            for name in sorted(expected)}
        elapsed = time.monotonic() - start
        after = server.stats()
        server.clear_faults()
        assert "Traceback" not in m.log()
    finally:
        m.stop()
    return (copied, elapsed), stats_diff(before, after), links, expected


def check_links(server, tmp_path, links, expected):
    with MegaClient.public(api=server.url) as pub:
        for name, data in expected.items():
            pub.download(links[name], str(tmp_path / "dl"))
            assert hashlib.sha256((tmp_path / "dl").read_bytes()).digest() == \
                hashlib.sha256(data).digest(), name


@pytest.mark.slow
@pytest.mark.parametrize("latency", [0.0, 0.05])
def test_many_small_files_cross_in_few_batches(server, tmp_path, latency):
    """100 x 4 KiB copied by one ``cp``, with every ``/cs`` request answered ``latency`` s
    late; prints the figures quoted in megafs/writeback/scheduler.py."""
    count = 100
    rules = [{"where": "cs", "delay": latency}] if latency else []
    (copied, elapsed), diff, links, expected = copy_until_linked(server, tmp_path, count, rules)
    with_cmd = diff["requests_with"]
    print("100 x 4 KiB, %d ms a /cs request: cp returned in %.2f s, %.2f s to the last link, "
          "%d /cs requests (%.2f a file); requests with u: %d, p: %d, l: %d" % (
              latency * 1000, copied, elapsed, diff["cs"], diff["cs"] / count,
              with_cmd.get("u", 0), with_cmd.get("p", 0), with_cmd.get("l", 0)))
    assert diff["commands"].get("u") == count and diff["commands"].get("p") == count
    if latency:
        # `cp` closes a file every few ms, so files become ready over several round trips:
        # at most one `u` batch a round trip while `cp` runs, a few after (before batching:
        # 50 requests with `u` while cp ran 0.57 s, 53 requests in all)
        windows = copied / latency
        assert with_cmd.get("u", 0) <= windows + 4
        assert with_cmd.get("p", 0) <= windows + 4
        assert with_cmd.get("l", 0) <= windows + 4
        assert diff["cs"] <= 2 * windows + 8
    check_links(server, tmp_path, links, expected)


def test_files_closed_together_share_one_request_each_step(server, tmp_path):
    """The first ``u`` (the scout's: the first file of a fresh mount's first burst) is held
    1.5 s while ``cp`` closes the rest: every file waiting then gets its upload URL in the next
    request, and the ``p`` and ``l`` follow in one or two."""
    count = 40
    hold = {"where": "cs", "command": "u", "delay": 1.5, "count": 1}
    _elapsed, diff, links, expected = copy_until_linked(server, tmp_path, count, [hold])
    with_cmd = diff["requests_with"]
    assert diff["commands"].get("u") == count and diff["commands"].get("p") == count
    assert with_cmd.get("u", 0) <= 3          # the held one, then (nearly) all the others
    assert with_cmd.get("p", 0) <= 3
    assert with_cmd.get("l", 0) <= 3
    check_links(server, tmp_path, links, expected)


def test_slow_posts_of_one_wave_share_one_p_and_one_l(server, tmp_path):
    """Every POST answered 0.3 s late: the 60 files' POSTs all run at once (not in waves of
    16 workers) and the committer waits for the wave to end, so one ``p`` and one ``l`` per
    ``u`` batch serve them all (before: 4 waves of POSTs; and the gather ended once half of a
    wave's files had finished, so two or three ``p`` and ``l`` a wave)."""
    count = 60
    slow = {"where": "upload", "delay": 0.3}
    _elapsed, diff, links, expected = copy_until_linked(server, tmp_path, count, [slow],
                                                        warm=True)
    with_cmd = diff["requests_with"]
    assert diff["commands"].get("u") == count and diff["commands"].get("p") == count
    assert 1 <= with_cmd.get("u", 0) <= 2      # the burst of closes, held for a quiet moment
    assert with_cmd.get("p", 0) <= with_cmd["u"], with_cmd
    assert with_cmd.get("l", 0) <= with_cmd["u"], with_cmd
    check_links(server, tmp_path, links, expected)


def wait_states(mnt, names, timeout=60.0):
    """{name: user.mega.state} once no file is pending or uploading."""
    deadline = time.monotonic() + timeout
    while True:
        states = {n: os.getxattr(mnt / n, "user.mega.state").decode() for n in names}
        if all(s in ("uploaded", "failed") for s in states.values()) \
                or time.monotonic() > deadline:
            return states
        time.sleep(0.1)


@pytest.mark.log_ok("commit of")
def test_a_refused_command_in_a_batch_retries_only_its_file(server, tmp_path):
    """One ``u`` and one ``l`` answered ``-3`` in their slots are resent alone; one ``p``
    refused for good (``-11``) fails only its file, whose 29 batch mates get their links;
    ``megafs retry`` then commits it.  Every link downloads the right bytes."""
    count = 30
    src, expected = make_files(tmp_path, count)
    names = sorted(expected)
    m = MountProcess(tmp_path / "mnt", server.url, tmp_path / "state").start()
    try:
        server.faults([
            {"where": "cs", "command": "u", "level": "command", "error": -3, "count": 1},
            {"where": "cs", "command": "p", "level": "command", "error": -11, "count": 1},
            {"where": "cs", "command": "l", "level": "command", "error": -3, "count": 1}])
        before = server.stats()
        subprocess.run(["cp"] + [str(src / n) for n in names] + [str(m.mnt)],
                       check=True, timeout=120)
        states = wait_states(m.mnt, names)
        failed = [n for n, s in states.items() if s == "failed"]
        assert len(failed) == 1, states
        after = stats_diff(before, server.stats())
        assert after["commands"].get("u") == count + 1      # the refused slot, alone
        assert after["commands"].get("p") == count          # one p a file, one refused
        assert after["commands"].get("l") == count - 1 + 1  # 29 files, one slot resent
        server.clear_faults()
        megafs("retry", str(m.mnt), "--state-dir", str(tmp_path / "state"))
        links = {n: run_with_timeout(lambda n=n: (m.mnt / (n + ".link")).read_text().strip(),
                                     60) for n in names}
        final = stats_diff(before, server.stats())
        assert final["commands"].get("p") == count + 1      # only the refused file again
        assert "Traceback" not in m.log()
    finally:
        m.stop()
    check_links(server, tmp_path, links, expected)


def test_on_a_long_round_trip_a_fresh_mount_sends_one_scout_then_batches(server, tmp_path):
    """Every ``/cs`` request answered 0.15 s late (a long round trip: ``AHEAD_RTT``): a fresh
    mount does not know where uploads go, so the first file of its first burst goes at once,
    alone (its own ``u``, held 1 s more here), while the rest of the burst, all closed
    meanwhile, shares the next request's ``u`` (the lane sends every batch waiting in one);
    from the scout's URL on, the burst's POST connections are opened while it is held.  On
    loopback (the other tests here) there is no scout: the first ``u`` carries the burst."""
    count = 30
    src, expected = make_files(tmp_path, count)
    m = MountProcess(tmp_path / "mnt", server.url, tmp_path / "state").start()
    try:
        server.faults([{"where": "cs", "delay": 0.15},
                       {"where": "cs", "command": "u", "delay": 1.0, "count": 1}])
        for i in range(8):                   # the round trip the mount measures
            (m.mnt / ("d%d" % i)).mkdir()
        before = server.stats()
        subprocess.run(["cp"] + [str(src / n) for n in sorted(expected)] + [str(m.mnt)],
                       check=True, timeout=120)
        links = {name: run_with_timeout(
            lambda n=name: (m.mnt / (n + ".link")).read_text().strip(), 120)
            for name in sorted(expected)}
        diff = stats_diff(before, server.stats())
        server.clear_faults()
        assert "Traceback" not in m.log()
    finally:
        m.stop()
    with_cmd = diff["requests_with"]
    assert diff["commands"].get("u") == count and diff["commands"].get("p") == count
    assert with_cmd.get("u", 0) == 2, with_cmd        # the scout's, then the burst's
    check_links(server, tmp_path, links, expected)


def test_fsync_in_a_held_burst_of_closes_does_not_wait_for_the_burst(server, tmp_path):
    """While another writer keeps closing small files (a burst the dispatcher holds, up to
    ``HOLD_MAX``), ``fsync`` of a file returns once that file is on MEGA: the forced file ends
    the hold (``burst_hold``), and its finished upload does not wait for the hold to share the
    burst's ``p`` (``QueueState.ready_held``).  Held, it would return only when the writer
    stops (here after 4 x ``HOLD_MAX``) or after ``HOLD_MAX``."""
    m = MountProcess(tmp_path / "mnt", server.url, tmp_path / "state").start()
    stop = threading.Event()
    closed = [0]

    def burst() -> None:
        deadline = time.monotonic() + 4 * HOLD_MAX
        while not stop.is_set() and time.monotonic() < deadline:
            (m.mnt / ("burst%05d.bin" % closed[0])).write_bytes(os.urandom(4096))
            closed[0] += 1

    writer = threading.Thread(target=burst)
    try:
        writer.start()
        while closed[0] < 20:               # the burst is under way, and held
            time.sleep(0.01)
        data = os.urandom(100_000)
        start = time.monotonic()
        fd = os.open(m.mnt / "synced.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        took = time.monotonic() - start
        burst_on = writer.is_alive()
        stop.set()
        writer.join()
        assert burst_on, "the writer's burst ended before fsync returned"
        assert took < HOLD_MAX, took
        assert os.getxattr(m.mnt / "synced.bin", "user.mega.state") == b"uploaded"
        link = run_with_timeout(lambda: (m.mnt / "synced.bin.link").read_text().strip(), 120)
        assert "Traceback" not in m.log()
    finally:
        stop.set()
        writer.join()
        m.stop()
    with MegaClient.public(api=server.url) as pub:
        pub.download(link, str(tmp_path / "dl"))
    assert (tmp_path / "dl").read_bytes() == data


def test_upload_hold_zero_uploads_small_files_during_the_burst(server, tmp_path):
    """``-o upload_hold=0``: no hold, each small file's upload starts as soon as it is closed,
    while the burst of closes goes on (with the default hold, none would start before a
    30 ms pause or ``HOLD_MAX``)."""
    m = MountProcess(tmp_path / "mnt", server.url, tmp_path / "state",
                     extra=["-o", "upload_hold=0"]).start()
    try:
        before = server.stats()["requests"].get("upload", 0)
        during = 0
        deadline = time.monotonic() + 2 * HOLD_MAX
        for i in range(400):
            (m.mnt / ("f%03d.bin" % i)).write_bytes(os.urandom(4096))
            during = server.stats()["requests"].get("upload", 0) - before if i % 20 == 19 \
                else during
            if during or time.monotonic() > deadline:
                break
        assert during > 0, "no upload started while files were being closed"
        assert "Traceback" not in m.log()
    finally:
        m.stop()
