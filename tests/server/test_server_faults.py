"""Fault injection: every action on every channel, both modes (count, seeded rate), the
control endpoint's validation, and the counters in ``/_megafs/stats``."""
from __future__ import annotations

import hashlib
import json
import time

import pytest
import requests

from megafs import crypto
from helpers.rawapi import (Api, checksum_b64, decrypt_and_verify, encrypt_file, plaintext,
                            solve_hashcash)


@pytest.fixture(scope="module")
def acct(api):
    return api.new_account()


@pytest.fixture(scope="module")
def stored(api, acct):
    """A file on the server, made before any fault is set."""
    enc = encrypt_file(plaintext(300_000, seed=21))
    node = api.put_file(acct, api.roots(acct)[2], enc, "stored.bin")
    url = api.call({"a": "g", "g": 1, "n": node["h"]}, sid=acct.sid)["g"]
    return enc, url


@pytest.fixture
def faults(module_server):
    """Set rules for one test; always cleared afterwards."""
    yield module_server.faults
    module_server.clear_faults()


def ug(api, acct):
    return api.post_cs(json.dumps([{"a": "ug"}]), sid=acct.sid)


# --- command channel ------------------------------------------------------------------------
@pytest.mark.parametrize("code", [-3, -4])
def test_batch_level_error_for_the_next_n_requests(api, acct, faults, code):
    faults([{"where": "cs", "error": code, "count": 2}])
    assert ug(api, acct).json() == code
    assert ug(api, acct).json() == code
    assert ug(api, acct).json()[0]["u"] == acct.uh


def test_batch_level_error_applies_nothing(api, acct, faults):
    root = api.roots(acct)[2]
    before = len(api.call({"a": "f"}, sid=acct.sid)["f"])
    faults([{"where": "cs", "error": -3, "count": 1}])
    body = json.dumps([{"a": "p", "t": root, "n": [Api.folder_item(acct, "x")]}])
    assert api.post_cs(body, sid=acct.sid, rid=9001).json() == -3
    assert len(api.call({"a": "f"}, sid=acct.sid)["f"]) == before
    # resending the identical request with the same id now applies it, once
    assert "f" in api.post_cs(body, sid=acct.sid, rid=9001).json()[0]
    assert len(api.call({"a": "f"}, sid=acct.sid)["f"]) == before + 1


@pytest.mark.parametrize("status", [500, 503])
def test_http_status(api, acct, faults, status):
    faults([{"where": "cs", "http": status, "count": 1}])
    assert ug(api, acct).status_code == status
    assert ug(api, acct).status_code == 200


def test_dropped_connection(api, acct, faults):
    faults([{"where": "cs", "drop": True, "count": 1}])
    with pytest.raises(requests.ConnectionError):
        requests.post(api.url + "cs?id=1&sid=" + acct.sid, data=b'[{"a":"ug"}]', timeout=10)
    assert ug(api, acct).status_code == 200


def test_delay(api, acct, faults):
    faults([{"where": "cs", "delay": 0.3, "count": 1}])
    started = time.monotonic()
    assert ug(api, acct).json()[0]["u"] == acct.uh
    assert time.monotonic() - started >= 0.3


def test_batch_error_only_for_batches_with_the_command(api, acct, faults):
    faults([{"where": "cs", "command": "f", "error": -3}])
    assert ug(api, acct).json()[0]["u"] == acct.uh
    assert api.post_cs(json.dumps([{"a": "ug"}, {"a": "f"}]), sid=acct.sid).json() == -3


def test_command_level_error_replaces_only_that_result(api, acct, faults):
    root = api.roots(acct)[2]
    before = len(api.call({"a": "f"}, sid=acct.sid)["f"])
    faults([{"where": "cs", "command": "p", "error": -17, "level": "command"}])
    result = api.batch([{"a": "ug"}, {"a": "p", "t": root, "n": [Api.folder_item(acct, "x")]},
                        {"a": "uq"}], sid=acct.sid)
    assert result[0]["u"] == acct.uh and result[1] == -17 and "mstrg" in result[2]
    assert len(api.call({"a": "f"}, sid=acct.sid)["f"]) == before


