"""Many writers at once through a real mount on a server whose API lock answers ``-3`` to
overlapping requests of one session (issue 19, item 3 and its proof): every file reaches the
server intact, and with the mount's one locking lane the server refuses none of its requests.
(That the server does refuse a client without the lane is tests/client/test_api_lane.py
``test_lane_stops_api_lock_refusals_that_a_bypassed_client_gets``.)"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from megafs.api.client import MegaClient
from helpers.mount import MountProcess, fresh_listing, run_with_timeout

pytestmark = [pytest.mark.fuse,
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]

WRITERS, FILES = 4, 10

# One writer process: copies its FILES source files into the mount with cp, in parallel with
# the other writers.
WRITER = """
import subprocess, sys
src, dst, k, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
subprocess.run(['cp'] + ['%s/w%d-f%d.bin' % (src, k, i) for i in range(n)] + [dst], check=True)
"""


def test_many_writers_at_once_are_never_refused(server, tmp_path):
    assert server.options()["api_lock"] is True            # the default: -3 on overlap
    src = tmp_path / "src"
    src.mkdir()
    expected = {}
    for k in range(WRITERS):
        for i in range(FILES):
            data = os.urandom(4096 * (1 + i % 3) + k)
            (src / ("w%d-f%d.bin" % (k, i))).write_bytes(data)
            expected["w%d-f%d.bin" % (k, i)] = data
    state = tmp_path / "state"
    m = MountProcess(tmp_path / "mnt", server.url, state).start()
    try:
        refused_before = server.stats().get("api_lock_refused", 0)
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(src), str(m.mnt), str(k),
                                   str(FILES)]) for k in range(WRITERS)]
        for p in procs:
            assert p.wait(120) == 0
        links = {name: run_with_timeout(lambda n=name: (m.mnt / (n + ".link")).read_text(), 120)
                 for name in expected}
        assert server.stats().get("api_lock_refused", 0) == refused_before
        assert "Traceback" not in m.log()
    finally:
        m.stop()
    listing = fresh_listing(server.url, state)
    assert sorted(p[1:] for p, n in listing.items() if n.type == 0) == sorted(expected)
    with MegaClient.public(api=server.url) as pub:
        for name, data in expected.items():
            pub.download(links[name].strip(), str(tmp_path / "dl"))
            assert hashlib.sha256((tmp_path / "dl").read_bytes()).digest() == \
                hashlib.sha256(data).digest(), name


def test_requests_per_small_file(server, tmp_path):
    """100 x 4 KiB files copied into a mount (one ``cp``): the ``/cs`` requests per file the
    server counted (the figure quoted at megafs/api/lane.py ``MAX_COMMANDS``), none refused."""
    count = 100
    src = tmp_path / "src"
    src.mkdir()
    for i in range(count):
        (src / ("f%03d.bin" % i)).write_bytes(os.urandom(4096))
    m = MountProcess(tmp_path / "mnt", server.url, tmp_path / "state").start()
    try:
        before = server.stats()
        subprocess.run(["cp"] + [str(p) for p in sorted(src.iterdir())] + [str(m.mnt)],
                       check=True, timeout=120)
        for i in range(count):
            run_with_timeout(lambda n=i: (m.mnt / ("f%03d.bin.link" % n)).read_text(), 120)
        after = server.stats()
    finally:
        m.stop()
    requests = after["requests"]["cs"] - before["requests"]["cs"]
    print("requests per file: %.2f (%d /cs requests for %d files)"
          % (requests / count, requests, count))
    assert after.get("api_lock_refused", 0) == before.get("api_lock_refused", 0)
    # each file needs a `u`, a `p` and an `l`: at most 3 requests, fewer once combined
    assert requests <= 3 * count
