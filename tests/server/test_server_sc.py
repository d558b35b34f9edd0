"""Server conformance: the action-packet channel (``sc``) and its long-polling wait URL."""
from __future__ import annotations

import threading

import pytest
import requests

from megafs import crypto
from helpers.rawapi import Api, encrypt_file, plaintext
from helpers.server import ServerProcess

# Long enough that a wait URL returning within the test's patience proves it was woken.
WAIT_TIMEOUT = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("sc") / "server-data"
    with ServerProcess(data, extra_args=["--wait-timeout", str(WAIT_TIMEOUT)]) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server):
    client = Api(server.url)
    yield client
    client.close()


@pytest.fixture
def acct(api):
    return api.new_account()


def sn_of(api, acct) -> str:
    return api.call({"a": "f", "c": 1}, sid=acct.sid)["sn"]


def sc(api, acct, sn, method="POST", path="sc"):
    resp = api.http.request(method, "%s%s?sn=%s&sid=%s" % (api.url, path, sn, acct.sid),
                            timeout=30)
    assert resp.status_code == 200
    return resp.json()


def test_nothing_new_gives_a_wait_url_and_the_same_sn(server, api, acct):
    sn = sn_of(api, acct)
    answer = sc(api, acct, sn)
    assert answer["sn"] == sn and "a" not in answer
    # the wait URL is on another listener (another host in reality), not the API's
    wait_base = server.info()["wait"]
    assert answer["w"].startswith(wait_base) and not answer["w"].startswith(api.url)


def test_packets_after_sn_in_order_with_request_ids(api, acct):
    roots = api.roots(acct)
    sn = sn_of(api, acct)
    folder = api.call({"a": "p", "t": roots[2], "n": [Api.folder_item(acct, "f")],
                       "i": "req0000001"}, sid=acct.sid)["f"][0]
    enc = encrypt_file(plaintext(100))
    token = api.upload_bytes(acct, enc.ciphertext)
    node = api.call({"a": "p", "t": folder["h"], "n": [Api.file_item(acct, token, enc, "x")],
                     "i": "req0000002"}, sid=acct.sid)["f"][0]
    at = crypto.b64encode(crypto.encrypt_attr({"n": "y"}, enc.key.pack()))
    assert api.call({"a": "a", "n": node["h"], "at": at, "i": "req0000003"}, sid=acct.sid) == 0
    ph = api.call({"a": "l", "n": node["h"], "i": "req0000004"}, sid=acct.sid)
    assert api.call({"a": "m", "n": folder["h"], "t": roots[4], "i": "req0000005"},
                    sid=acct.sid) == 0
    assert api.call({"a": "l", "n": node["h"], "d": 1, "i": "req0000006"}, sid=acct.sid) == 0
    assert api.call({"a": "d", "n": folder["h"], "i": "req0000007"}, sid=acct.sid) == 0
    answer = sc(api, acct, sn)
    packets = answer["a"]
    assert [(p["a"], p.get("i")) for p in packets] == [
        ("t", "req0000001"), ("t", "req0000002"), ("u", "req0000003"), ("ph", "req0000004"),
        ("d", "req0000005"), ("t", "req0000005"), ("ph", "req0000006"), ("d", "req0000007")]
    assert packets[0]["t"]["f"] == [folder] and packets[1]["t"]["f"] == [node]
    assert packets[2]["n"] == node["h"] and packets[2]["at"] == at
    assert packets[3]["ph"] == ph and packets[3]["h"] == node["h"]
    assert packets[4] == {"a": "d", "n": folder["h"], "m": 1, "ou": acct.uh, "i": "req0000005"}
    moved = packets[5]["t"]["f"]
    assert [n["h"] for n in moved] == [folder["h"], node["h"]] and moved[0]["p"] == roots[4]
    assert packets[6]["d"] == 1 and packets[7]["n"] == folder["h"]
    new_sn = answer["sn"]
    assert new_sn != sn and sn_of(api, acct) == new_sn
    assert "w" in sc(api, acct, new_sn)


def test_packets_are_private_to_their_account(api):
    one, two = api.new_account(), api.new_account()
    sn = sn_of(api, two)
    api.mkdir(one, api.roots(one)[2], "mine")
    assert "w" in sc(api, two, sn)