# --- hashcash -------------------------------------------------------------------------------
def login_body():
    mk, pk, ssc = (crypto.random_key() for _ in range(3))
    return json.dumps([{"a": "up", "k": crypto.b64encode(crypto.wrap_key(mk, pk)),
                        "ts": crypto.b64encode(crypto.make_ts(mk, ssc))}])


def test_hashcash_challenge_and_solution(api, acct, faults):
    faults([{"where": "cs", "hashcash": 200, "count": 1}])
    assert ug(api, acct).status_code == 200          # not a login command
    body = login_body()
    resp = api.post_cs(body, rid=555, solve=False)
    assert resp.status_code == 402 and resp.content == b""
    challenge = resp.headers["X-Hashcash"]
    easiness, token_b64, token = crypto.parse_hashcash_challenge(challenge)
    assert easiness == 200 and len(token) == 48
    answer = solve_hashcash(challenge)
    resp = api.post_cs(body, rid=555, headers={"X-Hashcash": answer}, solve=False)
    assert resp.status_code == 200 and len(resp.json()[0]) == 11


def test_hashcash_on_every_login_until_solved(module_server, api, faults):
    faults([{"where": "cs", "hashcash": True}])      # easiness from --hashcash-easiness
    body = login_body()
    first = api.post_cs(body, rid=556, solve=False)
    assert first.status_code == 402
    challenge = first.headers["X-Hashcash"]
    assert challenge.startswith("1:%d:" % module_server.options()["hashcash_easiness"])
    bad_prefix = crypto.b64encode(b"\xff\xff\xff\xff")
    token_b64 = challenge.split(":")[3]
    start = module_server.log_path.stat().st_size
    # a wrong answer, or one to a challenge we never issued, gets a new challenge
    for header in ("1:%s:%s" % (crypto.b64encode(bytes(48)), bad_prefix), "garbage"):
        resp = api.post_cs(body, rid=556, headers={"X-Hashcash": header}, solve=False)
        assert resp.status_code == 402
    assert "X-Hashcash answer" in module_server.log_path.read_bytes()[start:].decode()
    answer = solve_hashcash(challenge)
    assert answer.split(":")[1] == token_b64
    ok = api.post_cs(body, rid=556, headers={"X-Hashcash": answer}, solve=False)
    assert ok.status_code == 200
    # each challenge unlocks one request
    assert api.post_cs(login_body(), rid=557, headers={"X-Hashcash": answer},
                       solve=False).status_code == 402
    # us is a login command too
    resp = api.post_cs(json.dumps([{"a": "us", "user": "AAAAAAAAAAA"}]), solve=False)
    assert resp.status_code == 402


def test_hashcash_for_a_chosen_command(api, acct, faults):
    faults([{"where": "cs", "hashcash": 255, "command": "f", "count": 1}])
    assert api.post_cs(login_body()).status_code == 200
    resp = api.post_cs(json.dumps([{"a": "f"}]), sid=acct.sid, solve=False)
    assert resp.status_code == 402
    answer = crypto.hashcash_solve(resp.headers["X-Hashcash"])
    again = api.post_cs(json.dumps([{"a": "f"}]), sid=acct.sid, headers={"X-Hashcash": answer},
                        solve=False)
    assert "f" in again.json()[0]


# --- upload URLs ----------------------------------------------------------------------------
def upload_one(api, acct, size=200_000, seed=30):
    enc = encrypt_file(plaintext(size, seed=seed))
    return enc, api.upload_url(acct, size)


@pytest.mark.parametrize("code", [-3, -4])
def test_upload_error_body_stores_nothing(api, acct, faults, code):
    enc, url = upload_one(api, acct)
    a, b = enc.ciphertext[:131072], enc.ciphertext[131072:]
    faults([{"where": "upload", "error": code, "count": 1}])
    assert api.post_chunk(url, 0, a, checksum_b64(a)).content == str(code).encode()
    assert api.post_chunk(url, 131072, b, checksum_b64(b)).content == b""
    assert len(api.post_chunk(url, 0, a, checksum_b64(a)).content) == 36


