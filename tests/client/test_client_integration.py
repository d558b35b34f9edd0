"""MegaClient against the real local server (``megafs serve``) over HTTP, with its fault
injection: sessions, uploads, downloads, nodes, links, polling, and recovery from every
retryable fault with byte-identical results; permanent faults give the clear error."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import time

import pytest
import requests

from megafs import chunks, crypto
from megafs.api import links
from megafs.api.client import MegaClient, PutItem
from megafs.errors import IntegrityError, MegaError, SessionError, TransportError, UploadFailed
from megafs.api.session import read_session_file, session_path, write_session_file
from megafs.retry import RetryPolicy
from megafs.api.upload import UploadCancelled
from helpers.client import fast_retry

MIB = 1 << 20


@pytest.fixture
def state(tmp_path):
    return str(tmp_path / "state")


@pytest.fixture
def root(client):
    return client.fetch().roots()[2]


def make_file(tmp_path, size: int, name: str | None = None) -> str:
    path = tmp_path / (name or "f%d.bin" % size)
    with open(path, "wb") as handle:
        handle.write(os.urandom(size))
    return str(path)


def sha(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def publish(client: MegaClient, root: str, path: str, name: str | None = None,
            **upload_kw) -> tuple[str, dict]:
    uploaded = client.upload(path, **upload_kw)
    assert uploaded.size == os.path.getsize(path)
    node = client.put_files([PutItem(root, uploaded, {"n": name or os.path.basename(path)})])[0]
    assert isinstance(node, dict), node
    ph = client.export([node["h"]])[0]
    assert isinstance(ph, str), ph
    return client.link_for(node, ph), node


def roundtrip(client, root, tmp_path, path: str, **upload_kw) -> str:
    link, _ = publish(client, root, path, **upload_kw)
    out = str(tmp_path / ("out-" + os.path.basename(path)))
    client.download(link, out)
    assert sha(out) == sha(path)
    return link


def stats(srv) -> dict:
    resp = requests.get(srv.url + "_megafs/stats", timeout=10)
    resp.raise_for_status()
    return resp.json()


def fired(srv) -> int:
    """How many faults (delays included) the server has carried out so far."""
    counters = stats(srv)
    return counters.get("faults_fired", 0) + counters.get("faults_delay", 0)


# --- sessions ----------------------------------------------------------------------------------
def test_session_file_created_private_and_resumed(srv, state):
    with MegaClient.open(srv.url, state_dir=state, retry=fast_retry()) as first:
        path = first.session.path
        uh, mk = first.session.user_handle, first.session.master_key
        roots = first.fetch().roots()
    assert path == session_path(srv.url, state)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert set(roots) == {2, 3, 4}
    with MegaClient.open(srv.url, state_dir=state, retry=fast_retry()) as again:
        assert again.session.user_handle == uh and again.session.master_key == mk
        assert again.fetch().roots() == roots


def test_rejected_sid_logs_in_again_to_the_same_account(srv, state, tmp_path):
    with MegaClient.open(srv.url, state_dir=state, retry=fast_retry()) as c:
        path, uh = c.session.path, c.session.user_handle
        roots = c.fetch().roots()
    session = read_session_file(path, srv.url)
    session.sid = crypto.b64encode(os.urandom(16) + uh.encode() + os.urandom(16))
    write_session_file(session, path)
    with MegaClient.open(srv.url, state_dir=state, retry=fast_retry()) as c:
        assert c.fetch().roots() == roots          # -15, then `us` again, then the retry
        assert c.session.user_handle == uh
    assert read_session_file(path, srv.url).sid != session.sid


def test_injected_esid_is_recovered(client, srv, root):
    srv.faults([{"where": "cs", "command": "f", "error": -15, "count": 1}])
    assert client.fetch().roots()[2] == root


def test_session_file_for_another_api_is_refused(srv, state, tmp_path):
    with MegaClient.open(srv.url, state_dir=state, retry=fast_retry()) as c:
        path = c.session.path
    with pytest.raises(SessionError, match="was made for API"):
        MegaClient.open("http://127.0.0.1:1/", session_file=path)
    before = open(path).read()
    with open(path, "w") as handle:
        handle.write("garbage{")
    with pytest.raises(SessionError, match="corrupt"):
        MegaClient.open(srv.url, state_dir=state)
    with open(path, "w") as handle:
        handle.write(before)
    os.chmod(path, 0o640)
    with pytest.raises(SessionError, match="group or others"):
        MegaClient.open(srv.url, state_dir=state)


def test_explicit_session_file_takes_its_api(srv, tmp_path, monkeypatch):
    monkeypatch.delenv("MEGAFS_API", raising=False)
    path = str(tmp_path / "private" / "s.json")
    with MegaClient.open(srv.url, session_file=path, retry=fast_retry()) as c:
        uh = c.session.user_handle
    with MegaClient.open(session_file=path, retry=fast_retry()) as c:
        assert c.api == srv.url and c.session.user_handle == uh


def test_hashcash_on_login_is_solved(srv, state):
    solved = stats(srv).get("hashcash_solved", 0)
    srv.faults([{"where": "cs", "hashcash": 255, "count": 2}])
    with MegaClient.open(srv.url, state_dir=state, retry=fast_retry()) as c:
        assert 2 in c.fetch().roots()
    assert stats(srv).get("hashcash_solved", 0) >= solved + 2


# --- round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 16, 131071, 131072, 131073, 3 * MIB + 5])
def test_roundtrip_sizes(client, root, tmp_path, size):
    roundtrip(client, root, tmp_path, make_file(tmp_path, size))


def test_exact_chunk_boundaries(client, root, tmp_path):
    boundary = 5632 * 1024  # the 9th chunk boundary (first of the 1 MiB chunks + 1 MiB)
    assert chunks.is_boundary(boundary)
    roundtrip(client, root, tmp_path, make_file(tmp_path, boundary))


def test_parallel_upload_is_bounded_and_reports_progress(srv, account, root, tmp_path):
    path = make_file(tmp_path, 6 * MIB + 3)
    seen = []
    with MegaClient.open(srv.url, state_dir=account, connections=3, retry=fast_retry()) as c:
        roundtrip(c, root, tmp_path, path, progress=seen.append)
        assert 1 <= c.uploader.max_in_flight <= 3
    assert seen and max(seen) == 6 * MIB + 3


def test_cancel_stops_an_upload(client, tmp_path):
    path = make_file(tmp_path, 4 * MIB)
    cancel = threading.Event()
    with pytest.raises(UploadCancelled):
        client.upload(path, progress=lambda done: cancel.set(), cancel=cancel)


def test_read_range_any_offset(client, root, tmp_path):
    path = make_file(tmp_path, 2 * MIB + 100)
    data = open(path, "rb").read()
    _, node = publish(client, root, path)
    key = client.file_key(node)
    info = client.open_download(handle=node["h"], key=client.node_key(node))
    assert info.size == len(data) and info.attrs["n"] == os.path.basename(path)
    for offset, length in [(0, 1), (5, 33), (131071, 2), (MIB - 7, 300000), (len(data) - 1, 1)]:
        assert client.read_range(info.url, key, offset, length) == data[offset:offset + length]
    assert client.read_range(info.url, key, 10, 0) == b""


# --- node operations ------------------------------------------------------------------------------
def test_node_operations(client, root, tmp_path):
    folder = client.mkdir(root, "dir", {"t": 5})
    assert folder["t"] == 1 and folder["p"] == root
    uploaded = client.upload(make_file(tmp_path, 100))
    nodes = client.put_files([PutItem(folder["h"], uploaded, {"n": "a"}),
                              PutItem(root, client.upload(make_file(tmp_path, 7)), {"n": "b"}),
                              PutItem("nosuchhd", client.upload(make_file(tmp_path, 9)),
                                      {"n": "c"})])
    assert isinstance(nodes[0], dict) and nodes[0]["p"] == folder["h"]
    assert isinstance(nodes[1], dict) and nodes[1]["p"] == root
    assert isinstance(nodes[2], MegaError)
    a = nodes[0]
    key = client.node_key(a)
    client.set_attrs(a["h"], key, {"n": "renamed"})
    client.move(a["h"], root)
    tree = {n["h"]: n for n in client.fetch().nodes}
    assert tree[a["h"]]["p"] == root
    assert crypto.decrypt_attr(crypto.b64decode(tree[a["h"]]["a"]), key) == {"n": "renamed"}
    ph1 = client.export([a["h"]])[0]
    ph2, missing = client.export([a["h"], "nosuchhd"])
    assert ph1 == ph2 and isinstance(missing, MegaError)
    assert client.fetch().public[a["h"]] == ph1
    client.delete(folder["h"])
    with pytest.raises(MegaError) as info:
        client.delete(folder["h"])
    assert info.value.code == -9
    used, total = client.quota()
    assert 0 < used <= total


def test_poll_sees_our_changes_tagged_with_our_request_id(client, root):
    sn = client.fetch().sn
    client.mkdir(root, "polled")
    packets, new_sn = client.poll(sn, timeout=10)
    assert new_sn != sn
    assert any(p.get("a") == "t" and p.get("i") == client.request_id for p in packets)
    assert client.poll(new_sn, timeout=0.2) == ([], new_sn)


# --- faults: command channel ----------------------------------------------------------------------
@pytest.mark.parametrize("rule", [
    {"where": "cs", "error": -3, "count": 2},
    {"where": "cs", "error": -4, "count": 1},
    {"where": "cs", "http": 500, "count": 2},
    {"where": "cs", "http": 503, "count": 1},
    {"where": "cs", "drop": True, "count": 1},
    {"where": "cs", "delay": 0.3, "count": 2},
], ids=["batch-3", "batch-4", "http500", "http503", "drop", "delay"])
def test_command_channel_faults_recover(client, srv, root, tmp_path, rule):
    path = make_file(tmp_path, 70000)
    before = fired(srv)
    srv.faults([rule])
    roundtrip(client, root, tmp_path, path)
    assert fired(srv) > before


def test_per_command_eagain_is_resent(client, srv, root, tmp_path):
    srv.faults([{"where": "cs", "command": "p", "error": -3, "level": "command", "count": 2}])
    link, _ = publish(client, root, make_file(tmp_path, 10))
    assert links.parse_link(link)


def test_retried_p_under_same_id_does_not_duplicate(client, srv, root, tmp_path):
    """The first `p` is held by the server past the client's read timeout; the client resends
    the identical body under the same id, which is applied; the held one is then answered from
    the replay cache instead of creating a second node."""
    uploaded = client.upload(make_file(tmp_path, 1000))
    replays = stats(srv).get("replays", 0)
    client.transport.timeout = (5.0, 0.4)
    srv.faults([{"where": "cs", "command": "p", "delay": 1.5, "count": 1}])
    node = client.put_files([PutItem(root, uploaded, {"n": "once"})])[0]
    assert isinstance(node, dict)
    deadline = time.monotonic() + 30
    while stats(srv).get("replays", 0) == replays and time.monotonic() < deadline:
        time.sleep(0.05)   # wait for the held request to be answered, not an assertion
    assert stats(srv).get("replays", 0) > replays
    client.transport.timeout = (10.0, 120.0)
    names = [n for n in client.fetch().nodes if n.get("t") == 0 and
             crypto.decrypt_attr(crypto.b64decode(n["a"]), client.node_key(n)).get("n") == "once"]
    assert [n["h"] for n in names] == [node["h"]]


def test_permanent_command_error(client, srv, root, tmp_path):
    uploaded = client.upload(make_file(tmp_path, 10))
    srv.faults([{"where": "cs", "command": "p", "error": -2, "level": "command", "count": 1}])
    result = client.put_files([PutItem(root, uploaded, {"n": "x"})])[0]
    assert isinstance(result, MegaError) and result.code == -2
    assert "EARGS" in str(result)


def test_endless_eagain_gives_up(srv, account):
    with MegaClient.open(srv.url, state_dir=account, retry=fast_retry()) as c:
        c.transport.retry = RetryPolicy(initial=0.02, cap=0.1, give_up_after=0.5)
        srv.faults([{"where": "cs", "error": -3}])
        with pytest.raises(MegaError) as info:
            c.fetch()
        assert info.value.code == -3


# --- faults: uploads -----------------------------------------------------------------------------
@pytest.mark.parametrize("rule", [
    {"where": "upload", "error": -3, "count": 2},
    {"where": "upload", "error": -4, "count": 1},
    {"where": "upload", "http": 503, "count": 2},
    {"where": "upload", "http": 500, "count": 1},
    {"where": "upload", "http": 404, "count": 1},
    {"where": "upload", "http": 403, "count": 1},
    {"where": "upload", "error": -14, "count": 1},
    {"where": "upload", "drop": True, "count": 2},
    {"where": "upload", "expire": True, "count": 1},
    {"where": "upload", "delay": 0.3, "count": 2},
    {"where": "upload", "error": -3, "rate": 0.3, "seed": 7},
], ids=["-3", "-4", "503", "500", "404", "403", "-14", "drop", "expire", "delay", "rate"])
def test_upload_faults_recover(client, srv, root, tmp_path, rule):
    path = make_file(tmp_path, 2 * MIB + 17)
    before = fired(srv)
    srv.faults([rule])
    link, _ = publish(client, root, path)
    srv.clear_faults()
    assert fired(srv) > before
    out = str(tmp_path / "out")
    client.download(link, out)
    assert sha(out) == sha(path)


def test_upload_over_quota_is_a_clear_error(client, srv, root, tmp_path):
    srv.control("quota", {"bytes": 1000})
    try:
        try:  # the server may refuse at `u` or only at `p`
            uploaded = client.upload(make_file(tmp_path, 5000))
            error = client.put_files([PutItem(root, uploaded, {"n": "big"})])[0]
        except MegaError as exc:
            error = exc
        assert isinstance(error, MegaError)
        assert error.code == -17 and "EOVERQUOTA" in str(error)
    finally:
        srv.control("quota", {"bytes": 1 << 40})


def test_upload_that_keeps_failing_gives_up(client, srv, tmp_path):
    client.uploader.max_restarts = 2
    srv.faults([{"where": "upload", "error": -4}])
    with pytest.raises(UploadFailed, match="after 3 attempts"):
        client.upload(make_file(tmp_path, 100))


# --- faults: downloads ----------------------------------------------------------------------------
@pytest.mark.parametrize("rule", [
    {"where": "download", "http": 503, "count": 2},
    {"where": "download", "error": -3, "count": 1},
    {"where": "download", "drop": True, "count": 2},
    {"where": "download", "truncate": True, "count": 2},
    {"where": "download", "http": 404, "count": 1},
    {"where": "download", "delay": 0.3, "count": 1},
], ids=["503", "-3", "drop", "truncate", "404", "delay"])
def test_download_faults_recover(client, srv, root, tmp_path, rule):
    path = make_file(tmp_path, 2 * MIB + 1)
    link, _ = publish(client, root, path)
    before = fired(srv)
    srv.faults([rule])
    out = str(tmp_path / "out")
    client.download(link, out)
    assert sha(out) == sha(path)
    assert fired(srv) > before


def test_tampered_download_fails_mac_and_leaves_no_file(client, srv, root, tmp_path):
    path = make_file(tmp_path, 300000)
    link, _ = publish(client, root, path)
    srv.faults([{"where": "download", "tamper": True}])
    out = tmp_path / "dl" / "out"
    out.parent.mkdir()
    with pytest.raises(IntegrityError, match="MAC mismatch"):
        client.download(link, str(out))
    assert os.listdir(out.parent) == []


def test_endless_truncation_is_an_error_and_leaves_no_file(client, srv, root, tmp_path):
    path = make_file(tmp_path, 1000)
    link, _ = publish(client, root, path)
    client.downloader.retry = RetryPolicy(initial=0.02, cap=0.1, give_up_after=0.5)
    srv.faults([{"where": "download", "truncate": True}])
    out = tmp_path / "dl"
    out.mkdir()
    with pytest.raises((IntegrityError, TransportError)):
        client.download(link, str(out / "x"))
    assert os.listdir(out) == []


def test_wrong_key_and_missing_link(client, root, tmp_path):
    link, _ = publish(client, root, make_file(tmp_path, 100))
    parsed = links.parse_link(link)
    wrong = links.format_link(parsed.handle, crypto.new_file_key().pack())
    with pytest.raises(IntegrityError):
        client.download(wrong, str(tmp_path / "w"))
    missing = links.format_link("AAAAAAAA", parsed.key)
    with pytest.raises(MegaError) as info:
        client.download(missing, str(tmp_path / "m"))
    assert info.value.code == -9
    assert not (tmp_path / "w").exists() and not (tmp_path / "m").exists()


def test_public_client_needs_no_account(srv, client, root, tmp_path):
    path = make_file(tmp_path, 5000)
    link, _ = publish(client, root, path)
    with MegaClient.public(srv.url, retry=fast_retry()) as anon:
        out = anon.download(link, str(tmp_path / "anon"))
    assert sha(out) == sha(path)


def test_no_secrets_in_debug_logs(srv, account, root, tmp_path, caplog):
    caplog.set_level("DEBUG")
    srv.faults([{"where": "cs", "error": -3, "count": 1},
                {"where": "upload", "error": -3, "count": 1}])
    with MegaClient.open(srv.url, state_dir=account, retry=fast_retry()) as c:
        link, _ = publish(c, root, make_file(tmp_path, 10))
        secrets_ = [c.session.sid, crypto.b64encode(c.session.master_key), link.split("#")[1]]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "retry" in text
    for secret in secrets_:
        assert secret not in text
    json.dumps(text)


# --- faults: sc ---------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", [
    {"where": "sc", "command": "sc", "error": -3, "count": 2},
    {"where": "sc", "command": "sc", "http": 503, "count": 1},
    {"where": "sc", "command": "sc", "drop": True, "count": 1},
], ids=["-3", "503", "drop"])
def test_poll_faults_recover(client, srv, root, rule):
    sn = client.fetch().sn
    client.mkdir(root, "sc-fault")
    srv.faults([rule])
    packets, new_sn = client.poll(sn, timeout=10)
    assert any(p.get("a") == "t" for p in packets) and new_sn != sn


@pytest.mark.parametrize("code", [-6, -9])
def test_poll_permanent_errors(client, srv, code):
    sn = client.fetch().sn
    srv.faults([{"where": "sc", "command": "sc", "error": code, "count": 1}])
    with pytest.raises(MegaError) as info:
        client.poll(sn, timeout=5)
    assert info.value.code == code