def test_old_sn_gets_everything_after_it(api, acct):
    api.mkdir(acct, api.roots(acct)[2], "a")
    api.mkdir(acct, api.roots(acct)[2], "b")
    answer = sc(api, acct, crypto.b64encode(bytes(8)))
    assert [p["a"] for p in answer["a"]] == ["t", "t"]


def test_wsc_with_a_session_polls_like_sc(api, acct):
    sn = sn_of(api, acct)
    api.mkdir(acct, api.roots(acct)[2], "a")
    assert [p["a"] for p in sc(api, acct, sn, path="wsc")["a"]] == ["t"]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_wait_url_wakes_on_a_change(api, acct, method):
    sn = sn_of(api, acct)
    wait_url = sc(api, acct, sn)["w"]
    done = threading.Event()
    outcome = {}

    def waiter():
        resp = requests.request(method, wait_url, timeout=WAIT_TIMEOUT + 30)
        outcome["status"] = resp.status_code
        done.set()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    assert not done.wait(0.3)   # nothing happened yet, so it is still waiting
    api.mkdir(acct, api.roots(acct)[2], "wake")
    assert done.wait(WAIT_TIMEOUT / 2), "the wait URL did not return after a change"
    assert outcome["status"] == 200
    assert [p["a"] for p in sc(api, acct, sn)["a"]] == ["t"]


def test_wait_url_for_unknown_user_returns_at_once(server, api):
    resp = requests.get(server.info()["wait"] + "wsc/AAAAAAAAAAA/AAAAAAAAAAA",
                        timeout=WAIT_TIMEOUT / 2)
    assert resp.status_code == 200


def test_wait_url_times_out_without_news(tmp_path):
    with ServerProcess(tmp_path / "data", extra_args=["--wait-timeout", "0.3"]) as srv:
        api = Api(srv.url)
        acct = api.new_account()
        wait_url = sc(api, acct, sn_of(api, acct))["w"]
        resp = requests.get(wait_url, timeout=30)
        assert resp.status_code == 200 and resp.content in (b"", b"0")


def test_sc_errors(server, api, acct):
    sn = sn_of(api, acct)
    assert requests.post(api.url + "sc?sn=%s&sid=%s" % (sn, "B" * 58), timeout=10).json() == -15
    assert requests.post(api.url + "sc?sn=%s" % sn, timeout=10).json() == -15
    start = server.log_path.stat().st_size
    assert requests.post(api.url + "sc?sn=@@@&sid=" + acct.sid, timeout=10).json() == -2
    assert requests.post(api.url + "sc?sid=" + acct.sid, timeout=10).json() == -2
    assert "WARNING" in server.log_path.read_bytes()[start:].decode()


def test_a_big_account_gets_a_snapshot_and_catches_up_with_sc(server, api, acct):
    """``snapshot_over``: `f` of an account over that many nodes answers the tree kept from an
    earlier `f` and that tree's sn (the real service's big accounts, rclone/rclone#2366); the
    packets since come from `sc`; a snapshot the log no longer reaches is taken again."""
    root = api.roots(acct)[2]
    api.mkdir(acct, root, "a")
    server.options({"snapshot_over": 3})
    try:
        first = api.call({"a": "f", "c": 1}, sid=acct.sid)       # 4 nodes: taken now
        made = api.mkdir(acct, root, "b")
        again = api.call({"a": "f", "c": 1}, sid=acct.sid)
        assert again["f"] == first["f"] and again["sn"] == first["sn"]
        assert [p["t"]["f"][0]["h"] for p in sc(api, acct, again["sn"])["a"]] == [made["h"]]
        server.options({"packet_log": 1})
        api.mkdir(acct, root, "c")
        api.mkdir(acct, root, "d")                   # prunes the packets since the snapshot
        fresh = api.call({"a": "f", "c": 1}, sid=acct.sid)
        assert len(fresh["f"]) == 7 and "w" in sc(api, acct, fresh["sn"])
        server.options({"snapshot_over": 10})        # small again: the current tree
        api.mkdir(acct, root, "e")
        assert len(api.call({"a": "f", "c": 1}, sid=acct.sid)["f"]) == 8
    finally:
        server.options({"snapshot_over": 0, "packet_log": 10000})


def test_no_errors_in_the_server_log(server):
    text = server.log_path.read_text(errors="replace")
    assert " ERROR " not in text and "Traceback" not in text