def test_upload_http_503(api, acct, faults):
    enc, url = upload_one(api, acct)
    faults([{"where": "upload", "http": 503, "count": 1}])
    assert api.post_chunk(url, 0, enc.ciphertext[:131072]).status_code == 503
    assert api.post_chunk(url, 0, enc.ciphertext[:131072]).status_code == 200


def test_upload_connection_dropped_mid_body(api, acct, faults):
    enc, url = upload_one(api, acct, size=1_000_000)
    piece = enc.ciphertext[:131072 * 3]
    faults([{"where": "upload", "drop": True, "count": 1}])
    with pytest.raises(requests.ConnectionError):
        requests.post(url + "/0", data=piece, timeout=10)
    assert api.post_chunk(url, 0, piece, checksum_b64(piece)).content == b""


def test_upload_url_expires(api, acct, faults):
    enc, url = upload_one(api, acct)
    faults([{"where": "upload", "expire": True, "count": 1}])
    assert api.post_chunk(url, 0, enc.ciphertext[:131072]).content == b"-8"
    faults([])
    assert api.post_chunk(url, 0, enc.ciphertext[:131072]).content == b"-8"   # for good
    fresh = api.upload_url(acct, len(enc.ciphertext))
    assert api.post_chunk(fresh, 0, enc.ciphertext[:131072]).content == b""


def test_upload_delay(api, acct, faults):
    enc, url = upload_one(api, acct)
    faults([{"where": "upload", "delay": 0.2}])
    started = time.monotonic()
    assert api.post_chunk(url, 0, enc.ciphertext[:131072]).content == b""
    assert time.monotonic() - started >= 0.2


# --- download URLs --------------------------------------------------------------------------
def test_download_tamper_fails_the_mac(api, faults, stored):
    enc, url = stored
    faults([{"where": "download", "tamper": True, "count": 1}])
    got = api.download(url)
    assert len(got) == len(enc.ciphertext)
    assert sum(a != b for a, b in zip(got, enc.ciphertext)) == 1
    with pytest.raises(ValueError, match="meta-MAC"):
        decrypt_and_verify(enc.key, got)
    assert decrypt_and_verify(enc.key, api.download(url)) == enc.plaintext


def test_download_truncate_sends_fewer_bytes(api, faults, stored):
    enc, url = stored
    faults([{"where": "download", "truncate": True, "count": 2}])
    resp = requests.get("%s/0-%d" % (url, 131071), timeout=10)
    assert resp.status_code == 200 and 0 < len(resp.content) < 131072
    assert enc.ciphertext.startswith(resp.content)
    assert len(requests.get(url, timeout=10).content) < len(enc.ciphertext)


def test_download_http_and_error_and_drop(api, faults, stored):
    enc, url = stored
    faults([{"where": "download", "http": 509, "count": 1},
            {"where": "download", "error": -3, "count": 1},
            {"where": "download", "drop": True, "count": 1}])
    first = requests.get(url, timeout=10)
    assert first.status_code == 509 and "X-MEGA-Time-Left" in first.headers
    assert requests.get(url, timeout=10).content == b"-3"
    with pytest.raises(requests.RequestException):
        requests.get(url, timeout=10)
    assert api.download(url) == enc.ciphertext


# --- sc -------------------------------------------------------------------------------------
def test_sc_faults(api, acct, faults):
    sn = api.call({"a": "f"}, sid=acct.sid)["sn"]
    poll = "%ssc?sn=%s&sid=%s" % (api.url, sn, acct.sid)
    faults([{"where": "sc", "error": -3, "count": 1},
            {"where": "sc", "http": 500, "command": "wait", "count": 1},
            {"where": "sc", "drop": True, "command": "sc", "count": 1}])
    assert requests.post(poll, timeout=10).json() == -3
    with pytest.raises(requests.ConnectionError):
        requests.post(poll, timeout=10)
    wait_url = requests.post(poll, timeout=10).json()["w"]
    assert requests.get(wait_url, timeout=10).status_code == 500


# --- modes ----------------------------------------------------------------------------------
def pattern(api, acct, n):
    return [ug(api, acct).json() == -3 for _ in range(n)]


def test_count_mode_fails_exactly_the_next_n(api, acct, faults):
    faults([{"where": "cs", "error": -3, "count": 3}])
    assert pattern(api, acct, 8) == [True] * 3 + [False] * 5


