"""Client pieces that need no server: checksums, token and reply parsing, offsets past 4 GiB,
the retry policy, URL handling and the session file rules."""
from __future__ import annotations

import json
import logging
import os
import stat
import struct
import threading
import time

import pytest
from Crypto.Cipher import AES

from megafs import chunks, crypto
from megafs.api.client import MegaClient
from megafs.api.commands import parse_g_reply
from megafs.api.download import range_url
from megafs.errors import IntegrityError, MegaError, ProtocolError, SessionError, TransportError
from megafs.api.session import (Session, archive_session_file, read_session_file, session_path,
                                write_session_file)
from megafs.api.http import redact_url
from megafs.api.transport import Transport
from megafs.config import normalise_api, resolve_api
from megafs.retry import Backoff, RetryPolicy
from megafs.api.upload import (encrypt_span, parse_post_reply, post_url, upload_checksum)

GIB = 1 << 30


def naive_checksum(data: bytes) -> bytes:
    out = bytearray(12)
    for j, byte in enumerate(data):
        out[j % 12] ^= byte
    return bytes(out)


@pytest.mark.parametrize("size", [0, 1, 11, 12, 13, 23, 24, 25, 36, 37, 1000, 4097,
                                  131072, 131073, 1048576 + 5])
def test_upload_checksum_matches_definition(size):
    data = os.urandom(size)
    expected = naive_checksum(data)
    assert upload_checksum(data) == expected
    assert upload_checksum(memoryview(data)) == expected
    assert upload_checksum(bytearray(data)) == expected


def test_parse_post_reply():
    assert parse_post_reply(b"") == ("more", None)
    assert parse_post_reply(b"0") == ("more", None)
    assert parse_post_reply(b"-3") == ("error", -3)
    assert parse_post_reply(b"-14\n") == ("error", -14)
    raw = bytes(range(35)) + b"\x01"
    kind, token = parse_post_reply(raw)
    assert kind == "token" and len(token) == 48 and crypto.b64decode(token) == raw
    assert parse_post_reply(b"x" * 35) == ("invalid", 35)
    assert parse_post_reply(b"<html>oops</html>") == ("invalid", 17)


def test_offsets_past_4_gib():
    size = 5 * GIB + 12345
    spans = list(chunks.groups(size, chunks.MIB))
    assert spans[0][0] == 0
    assert sum(length for _, length in spans) == size
    for (off, length), (nxt, _) in zip(spans, spans[1:]):
        assert off + length == nxt and chunks.is_boundary(nxt)
        assert length <= chunks.MIB
    last_off, last_len = spans[-1]
    assert last_off > 4 * GIB and last_off + last_len == size
    url = post_url("http://h/ul/TOKEN", last_off, bytes(12))
    assert url == "http://h/ul/TOKEN/%d?c=AAAAAAAAAAAAAAAA" % last_off
    assert range_url("http://h/dl/x", last_off, last_len) == \
        "http://h/dl/x/%d-%d" % (last_off, size - 1)


