"""Server state across restarts and crashes (kill -9), start-up recovery, and storage quota."""
from __future__ import annotations

import json
import os
import signal

import pytest
import requests

from megafs import chunks
from helpers.rawapi import Api, checksum_b64, decrypt_and_verify, encrypt_file, plaintext
from helpers.server import ServerProcess


@pytest.fixture
def srv(tmp_path):
    with ServerProcess(tmp_path / "server-data") as server:
        yield server
    text = server.log_path.read_text(errors="replace")
    assert " ERROR " not in text and "Traceback" not in text, text[-2000:]


def test_restart_keeps_accounts_sessions_nodes_contents_links_and_packets(srv):
    api = Api(srv.url)
    acct = api.new_account()
    first_sn = api.call({"a": "f"}, sid=acct.sid)["sn"]
    root = api.roots(acct)[2]
    folder = api.mkdir(acct, root, "kept")
    enc = encrypt_file(plaintext(400_000, seed=11))
    node = api.put_file(acct, folder["h"], enc, "kept.bin")
    ph = api.call({"a": "l", "n": node["h"]}, sid=acct.sid)
    url = api.call({"a": "g", "g": 1, "n": node["h"]}, sid=acct.sid)["g"]
    listing = api.call({"a": "f"}, sid=acct.sid)
    packets = api.http.post("%ssc?sn=%s&sid=%s" % (srv.url, first_sn, acct.sid)).json()
    api.close()

    srv.restart()
    api = Api(srv.url)
    assert api.call({"a": "ug"}, sid=acct.sid)["u"] == acct.uh       # the session survived
    assert api.call({"a": "f"}, sid=acct.sid) == listing
    assert api.call({"a": "g", "p": ph})["s"] == 400_000
    assert decrypt_and_verify(enc.key, api.download(url)) == enc.plaintext
    again = api.http.post("%ssc?sn=%s&sid=%s" % (srv.url, first_sn, acct.sid)).json()
    assert again == packets
    assert api.call({"a": "us", "user": acct.uh})["tsid"] == acct.sid
    # and the server keeps working on top of the old state
    api.mkdir(acct, root, "after restart")
    assert len(api.call({"a": "f"}, sid=acct.sid)["f"]) == len(listing["f"]) + 1


def test_the_replay_cache_survives_a_restart(srv):
    api = Api(srv.url)
    acct = api.new_account()
    body = json.dumps([{"a": "p", "t": api.roots(acct)[2], "n": [Api.folder_item(acct, "x")]}])
    first = api.post_cs(body, sid=acct.sid, rid=4242).content
    srv.restart()
    api = Api(srv.url)
    assert api.post_cs(body, sid=acct.sid, rid=4242).content == first
    assert sum(1 for n in api.call({"a": "f"}, sid=acct.sid)["f"] if n["t"] == 1) == 1


def test_kill_9_mid_upload_leaves_no_node_and_the_upload_resumes(srv):
    api = Api(srv.url)
    acct = api.new_account()
    root = api.roots(acct)[2]
    enc = encrypt_file(plaintext(2_000_000, seed=12))
    url = api.upload_url(acct, len(enc.ciphertext))
    spans = list(chunks.spans(len(enc.ciphertext)))
    for offset, length in spans[:3]:
        piece = enc.ciphertext[offset:offset + length]
        assert api.post_chunk(url, offset, piece, checksum_b64(piece)).content == b""
    before = api.call({"a": "f"}, sid=acct.sid)["f"]
    assert srv.stop(signal.SIGKILL) == -signal.SIGKILL
    srv.start()
    api = Api(srv.url)
    assert api.call({"a": "f"}, sid=acct.sid)["f"] == before        # no half-visible node
    token = b""
    for offset, length in spans[3:]:
        piece = enc.ciphertext[offset:offset + length]
        token = api.post_chunk(url, offset, piece, checksum_b64(piece)).content
    assert len(token) == 36
    node = api.call({"a": "p", "t": root, "n": [Api.file_item(acct, token.decode(), enc, "r")]},
                    sid=acct.sid)["f"][0]
    got = api.download(api.call({"a": "g", "g": 1, "n": node["h"]}, sid=acct.sid)["g"])
    assert decrypt_and_verify(enc.key, got) == enc.plaintext


def test_kill_9_between_upload_and_p_keeps_the_token_usable(srv):
    api = Api(srv.url)
    acct = api.new_account()
    enc = encrypt_file(plaintext(300_000, seed=13))
    token = api.upload_bytes(acct, enc.ciphertext)
    srv.stop(signal.SIGKILL)
    srv.start()
    api = Api(srv.url)
    assert [n for n in api.call({"a": "f"}, sid=acct.sid)["f"] if n["t"] == 0] == []
    node = api.call({"a": "p", "t": api.roots(acct)[2],
                     "n": [Api.file_item(acct, token, enc, "late")]}, sid=acct.sid)["f"][0]
    got = api.download(api.call({"a": "g", "g": 1, "n": node["h"]}, sid=acct.sid)["g"])
    assert decrypt_and_verify(enc.key, got) == enc.plaintext