def test_rate_mode_is_deterministic_for_a_seed(api, acct, faults):
    faults([{"where": "cs", "error": -3, "rate": 0.5, "seed": 7}])
    first = pattern(api, acct, 40)
    faults([{"where": "cs", "error": -3, "rate": 0.5, "seed": 7}])
    assert pattern(api, acct, 40) == first
    assert 0 < sum(first) < 40
    # the documented rule: the n-th matching request fails iff SHA-256("seed:n") read as a
    # 64-bit big-endian fraction is below the rate
    expected = [int.from_bytes(hashlib.sha256(b"7:%d" % n).digest()[:8], "big") / 2 ** 64 < 0.5
                for n in range(1, 41)]
    assert first == expected
    faults([{"where": "cs", "error": -3, "rate": 0.5, "seed": 8}])
    assert pattern(api, acct, 40) != first


@pytest.mark.parametrize("rate, fails", [(0, False), (1, True)])
def test_rate_extremes(api, acct, faults, rate, fails):
    faults([{"where": "cs", "error": -3, "rate": rate, "seed": 1}])
    assert pattern(api, acct, 5) == [fails] * 5


def test_rules_apply_in_order_and_delay_rules_add_up(api, acct, faults):
    faults([{"where": "cs", "delay": 0.1},
            {"where": "cs", "error": -4, "count": 1},
            {"where": "cs", "error": -3, "count": 1}])
    started = time.monotonic()
    assert pattern(api, acct, 1) == [False] and ug(api, acct).json() == -3
    assert ug(api, acct).json()[0]["u"] == acct.uh
    assert time.monotonic() - started >= 0.3


# --- control endpoint and stats -------------------------------------------------------------
@pytest.mark.parametrize("rules", [
    {"where": "cs", "error": -3},                          # not a list
    [{"where": "nowhere", "error": -3}],
    [{"where": "cs", "error": -3, "colour": "red"}],
    [{"where": "cs", "error": -3, "http": 500}],
    [{"where": "cs", "tamper": True}],
    [{"where": "upload", "error": -3, "level": "command"}],
    [{"where": "cs", "error": -3, "count": 1, "rate": 0.5}],
    [{"where": "cs", "error": -3, "count": -1}],
    [{"where": "cs", "error": -3, "rate": 2}],
    [{"where": "cs", "error": 3}],
    [{"where": "cs", "http": 200}],
    [{"where": "cs", "error": -3, "seed": 4}],
    [{"where": "cs"}],
    [{"where": "sc", "error": -3, "command": "f"}],
    [{"where": "download", "error": -3, "command": "g"}],
    [{"where": "cs", "hashcash": 300}],
    [{"where": "cs", "drop": "yes"}],
    ["not an object"],
])
def test_invalid_rules_are_refused_and_keep_the_old_ones(module_server, faults, rules):
    faults([{"where": "cs", "delay": 0}])
    resp = requests.post(module_server.url + "_megafs/faults", data=json.dumps({"rules": rules}),
                         timeout=10, headers=module_server.control_headers())
    assert resp.status_code == 400 and resp.json()["error"]
    current = requests.get(module_server.url + "_megafs/faults", timeout=10).json()
    assert [r["where"] for r in current["rules"]] == ["cs"]


def test_stats_count_requests_and_fired_faults(module_server, api, acct, faults):
    before = requests.get(module_server.url + "_megafs/stats", timeout=10).json()
    faults([{"where": "cs", "error": -3, "count": 2}])
    pattern(api, acct, 3)
    after = requests.get(module_server.url + "_megafs/stats", timeout=10).json()
    assert after["requests"]["cs"] - before["requests"]["cs"] == 3
    assert after["faults_fired"] - before.get("faults_fired", 0) == 2
    rule = after["faults"]["rules"][0]
    assert rule["matched"] == 3 and rule["fired"] == 2 and rule["remaining"] == 0
    assert after["commands"]["ug"] >= 3 and after["state"]["accounts"] >= 1


def test_no_errors_in_the_server_log(module_server):
    text = module_server.log_path.read_text(errors="replace")
    assert " ERROR " not in text and "Traceback" not in text