def test_ctr_counter_is_64_bit_at_large_offsets():
    key, nonce = os.urandom(16), os.urandom(8)
    offset = (1 << 36) * 16 + 32   # block index needs more than 32 bits
    data = os.urandom(40)
    ecb = AES.new(key, AES.MODE_ECB)
    stream = b"".join(ecb.encrypt(nonce + struct.pack(">Q", offset // 16 + i)) for i in range(3))
    expected = bytes(a ^ b for a, b in zip(data, stream))
    assert crypto.ctr_crypt(key, nonce, offset, data) == expected
    # and from an unaligned offset inside the same blocks
    assert crypto.ctr_crypt(key, nonce, offset + 5, data[5:]) == expected[5:]


def test_encrypt_span_matches_whole_file_macs():
    key = crypto.new_file_key()
    data = os.urandom(3 * chunks.MIB + 777)
    acc = crypto.MacAccumulator(key.aes_key)
    cipher = b""
    for off, length in chunks.groups(len(data), chunks.MIB):
        ct, macs = encrypt_span(key, off, data[off:off + length])
        cipher += ct
        for mac_off, mac in macs:
            acc.add(mac_off, mac)
    assert cipher == crypto.ctr_crypt(key.aes_key, key.nonce, 0, data)
    assert acc.meta_mac(len(data)) == crypto.file_meta_mac(key.aes_key, key.nonce, data)


def test_zero_size_meta_mac_is_zero():
    key = crypto.new_file_key()
    assert crypto.MacAccumulator(key.aes_key).meta_mac(0) == bytes(8)
    assert list(chunks.groups(0, chunks.MIB)) == [(0, 0)]


# --- retry policy ------------------------------------------------------------------------------
def test_backoff_delays_are_capped_with_bounded_jitter():
    policy = RetryPolicy(initial=0.1, cap=2.0)
    for attempt in range(1, 30):
        base = min(2.0, 0.1 * 2 ** (attempt - 1))
        assert policy.base(attempt) == pytest.approx(base)
        for _ in range(20):
            assert base <= policy.delay(attempt) <= base * 1.5
    assert policy.base(1000) == 2.0


def test_backoff_log_levels_rise():
    policy = RetryPolicy()
    levels = [policy.level(n) for n in range(1, 10)]
    assert levels[0] == logging.DEBUG
    assert levels[-1] == logging.WARNING
    assert levels == sorted(levels)


def test_backoff_gives_up_with_the_last_error():
    backoff = Backoff(RetryPolicy(initial=0.01, give_up_after=0.0), "thing")
    with pytest.raises(MegaError) as info:
        backoff.wait("busy", MegaError(-3))
    assert info.value.code == -3
    with pytest.raises(TransportError, match="thing failed after 1 attempt"):
        Backoff(RetryPolicy(give_up_after=0.0), "thing").wait("HTTP 503")


def test_backoff_cancel():
    cancel = threading.Event()
    cancel.set()
    from megafs.errors import Cancelled
    with pytest.raises(Cancelled):
        Backoff(RetryPolicy(initial=5.0, give_up_after=60), "x", cancel).wait("busy")


def test_backoff_clock_starts_at_the_first_failure():
    """An operation that ran longer than the retry time before its first failure still gets
    the whole retry time (an upload restart after a long transfer used to fail at once)."""
    backoff = Backoff(RetryPolicy(initial=0.01, cap=0.01, give_up_after=0.2), "long upload")
    time.sleep(0.3)
    backoff.wait("first failure")                 # no TransportError: the streak just began
    assert backoff.attempt == 1 and backoff.remaining() > 0.1
    time.sleep(0.25)
    with pytest.raises(TransportError):
        backoff.wait("still failing")
    backoff.reset()                               # a success in between: a new streak
    backoff.wait("a later failure")
    assert backoff.attempt == 1


def test_slow_down_starts_near_a_second_and_doubles():
    policy = RetryPolicy()
    assert policy.base(1, slow=True) == 1.0 and policy.base(2, slow=True) == 2.0
    assert policy.base(1) == pytest.approx(0.1)
    assert RetryPolicy(cap=0.3).base(1, slow=True) == 0.3       # the cap bounds both
    backoff = Backoff(policy, "x")
    assert backoff.next_delay() < 0.2
    assert 1.0 <= backoff.next_delay(slow=True) <= 1.5          # first slow-down of the streak
    assert 2.0 <= backoff.next_delay(slow=True) <= 3.0


def test_retry_time_from_env(monkeypatch):
    monkeypatch.setenv("MEGAFS_RETRY_SECONDS", "7.5")
    assert RetryPolicy.from_env().give_up_after == 7.5


# --- URLs ------------------------------------------------------------------------------------
def test_normalise_and_resolve_api(monkeypatch):
    assert normalise_api("HTTP://127.0.0.1:8080") == "http://127.0.0.1:8080/"
    assert normalise_api("https://g.api.mega.co.nz:443//") == "https://g.api.mega.co.nz/"
    assert normalise_api("http://[::1]:9/x/") == "http://[::1]:9/x/"
    monkeypatch.delenv("MEGAFS_API", raising=False)
    assert resolve_api(None) == "https://g.api.mega.co.nz/"
    monkeypatch.setenv("MEGAFS_API", "http://127.0.0.1:1234")
    assert resolve_api(None) == "http://127.0.0.1:1234/"
    assert resolve_api("http://localhost:5/") == "http://localhost:5/"


def test_plain_http_to_remote_host_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="megafs.api.transport"):
        Transport("http://127.0.0.1:9/").close()
        assert not caplog.records
        Transport("http://example.invalid/").close()
    assert any("plain http" in r.getMessage() for r in caplog.records)


def test_redact_url_hides_secrets():
    sid = "A" * 58
    text = redact_url("http://127.0.0.1:5/cs?id=12&sid=%s" % sid)
    assert sid not in text and "sid=" in text
    token = "abcdefghijklmnopqrstuvwxyz012345"
    assert token not in redact_url("http://127.0.0.1:5/ul/%s/0?c=AAAA" % token)
    assert "#" not in redact_url("https://mega.nz/file/H#" + "K" * 43)


# --- g replies ---------------------------------------------------------------------------------
def test_parse_g_reply_errors():
    with pytest.raises(MegaError) as info:
        parse_g_reply({"e": -17, "tl": 300, "s": 5})
    assert info.value.code == -17 and "300" in str(info.value)
    with pytest.raises(MegaError) as info:
        parse_g_reply({"d": 1, "g": "http://x/", "s": 1})
    assert info.value.code == -16
    with pytest.raises(MegaError):
        parse_g_reply(-9)
    for junk in (None, 5, "x", [], {"g": 3, "s": 1}, {"g": "http://x", "s": "1"}):
        with pytest.raises(ProtocolError):
            parse_g_reply(junk)
    key = crypto.new_file_key().pack()
    at = crypto.b64encode(crypto.encrypt_attr({"n": "a.txt"}, key))
    info2 = parse_g_reply({"g": "http://x/dl/t", "s": 3, "at": at}, key)
    assert info2.attrs == {"n": "a.txt"} and info2.size == 3
    with pytest.raises(IntegrityError):
        parse_g_reply({"g": "http://x/dl/t", "s": 3, "at": at}, crypto.new_file_key().pack())


# --- node keys ------------------------------------------------------------------------------------
def _offline_client(uh: str, mk: bytes) -> MegaClient:
    transport = Transport("http://127.0.0.1:9/")
    session = Session("http://127.0.0.1:9/", uh, "sid", mk, bytes(16), "now")
    return MegaClient(transport, session)


def test_node_key_picks_our_entry():
    mk = os.urandom(16)
    client = _offline_client("U" * 11, mk)
    file_key = os.urandom(32)
    mine = crypto.b64encode(crypto.wrap_key(file_key, mk))
    other = crypto.b64encode(os.urandom(32))
    raw = {"k": "shareHnd:%s/%s:%s" % (other, "U" * 11, mine), "t": 0}
    assert client.node_key(raw) == file_key
    assert client.link_for(raw, "PUBHANDL").startswith("https://mega.nz/file/PUBHANDL#")
    with pytest.raises(MegaError):
        client.node_key({"k": "V" * 11 + ":" + mine})
    for bad in ({}, {"k": 5}, {"k": "U" * 11 + ":!!"}, {"k": "U" * 11 + ":AAAA"}):
        with pytest.raises(ProtocolError):
            client.node_key(bad)
    client.close()


# --- session files --------------------------------------------------------------------------------
API = "http://127.0.0.1:4321/"


def _session(api: str = API) -> Session:
    return Session(api, "abcdefghijk", crypto.b64encode(os.urandom(43)), os.urandom(16),
                   os.urandom(16), "2026-01-01T00:00:00Z")


def test_session_path_is_per_api(tmp_path):
    a = session_path(API, str(tmp_path))
    assert a == session_path("HTTP://127.0.0.1:4321", str(tmp_path))
    assert a != session_path("http://127.0.0.1:4322/", str(tmp_path))
    assert a.startswith(str(tmp_path / "sessions")) and a.endswith(".json")


def test_session_file_roundtrip_and_modes(tmp_path):
    path = session_path(API, str(tmp_path))
    session = _session()
    write_session_file(session, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    data = json.loads(open(path).read())
    assert set(data) >= {"api", "user_handle", "sid", "master_key", "password_key", "created"}
    assert crypto.b64decode(data["master_key"]) == session.master_key
    loaded = read_session_file(path, API)
    assert (loaded.user_handle, loaded.sid, loaded.master_key, loaded.password_key) == \
        (session.user_handle, session.sid, session.master_key, session.password_key)
    assert session.sid not in repr(loaded)
    assert [name for name in os.listdir(os.path.dirname(path)) if name.endswith(".tmp")] == []


def test_session_file_errors(tmp_path):
    path = str(tmp_path / "s.json")
    write_session_file(_session(), path)
    with pytest.raises(SessionError, match="was made for API"):
        read_session_file(path, "http://127.0.0.1:9999/")
    os.chmod(path, 0o644)
    with pytest.raises(SessionError, match="readable by group or others"):
        read_session_file(path, API)
    os.chmod(path, 0o600)
    with open(path, "w") as handle:
        handle.write("{not json")
    with pytest.raises(SessionError, match="corrupt"):
        read_session_file(path, API)
    with open(path, "w") as handle:
        handle.write('{"api": "%s"}' % API)
    with pytest.raises(SessionError, match="missing"):
        read_session_file(path, API)
    with pytest.raises(FileNotFoundError):
        read_session_file(str(tmp_path / "none.json"), API)


def test_archive_session_file(tmp_path):
    path = str(tmp_path / "s.json")
    write_session_file(_session(), path)
    first = archive_session_file(path)
    write_session_file(_session(), path)
    second = archive_session_file(path)
    assert first and second and first != second
    assert not os.path.exists(path) and os.path.exists(first) and os.path.exists(second)
    assert archive_session_file(path) is None


def test_upload_progress_and_bar_disabled_off_tty(capsys):
    from megafs.cli.progress import Transfer
    bar = Transfer("x", 10)
    bar(5)
    bar.finish()
    assert capsys.readouterr().err == ""


def test_package_never_imports_random():
    # house rule: jitter and keys come from secrets, never from random
    import megafs
    root = os.path.dirname(megafs.__file__)
    checked = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                source = open(os.path.join(folder, name)).read()
                assert "import random" not in source and "from random" not in source, name
                checked += 1
    assert checked > 20


def test_explicit_session_dir_is_not_chmodded(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    write_session_file(_session(), str(shared / "mine.json"))
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(shared / "mine.json").st_mode) == 0o600
    path = session_path(API, str(tmp_path / "state"))
    os.makedirs(os.path.dirname(path), mode=0o755)
    os.chmod(os.path.dirname(path), 0o755)
    write_session_file(_session(), path)
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
