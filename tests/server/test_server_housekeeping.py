"""Housekeeping (issue 11 item 6): the ciphertext of abandoned, superseded, expired and deleted
uploads is removed while the server runs, so disk use stays bounded by the live data; uploads
that are still receiving data are never touched."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from helpers.rawapi import Api, checksum_b64, encrypt_file, plaintext
from helpers.server import ServerProcess

IDLE = 1.0          # --upload-idle
TTL = 1.5           # --completion-ttl
SWEEP = 0.25        # the janitor's interval: a quarter of the shortest TTL
CHUNK1 = 131072


def disk_bytes(data_dir: Path) -> int:
    """Bytes allocated to ciphertext (blobs and part files)."""
    total = 0
    for sub in ("blobs", "uploads"):
        for entry in os.scandir(data_dir / sub):
            total += entry.stat().st_blocks * 512
    return total


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


@pytest.fixture
def server(tmp_path):
    with ServerProcess(tmp_path / "server-data", extra_args=[
            "--upload-idle", str(IDLE), "--completion-ttl", str(TTL),
            "--hashcash-easiness", "0"]) as srv:
        yield srv


def test_disk_use_stays_bounded_by_the_live_data(server):
    api = Api(server.url)
    acct = api.new_account()
    root = api.roots(acct)[2]
    live = [api.put_file(acct, root, encrypt_file(plaintext(200_000, seed=i)), "live%d" % i)
            for i in range(4)]
    live_bytes = sum(n["s"] for n in live)
    garbage = peak = 0
    rounds = 0
    started = time.monotonic()
    while time.monotonic() - started < 6 * TTL:
        rounds += 1
        # abandoned: one chunk of a 1 MiB upload, then silence
        url = api.upload_url(acct, 1 << 20)
        assert api.post_chunk(url, 0, bytes(CHUNK1)).status_code == 200
        # superseded: a whole upload whose token no `p` ever uses
        api.upload_bytes(acct, encrypt_file(plaintext(400_000, seed=rounds)).ciphertext)
        # deleted: a file put and deleted
        gone = api.put_file(acct, root, encrypt_file(plaintext(300_000, seed=rounds)), "tmp")
        assert api.call({"a": "d", "n": gone["h"]}, sid=acct.sid) == 0
        # expired by the server mid-upload
        url = api.upload_url(acct, 1 << 20)
        assert api.post_chunk(url, 0, bytes(CHUNK1)).status_code == 200
        server.faults([{"where": "upload", "expire": True, "count": 1}])
        assert api.post_chunk(url, CHUNK1, bytes(2 * CHUNK1)).content == b"-8"
        garbage += CHUNK1 + 400_000 + 300_000 + CHUNK1
        peak = max(peak, disk_bytes(server.data_dir))
        time.sleep(0.2)
    # without housekeeping every round's garbage would still be there
    assert peak < live_bytes + garbage / 2, (peak, live_bytes, garbage, rounds)
    slack = 64 << 10     # block rounding of a few files
    wait_until(lambda: disk_bytes(server.data_dir) <= live_bytes + slack,
               timeout=2 * TTL + 10 * SWEEP + 5, what="the garbage to go")
    stats = server.stats()
    assert stats["housekeeping_uploads_expired"] >= rounds
    assert stats["housekeeping_completions_dropped"] >= rounds
    # the live files are whole
    for node in live:
        info = api.call({"a": "g", "g": 1, "n": node["h"]}, sid=acct.sid)
        assert len(api.download(info["g"])) == node["s"]
    print("housekeeping: %d rounds, %.1f MiB garbage made, peak %.2f MiB for %.2f MiB live"
          % (rounds, garbage / 2 ** 20, peak / 2 ** 20, live_bytes / 2 ** 20))


@pytest.mark.log_ok("unknown completion token")
def test_what_housekeeping_removed_answers_like_an_expired_resource(server):
    api = Api(server.url)
    acct = api.new_account()
    url = api.upload_url(acct, 300_000)
    assert api.post_chunk(url, 0, bytes(CHUNK1)).status_code == 200
    enc = encrypt_file(plaintext(1000, seed=5))
    token = api.upload_bytes(acct, enc.ciphertext)
    time.sleep(max(IDLE, TTL) + 4 * SWEEP)
    assert api.post_chunk(url, CHUNK1, bytes(CHUNK1)).content == b"-8"
    item = Api.file_item(acct, token, enc, "late")
    assert api.call({"a": "p", "t": api.roots(acct)[2], "n": [item]}, sid=acct.sid) == -2
    assert "housekeeping:" in server.log_path.read_text()


def test_an_upload_that_keeps_receiving_data_is_never_expired(server):
    api = Api(server.url)
    acct = api.new_account()
    enc = encrypt_file(plaintext(6 * CHUNK1 * 2, seed=9))
    url = api.upload_url(acct, len(enc.ciphertext))
    from megafs import chunks
    spans = list(chunks.spans(len(enc.ciphertext)))
    token = b""
    for offset, length in spans:       # slower than the idle time in all, faster per POST
        piece = enc.ciphertext[offset:offset + length]
        resp = api.post_chunk(url, offset, piece, checksum_b64(piece))
        assert resp.status_code == 200 and resp.content != b"-8"
        token = resp.content
        time.sleep(IDLE * 0.6)
    assert len(token) == 36 and len(spans) * IDLE * 0.6 > 2 * IDLE
    node = api.call({"a": "p", "t": api.roots(acct)[2],
                     "n": [Api.file_item(acct, token.decode(), enc, "slow")]}, sid=acct.sid)
    assert node["f"][0]["s"] == len(enc.ciphertext)
