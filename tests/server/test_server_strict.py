"""The real service's behaviour as the server's default (issue 11 items 1, 2, 4, 5 and the link
option): proof of work on login, wait URLs on their own listener that fail when asked, `p` into
a deleted folder lands in the Rubbish Bin, a stale `sn` answers -6 with a bounded packet log,
and `l` refused for temporary accounts when the option says so."""
from __future__ import annotations

import hashlib
import json
import threading
import time

import pytest
import requests

from megafs import crypto
from helpers.rawapi import Api, encrypt_file, log_text, plaintext, solve_hashcash
from helpers.server import ServerProcess

PACKET_LOG = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("strict") / "server-data"
    with ServerProcess(data, extra_args=["--packet-log", str(PACKET_LOG), "--wait-timeout",
                                         "20"], hashcash_easiness=None) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server):
    client = Api(server.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def acct(api):
    return api.new_account()


@pytest.fixture
def options(server):
    """Change policies for one test; the defaults come back afterwards."""
    before = server.options()
    yield server.options
    server.options({k: v for k, v in before.items()})


def up_body():
    mk, pk, ssc = (crypto.random_key() for _ in range(3))
    return json.dumps([{"a": "up", "k": crypto.b64encode(crypto.wrap_key(mk, pk)),
                        "ts": crypto.b64encode(crypto.make_ts(mk, ssc))}])


# --- 1. proof of work on login ---------------------------------------------------------------
def test_login_needs_proof_of_work_at_easiness_180_by_default(server, api):
    assert server.options()["hashcash_easiness"] == 180
    assert server.options()["hashcash_commands"] == ["up", "us"]
    created = api.post_cs(up_body(), rid=1000, solve=False)   # creating an account: challenged
    assert created.status_code == 402 and created.headers["X-Hashcash"].startswith("1:180:")
    answer = solve_hashcash(created.headers["X-Hashcash"])
    uh = api.post_cs(up_body(), rid=1000, headers={"X-Hashcash": answer}, solve=False).json()[0]
    assert isinstance(uh, str) and len(uh) == 11
    login = json.dumps([{"a": "us", "user": uh}])
    first = api.post_cs(login, rid=1001, solve=False)
    assert first.status_code == 402 and first.content == b""
    version, easiness, stamp, token = first.headers["X-Hashcash"].split(":")
    assert (version, easiness) == ("1", "180") and len(crypto.b64decode(token)) == 48
    assert abs(int(stamp) - time.time()) < 60
    answer = solve_hashcash(first.headers["X-Hashcash"])
    ok = api.post_cs(login, rid=1001, headers={"X-Hashcash": answer}, solve=False)
    assert ok.status_code == 200 and "tsid" in ok.json()[0]
    # the answer unlocked one request; the next login needs new work
    again = api.post_cs(login, rid=1002, headers={"X-Hashcash": answer}, solve=False)
    assert again.status_code == 402
    assert server.stats()["hashcash_login"] >= 2


def test_a_challenge_expires(server, api, options):
    options({"hashcash_ttl": 0.5, "hashcash_easiness": 255})     # 255: the easiest
    login = json.dumps([{"a": "us", "user": "AAAAAAAAAAA"}])
    challenge = api.post_cs(login, solve=False).headers["X-Hashcash"]
    answer = solve_hashcash(challenge)
    start = server.log_path.stat().st_size
    time.sleep(0.7)
    late = api.post_cs(login, headers={"X-Hashcash": answer}, solve=False)
    assert late.status_code == 402 and late.headers["X-Hashcash"] != challenge
    assert "refused (expired challenge)" in log_text(server)[start:]
    fresh = solve_hashcash(late.headers["X-Hashcash"])
    assert api.post_cs(login, headers={"X-Hashcash": fresh}, solve=False).json() == [-9]


def test_easiness_0_switches_the_login_challenge_off(api, options):
    options({"hashcash_easiness": 0})
    resp = api.post_cs(json.dumps([{"a": "us", "user": "AAAAAAAAAAA"}]), solve=False)
    assert resp.status_code == 200 and resp.json() == [-9]


def test_the_challenged_commands_are_a_policy(api, acct, options):
    options({"hashcash_commands": ["us"]})
    assert api.post_cs(up_body(), solve=False).status_code == 200
    options({"hashcash_commands": ["us", "up"]})
    assert api.post_cs(up_body(), solve=False).status_code == 402
    assert api.post_cs(json.dumps([{"a": "ug"}]), sid=acct.sid, solve=False).status_code == 200


def test_bad_options_change_nothing(server):
    before = server.options()
    for bad in ({"hashcash_easiness": 256}, {"nope": 1}, {"deleted_target": "limbo"},
                {"hashcash_ttl": 0}, {"packet_log": -1}, {"temp_account_links": "no"}):
        resp = requests.post(server.url + "_megafs/options", data=json.dumps(bad), timeout=10,
                             headers=server.control_headers())
        assert resp.status_code == 400 and resp.json()["error"]
    assert server.options() == before


# --- 2. the wait URL on its own listener -----------------------------------------------------
def poll(api, acct, sn):
    return api.http.post("%ssc?sn=%s&sid=%s" % (api.url, sn, acct.sid), timeout=30).json()


def test_wait_urls_are_served_on_another_port_only(server, api, acct):
    sn = api.call({"a": "f"}, sid=acct.sid)["sn"]
    wait_url = poll(api, acct, sn)["w"]
    wait_base = server.info()["wait"]
    assert wait_url.startswith(wait_base) and wait_base != server.url
    path = wait_url[len(wait_base):]
    assert requests.get(server.url + path, timeout=10).status_code == 404   # not on the API
    assert requests.post(wait_base + "cs?id=1", data=b"[]", timeout=10).status_code == 404
    done = threading.Event()

    def waiter():
        requests.get(wait_url, timeout=30)
        done.set()

    threading.Thread(target=waiter, daemon=True).start()
    time.sleep(0.3)
    assert not done.is_set()
    api.mkdir(acct, api.roots(acct)[2], "wake")
    assert done.wait(10)


def test_the_wait_url_fails_now_and_then_when_asked(server, api, acct):
    rate, seed = 0.5, 11
    server.faults([{"where": "sc", "command": "wait", "http": 500, "rate": rate, "seed": seed}])
    try:
        sn = api.call({"a": "f"}, sid=acct.sid)["sn"]
        wait_url = poll(api, acct, sn)["w"]
        api.mkdir(acct, api.roots(acct)[2], "news")     # so the wait URL answers at once
        statuses = [requests.get(wait_url, timeout=10).status_code for _ in range(12)]
    finally:
        server.clear_faults()
    expected = [500 if int.from_bytes(hashlib.sha256(b"%d:%d" % (seed, n)).digest()[:8],
                                      "big") / 2.0 ** 64 < rate else 200 for n in range(1, 13)]
    assert statuses == expected and 200 in statuses and 500 in statuses
    assert poll(api, acct, sn)["a"]          # the poll itself was never failed


def test_the_wait_url_can_drop_the_connection(server, api, acct):
    server.faults([{"where": "sc", "command": "wait", "drop": True, "count": 1}])
    try:
        sn = api.call({"a": "f"}, sid=acct.sid)["sn"]
        wait_url = poll(api, acct, sn)["w"]
        with pytest.raises(requests.ConnectionError):
            requests.get(wait_url, timeout=10)
    finally:
        server.clear_faults()


# --- 4. p into a deleted folder --------------------------------------------------------------
def test_p_into_a_deleted_folder_lands_in_the_rubbish_bin(api, acct):
    roots = api.roots(acct)
    doomed = api.mkdir(acct, roots[2], "doomed")
    assert api.call({"a": "d", "n": doomed["h"]}, sid=acct.sid) == 0
    sn = api.call({"a": "f"}, sid=acct.sid)["sn"]
    enc = encrypt_file(plaintext(5000, seed=3))
    token = api.upload_bytes(acct, enc.ciphertext)
    res = api.call({"a": "p", "t": doomed["h"], "n": [Api.file_item(acct, token, enc, "orphan")],
                    "i": "rq00000001"}, sid=acct.sid)
    node = res["f"][0]
    assert node["p"] == roots[4] and Api.node_name(acct, node) == "orphan"
    listing = api.call({"a": "f"}, sid=acct.sid)["f"]
    assert [n["p"] for n in listing if n["h"] == node["h"]] == [roots[4]]
    packets = poll(api, acct, sn)["a"]
    assert packets == [{"a": "t", "t": {"f": [node]}, "ou": acct.uh, "i": "rq00000001"}]
    # an item naming the deleted folder as its parent goes there too; a new folder with
    # its children keeps its shape inside the Rubbish Bin
    made = api.call({"a": "p", "t": doomed["h"], "n": [
        Api.folder_item(acct, "sub", placeholder="ph000001"),
        Api.folder_item(acct, "inner", placeholder="ph000002", parent="ph000001")]},
        sid=acct.sid)["f"]
    assert made[0]["p"] == roots[4] and made[1]["p"] == made[0]["h"]


def test_p_into_a_handle_that_never_existed_is_minus_9(api, acct):
    item = Api.folder_item(acct, "x")
    assert api.call({"a": "p", "t": "AAAAAAAA", "n": [item]}, sid=acct.sid) == -9


def test_p_into_a_deleted_folder_is_minus_9_under_the_legacy_option(api, acct, options):
    options({"deleted_target": "enoent"})
    doomed = api.mkdir(acct, api.roots(acct)[2], "doomed2")
    assert api.call({"a": "d", "n": doomed["h"]}, sid=acct.sid) == 0
    item = Api.folder_item(acct, "x")
    assert api.call({"a": "p", "t": doomed["h"], "n": [item]}, sid=acct.sid) == -9


def test_another_accounts_deleted_folder_is_minus_9(api, acct):
    other = api.new_account()
    theirs = api.mkdir(other, api.roots(other)[2], "theirs")
    assert api.call({"a": "d", "n": theirs["h"]}, sid=other.sid) == 0
    item = Api.folder_item(acct, "x")
    assert api.call({"a": "p", "t": theirs["h"], "n": [item]}, sid=acct.sid) == -9


# --- 5. stale sequence numbers ---------------------------------------------------------------
def test_a_stale_sn_answers_minus_6_and_the_log_stays_bounded(server, api):
    acct = api.new_account()
    root = api.roots(acct)[2]
    old_sn = api.call({"a": "f"}, sid=acct.sid)["sn"]
    for i in range(PACKET_LOG * 3):
        api.mkdir(acct, root, "d%d" % i)
    assert poll(api, acct, old_sn) == -6
    assert "older than its packet log" in log_text(server)
    # reload with f: its sn polls fine, and so does one a few packets old
    fresh = api.call({"a": "f"}, sid=acct.sid)["sn"]
    assert "w" in poll(api, acct, fresh)
    for i in range(3):
        api.mkdir(acct, root, "e%d" % i)
    assert [p["a"] for p in poll(api, acct, fresh)["a"]] == ["t", "t", "t"]
    kept = server.stats()["state"]["packets"]
    assert kept <= 2 * (PACKET_LOG + PACKET_LOG // 10 + 3) + 10   # every account is bounded


# --- links from temporary accounts -----------------------------------------------------------
def test_l_from_a_temporary_account_is_minus_11_when_refused(api, acct, options):
    enc = encrypt_file(plaintext(100, seed=4))
    node = api.put_file(acct, api.roots(acct)[2], enc, "linked")
    ph = api.call({"a": "l", "n": node["h"]}, sid=acct.sid)
    assert isinstance(ph, str)
    options({"temp_account_links": False})
    other = api.put_file(acct, api.roots(acct)[2], enc, "unlinked")
    assert api.call({"a": "l", "n": other["h"]}, sid=acct.sid) == -11
    assert api.call({"a": "l", "n": node["h"]}, sid=acct.sid) == -11
    assert api.call({"a": "l", "n": node["h"], "d": 1}, sid=acct.sid) == 0   # removing is fine


def test_no_temp_links_on_the_command_line(tmp_path):
    with ServerProcess(tmp_path / "data", extra_args=["--no-temp-links",
                                                      "--hashcash-easiness", "0"]) as srv:
        api = Api(srv.url)
        acct = api.new_account()
        assert api.hashcash_solved == 0
        node = api.put_file(acct, api.roots(acct)[2], encrypt_file(b"x"), "f")
        assert api.call({"a": "l", "n": node["h"]}, sid=acct.sid) == -11
        assert srv.options()["temp_account_links"] is False
