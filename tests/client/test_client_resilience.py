"""The client against a stricter, failing server (issue 11, client items 8, 9, 11, 13), through
the real local server (``megafs serve``) and its fault injection:

* the sc wait URL failing fast (HTTP 500, dropped, or returning at once) never turns into a
  storm of sc requests, however the caller loops, and polling recovers afterwards;
* ``-4`` on the command channel backs off from about a second, ``-3`` from a tenth;
* ``-6`` from an upload URL gets a new upload URL instead of retrying the dead one;
* a download server that keeps answering fewer bytes than asked fails the read at once
  instead of retrying for the whole retry time;
* ``unexport`` removes a public link.
"""
from __future__ import annotations

import os
import threading
import time

import pytest
import requests

from megafs.api.client import MegaClient, PutItem
from megafs.api.commands import FetchResult
from megafs.errors import ApiCode, IntegrityError, MegaError
from megafs.retry import RetryPolicy
from helpers.server import ServerProcess
from helpers.client import fast_retry


def stats(srv) -> dict:
    resp = requests.get(srv.url + "_megafs/stats", timeout=10)
    resp.raise_for_status()
    return resp.json()


def requests_of(srv, kind: str) -> int:
    return stats(srv)["requests"].get(kind, 0)


def commands_of(srv, name: str) -> int:
    return stats(srv)["commands"].get(name, 0)


