"""``megafs get`` past MEGA's transfer quota (issue 19 item 4): one line on stderr ("transfer
quota used up; continuing in ...") and the download goes on once the window allows it, both
when ``g`` answers ``-17``/``tl`` and when the download URL answers HTTP 509 +
``X-MEGA-Time-Left``; ``--no-wait-quota`` fails at once with exit 1 and one line."""
from __future__ import annotations

import os
import time

import pytest

from helpers.server import ServerProcess
from test_client_cli import megafs

QUOTA = 1 << 20
WINDOW = 4          # seconds


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("quota") / "server-data"
    with ServerProcess(data, extra_args=["--transfer-quota", str(QUOTA),
                                         "--transfer-window", str(WINDOW)]) as srv:
        yield srv


@pytest.mark.slow
def test_get_waits_out_the_transfer_quota_or_fails_at_once(server, tmp_path):
    data = os.urandom(600_000)
    (tmp_path / "f.bin").write_bytes(data)
    link = megafs("upload", "--api", server.url, "--state-dir", str(tmp_path / "state"),
                  str(tmp_path / "f.bin")).stdout.strip()
    get = ["get", "--api", server.url, link]
    # the download URL answering 509 + X-MEGA-Time-Left (1 s here) is waited out
    server.faults([{"where": "download", "http": 509, "count": 1}])
    try:
        first = megafs(*get, "-o", str(tmp_path / "1"))
    finally:
        server.clear_faults()
    assert first.returncode == 0, first.stderr
    assert first.stderr.strip().splitlines() == [
        "megafs get: transfer quota used up; continuing in 1 s"]
    assert (tmp_path / "1").read_bytes() == data
    # 600,000 more bytes do not fit in the window: at once exit 1 and one line
    started = time.monotonic()
    quick = megafs(*get, "-o", str(tmp_path / "2"), "--no-wait-quota")
    assert quick.returncode == 1 and time.monotonic() - started < WINDOW
    lines = quick.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("megafs get: transfer quota used up"), lines
    assert "MEGA allows more in" in lines[0] and not (tmp_path / "2").exists()
    # waiting: one line, then the file, once the window moved
    started = time.monotonic()
    waited = megafs(*get, "-o", str(tmp_path / "3"))
    assert waited.returncode == 0, waited.stderr
    lines = waited.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "megafs get: transfer quota used up; continuing in "), lines
    assert 1 <= int(lines[0].split()[-2]) <= WINDOW and lines[0].endswith(" s")
    assert (tmp_path / "3").read_bytes() == data
    assert time.monotonic() - started > 1.0