def test_recovery_finishes_an_interrupted_rename_and_removes_orphans(srv):
    api = Api(srv.url)
    acct = api.new_account()
    enc = encrypt_file(plaintext(200_000, seed=14))
    url = api.upload_url(acct, len(enc.ciphertext))
    token = b""
    for offset, length in chunks.spans(len(enc.ciphertext)):
        token = api.post_chunk(url, offset, enc.ciphertext[offset:offset + length]).content
    srv.stop()
    blobs = srv.data_dir / "blobs"
    uploads = srv.data_dir / "uploads"
    (blob,) = list(blobs.iterdir())
    # the state a crash leaves between committing the completion and renaming the file
    os.replace(blob, uploads / (url.rsplit("/", 1)[1] + ".part"))
    (blobs / "AAAAAAAAAAAAAAAAAAAAAA").write_bytes(b"orphan")
    (blobs / "junk").write_bytes(b"junk")
    (uploads / "stale.part").write_bytes(b"stale")
    srv.start()
    assert sorted(p.name for p in blobs.iterdir()) == [blob.name]
    assert list(uploads.iterdir()) == []
    api = Api(srv.url)
    node = api.call({"a": "p", "t": api.roots(acct)[2],
                     "n": [Api.file_item(acct, token.decode(), enc, "rec")]},
                    sid=acct.sid)["f"][0]
    got = api.download(api.call({"a": "g", "g": 1, "n": node["h"]}, sid=acct.sid)["g"])
    assert decrypt_and_verify(enc.key, got) == enc.plaintext


def test_deleting_files_deletes_their_blobs(srv):
    api = Api(srv.url)
    acct = api.new_account()
    node = api.put_file(acct, api.roots(acct)[2], encrypt_file(plaintext(5000)), "gone")
    assert len(list((srv.data_dir / "blobs").iterdir())) == 1
    assert api.call({"a": "d", "n": node["h"]}, sid=acct.sid) == 0
    assert list((srv.data_dir / "blobs").iterdir()) == []


def test_quota_from_the_command_line(tmp_path):
    with ServerProcess(tmp_path / "data", extra_args=["--quota", "1M"]) as server:
        api = Api(server.url)
        acct = api.new_account()
        assert api.call({"a": "uq"}, sid=acct.sid)["mstrg"] == 1 << 20
        assert api.call({"a": "u", "s": (1 << 20) + 1}, sid=acct.sid) == -17
        assert isinstance(api.call({"a": "u", "s": 1 << 20}, sid=acct.sid), dict)


def test_quota_is_enforced_on_u_and_p_and_freed_by_delete(srv):
    api = Api(srv.url)
    acct = api.new_account()
    root = api.roots(acct)[2]
    first = api.put_file(acct, root, encrypt_file(plaintext(600_000, seed=1)), "one")
    enc = encrypt_file(plaintext(600_000, seed=2))
    token = api.upload_bytes(acct, enc.ciphertext)      # fits while the quota is large
    assert srv.control("quota", {"bytes": 1_000_000})["ok"]
    assert api.call({"a": "uq"}, sid=acct.sid)["mstrg"] == 1_000_000
    assert api.call({"a": "u", "s": 400_001}, sid=acct.sid) == -17
    assert isinstance(api.call({"a": "u", "s": 400_000}, sid=acct.sid), dict)
    item = Api.file_item(acct, token, enc, "two")
    assert api.call({"a": "p", "t": root, "n": [item]}, sid=acct.sid) == -17
    assert api.call({"a": "d", "n": first["h"]}, sid=acct.sid) == 0   # frees 600 000 bytes
    assert api.call({"a": "p", "t": root, "n": [item]}, sid=acct.sid)["f"][0]["s"] == 600_000
    assert api.call({"a": "uq"}, sid=acct.sid)["cstrg"] == 600_000


@pytest.mark.log_ok("control endpoint:")
def test_quota_for_one_user_via_the_control_endpoint(srv):
    api = Api(srv.url)
    small, large = api.new_account(), api.new_account()
    assert srv.control("quota", {"bytes": 10, "user": small.uh})["ok"]
    assert api.call({"a": "u", "s": 11}, sid=small.sid) == -17
    assert isinstance(api.call({"a": "u", "s": 11}, sid=large.sid), dict)
    resp = requests.post(srv.url + "_megafs/quota", data=json.dumps({"bytes": -1}), timeout=10,
                         headers=srv.control_headers())
    assert resp.status_code == 400 and "error" in resp.json()
    resp = requests.post(srv.url + "_megafs/quota",
                         data=json.dumps({"bytes": 1, "user": "AAAAAAAAAAA"}), timeout=10,
                         headers=srv.control_headers())
    assert resp.status_code == 400


def test_restart_keeps_per_user_quota(srv):
    api = Api(srv.url)
    acct = api.new_account()
    srv.control("quota", {"bytes": 10, "user": acct.uh})
    srv.restart()
    api = Api(srv.url)
    assert api.call({"a": "uq"}, sid=acct.sid)["mstrg"] == 10