def like_the_watcher(client: MegaClient, sn: str, seconds: float) -> str:
    """Poll the way tree/changes.RemoteWatcher does (at most twice a second) for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        _packets, sn = client.poll(sn, max(0.1, min(20.0, end - time.monotonic())))
        time.sleep(0.5)
    return sn


def poll_until_packet(client: MegaClient, sn: str, seconds: float) -> list[dict]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        packets, sn = client.poll(sn, max(0.1, end - time.monotonic()))
        if packets:
            return packets
    return []


# --- item 8: no sc storm when the wait URL fails fast ------------------------------------------
@pytest.mark.parametrize("rule", [{"where": "sc", "command": "wait", "http": 500},
                                  {"where": "sc", "command": "wait", "drop": True}],
                         ids=["http500", "drop"])
def test_failing_wait_url_does_not_storm_sc(client, srv, rule):
    sn = client.fetch().sn
    srv.faults([rule])
    before = requests_of(srv, "sc")
    sn = like_the_watcher(client, sn, 6.0)
    polls = requests_of(srv, "sc") - before
    # back-off 1, 2, 4 s (+ up to half of each as jitter): three polls in 6 s; without
    # it the poll loop asked sc again after every failed wait, hundreds of times
    assert 1 <= polls <= 4, polls
    srv.clear_faults()
    client.mkdir(client.fetch().roots()[2], "after-the-storm")
    packets = poll_until_packet(client, sn, 30.0)
    assert any(p.get("a") == "t" for p in packets)


def test_wait_url_that_does_not_wait_does_not_storm_sc(tmp_path):
    """A wait URL that answers at once with nothing new: a storm in the making, backed off
    the same way (the web client does so for connections that end within 1.5 s)."""
    with ServerProcess(tmp_path / "srv", extra_args=["--wait-timeout", "0.01"]) as srv, \
            MegaClient.open(srv.url, state_dir=str(tmp_path / "state"),
                            retry=fast_retry()) as c:
        sn = c.fetch().sn
        before = requests_of(srv, "sc") + requests_of(srv, "wait")
        like_the_watcher(c, sn, 5.0)
        sent = requests_of(srv, "sc") + requests_of(srv, "wait")
        assert sent - before <= 12, sent - before


# --- item 13: -4 back-off starts near a second; -6 on an upload URL asks for a new URL ----------
def test_rate_limit_backs_off_from_about_a_second(srv, account):
    with MegaClient.open(srv.url, state_dir=account, retry=RetryPolicy(give_up_after=30)) as c:
        c.fetch()
        timings = {}
        for code in (ApiCode.EAGAIN, ApiCode.ERATELIMIT):
            srv.faults([{"where": "cs", "command": "uq", "error": int(code), "count": 1}])
            started = time.monotonic()
            c.quota()
            timings[code] = time.monotonic() - started
    assert timings[ApiCode.ERATELIMIT] >= 1.0
    assert timings[ApiCode.EAGAIN] < 0.9


def test_too_many_ips_on_an_upload_url_gets_a_new_url(client, srv, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(os.urandom(300000))
    client.uploader.connections = 1
    u_before, posts_before = commands_of(srv, "u"), requests_of(srv, "upload")
    srv.faults([{"where": "upload", "error": -6, "count": 1}])
    uploaded = client.upload(str(path))
    assert commands_of(srv, "u") - u_before == 2          # the dead URL was given up at once
    assert requests_of(srv, "upload") - posts_before == 2  # one refused POST, one good one
    root = client.fetch().roots()[2]
    node = client.put_files([PutItem(root, uploaded, {"n": "f"})])[0]
    ph = client.export([node["h"]])[0]
    out = tmp_path / "out"
    client.download(client.link_for(node, ph), str(out))
    assert out.read_bytes() == path.read_bytes()


# --- reads: a server that truncates is not an outage ---------------------------------------------
def test_endless_short_replies_fail_a_read_at_once(client, srv, tmp_path):
    path = tmp_path / "r"
    path.write_bytes(os.urandom(200000))
    root = client.fetch().roots()[2]
    node = client.put_files([PutItem(root, client.upload(str(path)), {"n": "r"})])[0]
    info = client.open_download(handle=node["h"])
    client.downloader.retry = RetryPolicy(give_up_after=120)
    srv.faults([{"where": "download", "truncate": True}])
    started = time.monotonic()
    with pytest.raises(IntegrityError, match="fewer bytes than asked"):
        client.read_range(info.url, client.file_key(node), 1000, 50000)
    assert time.monotonic() - started < 5      # not the 120 s retry budget
    srv.faults([{"where": "download", "truncate": True, "count": 2}])
    data = client.read_range(info.url, client.file_key(node), 1000, 50000)
    assert data == path.read_bytes()[1000:51000]


# --- unexport -----------------------------------------------------------------------------------
def test_unexport_removes_the_link(client, srv, tmp_path):
    path = tmp_path / "u"
    path.write_bytes(b"public for a while")
    root = client.fetch().roots()[2]
    node = client.put_files([PutItem(root, client.upload(str(path)), {"n": "u"})])[0]
    ph = client.export([node["h"]])[0]
    link = client.link_for(node, ph)
    sn = client.fetch().sn
    with MegaClient.public(srv.url, retry=fast_retry()) as anon:
        assert anon.download_info(link).size == path.stat().st_size
        client.unexport(node["h"])
        with pytest.raises(MegaError) as info:
            anon.download_info(link)
    assert info.value.code == ApiCode.ENOENT
    listing: FetchResult = client.fetch()
    assert node["h"] not in listing.public
    packets = poll_until_packet(client, sn, 10)
    assert any(p.get("a") == "ph" and p.get("d") == 1 and p.get("h") == node["h"]
               and p.get("i") == client.request_id for p in packets)
    with pytest.raises(MegaError) as info:
        client.unexport(node["h"])        # no link left to remove
    assert info.value.code == ApiCode.ENOENT
    assert client.export([node["h"]])[0] != ph   # a new link, the old one stays dead


# --- item 9: the first completion token wins ------------------------------------------------------
def test_late_error_after_completion_does_not_restart_the_upload(client, srv, tmp_path):
    """Two connections; the POST of the first span is sent twice, the second time (a repeat
    in flight when the file completes, as after a lost reply) only once the other connection
    has completed the file.  The real server refuses that late POST; the upload is finished
    all the same: one `u`, the file downloads intact."""
    path = tmp_path / "two-spans"
    path.write_bytes(os.urandom(1048576 + 1000))        # two spans: [0, 768 KiB) and the rest
    pool = client.uploader.pool
    real_transfer = pool.transfer
    completed = threading.Event()
    late: list[int] = []

    def transfer(method, url, **kw):
        first_span = "/0?" in url
        if not first_span:
            time.sleep(0.2)                               # after the first span is stored
        reply = real_transfer(method, url, **kw)
        if not first_span:
            completed.set()
            return reply
        completed.wait(10)
        time.sleep(0.1)
        repeat = real_transfer(method, url, **kw)         # lands after the completion
        late.append((repeat.status, bytes(repeat.body[:8])))
        return repeat

    client.uploader.connections = 2
    pool.transfer = transfer
    u_before = commands_of(srv, "u")
    try:
        uploaded = client.upload(str(path))
    finally:
        pool.transfer = real_transfer
    assert [status for status, _ in late] == [200] and late[0][1].strip() == b"-4"  # refused
    assert commands_of(srv, "u") - u_before == 1
    root = client.fetch().roots()[2]
    node = client.put_files([PutItem(root, uploaded, {"n": "two-spans"})])[0]
    out = tmp_path / "out"
    client.download(client.link_for(node, client.export([node["h"]])[0]), str(out))
    assert out.read_bytes() == path.read_bytes()
