"""Server conformance: every command of the command channel, over real HTTP, in the legacy
response format; batches with mixed results; malformed input; the id-replay cache."""
from __future__ import annotations

import json
import re

import pytest
import requests

from megafs import crypto
from helpers.rawapi import Api, encrypt_file, plaintext

SN_RE = re.compile(r"^[A-Za-z0-9_-]{11}$")


@pytest.fixture
def acct(api):
    return api.new_account()


@pytest.fixture(autouse=True)
def no_server_errors(module_server):
    log = module_server.log_path
    start = log.stat().st_size if log.exists() else 0
    yield
    text = log.read_bytes()[start:].decode(errors="replace")
    assert " ERROR " not in text and "Traceback" not in text, text[-2000:]


def new_log_text(server, start: int) -> str:
    return server.log_path.read_bytes()[start:].decode(errors="replace")


def log_offset(server) -> int:
    return server.log_path.stat().st_size


# --- accounts and sessions ------------------------------------------------------------------
def test_up_us_ug_and_the_three_roots(api):
    acct = api.new_account()          # checks k and the tsid layout itself
    tsid = crypto.b64decode(acct.sid)
    assert tsid[16:27] == acct.uh.encode()
    user = api.call({"a": "ug"}, sid=acct.sid)
    assert user["u"] == acct.uh and user["s"] == 1 and user["n"] == 0 and user["c"] == 0
    assert "email" not in user
    assert crypto.unwrap_key(crypto.b64decode(user["k"]), acct.password_key) == acct.master_key
    listing = api.call({"a": "f", "c": 1, "r": 1}, sid=acct.sid)
    assert listing["ok"] == [] and listing["s"] == [] and listing["ph"] == []
    assert SN_RE.match(listing["sn"])
    assert isinstance(listing["u"], list)
    assert sorted(n["t"] for n in listing["f"]) == [2, 3, 4]
    for node in listing["f"]:
        assert node["p"] == "" and node["a"] == "" and node["k"] == "" and node["u"] == acct.uh
        assert len(node["h"]) == 8 and isinstance(node["ts"], int)


def test_us_again_gives_the_same_session(api, acct):
    again = api.call({"a": "us", "user": acct.uh})
    assert again["tsid"] == acct.sid


@pytest.mark.parametrize("user", ["AAAAAAAAAAA", "garbage!", "", "x" * 300])
def test_us_for_unknown_or_garbage_user_is_enoent(api, user):
    assert api.call({"a": "us", "user": user}) == -9


def test_us_email_login_is_enoent(api):
    assert api.call({"a": "us", "user": "someone@example.com", "uh": "AAAAAAAAAAA"}) == -9


@pytest.mark.parametrize("cmd", [
    {"a": "up", "k": "short", "ts": crypto.b64encode(bytes(32))},
    {"a": "up", "k": crypto.b64encode(bytes(16)), "ts": crypto.b64encode(bytes(16))},
    {"a": "up", "k": crypto.b64encode(bytes(16))},
    {"a": "up", "k": 5, "ts": crypto.b64encode(bytes(32))},
    {"a": "us", "user": 12},
    {"a": "us"},
])
def test_bad_login_arguments_are_eargs_with_a_warning(module_server, api, cmd):
    start = log_offset(module_server)
    assert api.call(cmd) == -2
    assert "WARNING" in new_log_text(module_server, start)


def test_unknown_sid_is_a_batch_level_esid(api):
    resp = api.post_cs(json.dumps([{"a": "ug"}, {"a": "f"}]), sid="A" * 58)
    assert resp.status_code == 200 and resp.json() == -15


def test_missing_sid_is_esid_per_command(api, acct):
    enc = encrypt_file(plaintext(100))
    node = api.put_file(acct, api.roots(acct)[2], enc, "f.bin")
    ph = api.call({"a": "l", "n": node["h"]}, sid=acct.sid)
    result = api.batch([{"a": "ug"}, {"a": "g", "p": ph}, {"a": "f", "c": 1},
                        {"a": "g", "n": node["h"]}])
    assert result[0] == -15 and result[2] == -15 and result[3] == -15
    assert result[1]["s"] == 100


def test_sml_ends_the_session_and_us_restores_it(api, acct):
    assert api.call({"a": "sml"}, sid=acct.sid) == 0
    assert api.post_cs(json.dumps([{"a": "ug"}]), sid=acct.sid).json() == -15
    assert api.call({"a": "us", "user": acct.uh})["tsid"] == acct.sid
    assert api.call({"a": "ug"}, sid=acct.sid)["u"] == acct.uh


def test_uq_reports_quota_and_usage_per_root(api, acct):
    roots = api.roots(acct)
    api.put_file(acct, roots[2], encrypt_file(plaintext(1000)), "a")
    api.put_file(acct, roots[4], encrypt_file(plaintext(24)), "b")
    api.mkdir(acct, roots[2], "dir")
    quota = api.call({"a": "uq", "strg": 1, "xfer": 1}, sid=acct.sid)
    assert quota["cstrg"] == 1024 and quota["mstrg"] == 20 * 1024 ** 3
    assert quota["cstrgn"][roots[2]][:3] == [1000, 1, 1]
    assert quota["cstrgn"][roots[4]][:3] == [24, 1, 0]
    for key in ("mxfer", "caxfer", "csxfer", "uslw", "usl"):
        assert key in quota


# --- nodes ----------------------------------------------------------------------------------
def test_f_lists_nodes_with_every_field_parents_first(api, acct):
    roots = api.roots(acct)
    folder = api.mkdir(acct, roots[2], "docs")
    enc = encrypt_file(plaintext(5000))
    api.put_file(acct, folder["h"], enc, "x.bin")
    listing = api.call({"a": "f", "c": 1, "r": 1}, sid=acct.sid)["f"]
    seen = set()
    for node in listing:
        assert {"h", "p", "u", "t", "a", "k", "ts"} <= set(node)
        assert ("s" in node) == (node["t"] == 0)
        assert node["p"] == "" or node["p"] in seen
        seen.add(node["h"])
    files = [n for n in listing if n["t"] == 0]
    assert len(files) == 1 and files[0]["s"] == 5000 and files[0]["p"] == folder["h"]
    assert Api.node_name(acct, files[0]) == "x.bin"
    assert Api.node_key(acct, files[0]) == enc.key.pack()


def test_p_folders_with_placeholders_and_a_file_inside(api, acct):
    root = api.roots(acct)[2]
    enc = encrypt_file(plaintext(300))
    token = api.upload_bytes(acct, enc.ciphertext)
    file_item = Api.file_item(acct, token, enc, "inner.bin")
    file_item["p"] = "ph_b"
    file_item["fa"] = None
    items = [Api.folder_item(acct, "A", "ph_a"), Api.folder_item(acct, "B", "ph_b", "ph_a"),
             file_item]
    created = api.call({"a": "p", "t": root, "n": items}, sid=acct.sid)["f"]
    assert [n["t"] for n in created] == [1, 1, 0]
    a, b, f = created
    assert a["p"] == root and b["p"] == a["h"] and f["p"] == b["h"]
    assert [Api.node_name(acct, n) for n in created] == ["A", "B", "inner.bin"]
    assert f["s"] == 300


def test_p_without_i_and_with_i(api, acct):
    root = api.roots(acct)[2]
    item = Api.folder_item(acct, "one")
    assert len(api.call({"a": "p", "t": root, "n": [item]}, sid=acct.sid)["f"]) == 1
    item = Api.folder_item(acct, "two")
    assert len(api.call({"a": "p", "t": root, "n": [item], "i": "abcdefghij"},
                        sid=acct.sid)["f"]) == 1


def test_p_errors(module_server, api, acct):
    root = api.roots(acct)[2]
    enc = encrypt_file(plaintext(64))
    token = api.upload_bytes(acct, enc.ciphertext)
    good = Api.file_item(acct, token, enc, "g")
    file_node = api.call({"a": "p", "t": root, "n": [good]}, sid=acct.sid)["f"][0]
    other = api.new_account()
    start = log_offset(module_server)
    cases = [
        ({"a": "p", "t": "zzzzzzzz", "n": [Api.folder_item(acct, "x")]}, -9),
        ({"a": "p", "t": root, "n": [good]}, -2),                   # token already used
        ({"a": "p", "t": root, "n": [dict(good, h="A" * 36)]}, -2),  # unknown token
        ({"a": "p", "t": root, "n": [dict(good, h="short")]}, -2),
        ({"a": "p", "t": file_node["h"], "n": [Api.folder_item(acct, "x")]}, -2),
        ({"a": "p", "t": root, "n": []}, -2),
        ({"a": "p", "t": root}, -2),
        ({"a": "p", "t": root, "n": [dict(Api.folder_item(acct, "x"), k="AAAA")]}, -2),
        ({"a": "p", "t": root, "n": [dict(Api.folder_item(acct, "x"), t=7)]}, -2),
        ({"a": "p", "t": root, "n": [dict(Api.folder_item(acct, "x"), a="!!!")]}, -2),
        ({"a": "p", "t": root, "n": ["not an object"]}, -2),
        ({"a": "p", "t": root, "n": [dict(Api.folder_item(acct, "x"), p="nowhere1")]}, -9),
    ]
    for cmd, code in cases:
        assert api.call(cmd, sid=acct.sid) == code, cmd
    assert "WARNING" in new_log_text(module_server, start)
    # another account cannot use our token or put into our folders
    enc2 = encrypt_file(plaintext(64))
    token2 = api.upload_bytes(acct, enc2.ciphertext)
    assert api.call({"a": "p", "t": api.roots(other)[2],
                     "n": [Api.file_item(other, token2, enc2, "stolen")]}, sid=other.sid) == -2
    assert api.call({"a": "p", "t": root, "n": [Api.folder_item(other, "x")]},
                    sid=other.sid) == -9


def test_a_failing_p_creates_nothing(api, acct):
    root = api.roots(acct)[2]
    before = len(api.call({"a": "f"}, sid=acct.sid)["f"])
    items = [Api.folder_item(acct, "ok", "ph1"), dict(Api.folder_item(acct, "bad"), k="AA")]
    assert api.call({"a": "p", "t": root, "n": items}, sid=acct.sid) == -2
    assert len(api.call({"a": "f"}, sid=acct.sid)["f"]) == before


def test_g_info_and_download_url(api, acct):
    root = api.roots(acct)[2]
    enc = encrypt_file(plaintext(2000))
    node = api.put_file(acct, root, enc, "g.bin")
    info = api.call({"a": "g", "n": node["h"]}, sid=acct.sid)
    assert info == {"s": 2000, "at": node["a"]}
    full = api.call({"a": "g", "g": 1, "n": node["h"]}, sid=acct.sid)
    assert full["s"] == 2000 and full["g"].startswith(api.url)
    assert api.download(full["g"]) == enc.ciphertext
    folder = api.mkdir(acct, root, "d")
    assert api.call({"a": "g", "g": 1, "n": folder["h"]}, sid=acct.sid) == -9
    assert api.call({"a": "g", "g": 1, "n": "zzzzzzzz"}, sid=acct.sid) == -9
    assert api.call({"a": "g", "g": 1, "p": "zzzzzzzz"}) == -9
    assert api.call({"a": "g", "g": 1}, sid=acct.sid) == -2
    other = api.new_account()
    assert api.call({"a": "g", "g": 1, "n": node["h"]}, sid=other.sid) == -9


def test_l_is_idempotent_and_d1_removes(api, acct):
    root = api.roots(acct)[2]
    enc = encrypt_file(plaintext(10))
    node = api.put_file(acct, root, enc, "l.bin")
    ph = api.call({"a": "l", "n": node["h"]}, sid=acct.sid)
    assert isinstance(ph, str) and len(ph) == 8
    assert api.call({"a": "l", "n": node["h"], "i": "x"}, sid=acct.sid) == ph
    listing = api.call({"a": "f", "c": 1}, sid=acct.sid)
    assert [(p["h"], p["ph"]) for p in listing["ph"]] == [(node["h"], ph)]
    info = api.call({"a": "g", "g": 1, "p": ph})
    assert info["s"] == 10 and api.download(info["g"]) == enc.ciphertext
    assert api.call({"a": "l", "n": node["h"], "d": 1}, sid=acct.sid) == 0
    assert api.call({"a": "g", "g": 1, "p": ph}) == -9
    assert api.call({"a": "l", "n": node["h"], "d": 1}, sid=acct.sid) == -9
    ph2 = api.call({"a": "l", "n": node["h"]}, sid=acct.sid)
    assert ph2 != ph and api.call({"a": "g", "p": ph2})["s"] == 10
    assert api.call({"a": "l", "n": root}, sid=acct.sid) == -11
    assert api.call({"a": "l", "n": "zzzzzzzz"}, sid=acct.sid) == -9


def test_a_replaces_attributes(api, acct):
    root = api.roots(acct)[2]
    enc = encrypt_file(plaintext(10))
    node = api.put_file(acct, root, enc, "old")
    key = enc.key.pack()
    at = crypto.b64encode(crypto.encrypt_attr({"n": "new", "lbl": 2}, key))
    assert api.call({"a": "a", "n": node["h"], "at": at, "i": "r1"}, sid=acct.sid) == 0
    listing = {n["h"]: n for n in api.call({"a": "f"}, sid=acct.sid)["f"]}
    assert crypto.decrypt_attr(crypto.b64decode(listing[node["h"]]["a"]), key) == \
        {"n": "new", "lbl": 2}
    # the legacy form of mega.py / async-mega-py (attr + key) works too; the key is ignored
    at2 = crypto.b64encode(crypto.encrypt_attr({"n": "newer"}, key))
    assert api.call({"a": "a", "n": node["h"], "attr": at2, "key": "ignored"},
                    sid=acct.sid) == 0
    listing = {n["h"]: n for n in api.call({"a": "f"}, sid=acct.sid)["f"]}
    assert Api.node_name(acct, listing[node["h"]]) == "newer"
    assert api.call({"a": "a", "n": node["h"], "at": "!!"}, sid=acct.sid) == -2
    assert api.call({"a": "a", "n": node["h"]}, sid=acct.sid) == -2
    assert api.call({"a": "a", "n": "zzzzzzzz", "at": at}, sid=acct.sid) == -9
    assert api.call({"a": "a", "n": root, "at": at}, sid=acct.sid) == -11


def test_m_moves_and_refuses_cycles(api, acct):
    roots = api.roots(acct)
    top = api.mkdir(acct, roots[2], "top")
    sub = api.mkdir(acct, top["h"], "sub")
    enc = encrypt_file(plaintext(10))
    node = api.put_file(acct, roots[2], enc, "f")
    assert api.call({"a": "m", "n": node["h"], "t": sub["h"]}, sid=acct.sid) == 0
    parents = {n["h"]: n["p"] for n in api.call({"a": "f"}, sid=acct.sid)["f"]}
    assert parents[node["h"]] == sub["h"]
    assert api.call({"a": "m", "n": top["h"], "t": sub["h"]}, sid=acct.sid) == -10
    assert api.call({"a": "m", "n": top["h"], "t": top["h"]}, sid=acct.sid) == -10
    assert api.call({"a": "m", "n": top["h"], "t": "zzzzzzzz"}, sid=acct.sid) == -9
    assert api.call({"a": "m", "n": "zzzzzzzz", "t": top["h"]}, sid=acct.sid) == -9
    assert api.call({"a": "m", "n": top["h"], "t": node["h"]}, sid=acct.sid) == -2
    assert api.call({"a": "m", "n": roots[2], "t": roots[4]}, sid=acct.sid) == -11
    # into the rubbish bin, subtree and all
    assert api.call({"a": "m", "n": top["h"], "t": roots[4]}, sid=acct.sid) == 0
    parents = {n["h"]: n["p"] for n in api.call({"a": "f"}, sid=acct.sid)["f"]}
    assert parents[top["h"]] == roots[4] and parents[node["h"]] == sub["h"]


def test_d_deletes_the_subtree_frees_quota_and_links(api, acct):
    root = api.roots(acct)[2]
    top = api.mkdir(acct, root, "top")
    enc = encrypt_file(plaintext(3000))
    node = api.put_file(acct, top["h"], enc, "f")
    ph = api.call({"a": "l", "n": node["h"]}, sid=acct.sid)
    url = api.call({"a": "g", "g": 1, "n": node["h"]}, sid=acct.sid)["g"]
    assert api.call({"a": "uq"}, sid=acct.sid)["cstrg"] == 3000
    assert api.call({"a": "d", "n": top["h"], "i": "x"}, sid=acct.sid) == 0
    handles = {n["h"] for n in api.call({"a": "f"}, sid=acct.sid)["f"]}
    assert top["h"] not in handles and node["h"] not in handles
    assert api.call({"a": "uq"}, sid=acct.sid)["cstrg"] == 0
    assert api.call({"a": "g", "p": ph}) == -9
    assert requests.get(url, timeout=10).status_code == 404
    assert api.call({"a": "d", "n": top["h"]}, sid=acct.sid) == -9
    assert api.call({"a": "d", "n": root}, sid=acct.sid) == -11


def test_import_by_public_handle(api, acct):
    enc = encrypt_file(plaintext(700))
    node = api.put_file(acct, api.roots(acct)[2], enc, "shared")
    ph = api.call({"a": "l", "n": node["h"]}, sid=acct.sid)
    other = api.new_account()
    packed = enc.key.pack()
    item = {"ph": ph, "t": 0, "a": crypto.b64encode(crypto.encrypt_attr({"n": "mine"}, packed)),
            "k": crypto.b64encode(crypto.wrap_key(packed, other.master_key))}
    copy = api.call({"a": "p", "t": api.roots(other)[2], "n": [item]}, sid=other.sid)["f"][0]
    assert copy["s"] == 700 and copy["u"] == other.uh
    url = api.call({"a": "g", "g": 1, "n": copy["h"]}, sid=other.sid)["g"]
    assert api.call({"a": "d", "n": node["h"]}, sid=acct.sid) == 0
    assert api.download(url) == enc.ciphertext   # the copy keeps the shared blob alive


# --- batches and malformed input ------------------------------------------------------------
def test_batch_with_mixed_results(module_server, api, acct):
    start = log_offset(module_server)
    result = api.batch([{"a": "ug"}, {"a": "d", "n": "zzzzzzzz"}, {"a": "nosuchcommand"},
                        {"a": "f", "c": 1}, {"a": "u", "s": "12"}, {"no": "a"}, 7],
                       sid=acct.sid)
    assert len(result) == 7
    assert result[0]["u"] == acct.uh and result[1] == -9 and result[2] == -2
    assert "f" in result[3] and result[4] == -2 and result[5] == -2 and result[6] == -2
    text = new_log_text(module_server, start)
    assert "unknown command 'nosuchcommand'" in text
    assert text.count("WARNING") >= 4


@pytest.mark.parametrize("body", [b"not json", b"{\"a\": \"ug\"}", b"\xff\xfe", b"", b"42",
                                  b"[{\"a\":\"ug\"}", b"[" * 100000 + b"]" * 100000])
def test_malformed_bodies_are_eargs_with_a_warning(module_server, api, acct, body):
    start = log_offset(module_server)
    resp = api.post_cs(body, sid=acct.sid)
    assert resp.status_code == 200 and resp.json() == -2
    text = new_log_text(module_server, start)
    assert "WARNING" in text and "answering -2" in text


def test_out_of_range_integers_are_eargs(api, acct):
    assert api.call({"a": "u", "s": 10 ** 30}, sid=acct.sid) == -2
    assert api.call({"a": "u", "s": 1.5}, sid=acct.sid) == -2
    assert api.call({"a": "u", "s": True}, sid=acct.sid) == -2


def test_empty_batch_and_no_content_type(api, acct):
    resp = api.http.post(api.url + "cs?id=1&sid=" + acct.sid, data=b"[]",
                         headers={"Content-Type": ""})
    assert resp.json() == []
    resp = api.http.post(api.url + "cs?id=2&sid=" + acct.sid,
                         data=json.dumps([{"a": "ug"}]).encode())
    assert resp.json()[0]["u"] == acct.uh


def test_v3_parameter_still_gets_legacy_answers(api, acct):
    resp = api.post_cs(json.dumps([{"a": "l", "n": "zzzzzzzz"}]), sid=acct.sid, params="v=3")
    assert resp.json() == [-9]


def test_folder_link_session_of_an_unknown_link_is_enoent(module_server, api):
    """Folder-link sessions are modelled (issue 25, tests/server/test_server_shares.py); a
    public handle that names no exported folder answers -9 per command."""
    resp = api.post_cs(json.dumps([{"a": "f", "c": 1}]), params="n=abcdefgh")
    assert resp.json() == [-9]


def test_unknown_paths_are_404(api):
    assert requests.get(api.url + "nothing/here", timeout=10).status_code == 404
    assert requests.get(api.url + "cs", timeout=10).status_code == 404


# --- id replay ------------------------------------------------------------------------------
def test_same_id_same_body_replays_without_a_second_node(api, acct):
    root = api.roots(acct)[2]
    enc = encrypt_file(plaintext(100))
    token = api.upload_bytes(acct, enc.ciphertext)
    body = json.dumps([{"a": "p", "t": root, "n": [Api.file_item(acct, token, enc, "once")]}])
    first = api.post_cs(body, sid=acct.sid, rid=777001)
    second = api.post_cs(body, sid=acct.sid, rid=777001)
    assert first.content == second.content
    assert isinstance(first.json()[0], dict)
    files = [n for n in api.call({"a": "f"}, sid=acct.sid)["f"] if n["t"] == 0]
    assert len(files) == 1


def test_same_id_different_body_is_processed_as_new(api, acct):
    root = api.roots(acct)[2]
    a = api.post_cs(json.dumps([{"a": "p", "t": root, "n": [Api.folder_item(acct, "a")]}]),
                    sid=acct.sid, rid=777002).json()
    b = api.post_cs(json.dumps([{"a": "p", "t": root, "n": [Api.folder_item(acct, "b")]}]),
                    sid=acct.sid, rid=777002).json()
    assert a[0]["f"][0]["h"] != b[0]["f"][0]["h"]
    # the newest answer is the one cached now
    again = api.post_cs(json.dumps([{"a": "p", "t": root, "n": [Api.folder_item(acct, "a")]}]),
                        sid=acct.sid, rid=777002).json()
    assert again[0]["f"][0]["h"] not in (a[0]["f"][0]["h"], b[0]["f"][0]["h"])


def test_replay_is_per_session(api):
    one, two = api.new_account(), api.new_account()
    body = json.dumps([{"a": "ug"}])
    assert api.post_cs(body, sid=one.sid, rid=777003).json()[0]["u"] == one.uh
    assert api.post_cs(body, sid=two.sid, rid=777003).json()[0]["u"] == two.uh


def test_replay_without_a_session(api):
    mk, pk, ssc = (crypto.random_key() for _ in range(3))
    body = json.dumps([{"a": "up", "k": crypto.b64encode(crypto.wrap_key(mk, pk)),
                        "ts": crypto.b64encode(crypto.make_ts(mk, ssc))}])
    first = api.post_cs(body, rid=777004).json()
    assert api.post_cs(body, rid=777004).json() == first     # one account, not two
    assert api.post_cs(body, rid=777005).json() != first     # a new id is a new request


def test_errors_are_replayed_too(api, acct):
    body = json.dumps([{"a": "d", "n": "zzzzzzzz"}])
    assert api.post_cs(body, sid=acct.sid, rid=777006).json() == [-9]
    assert api.post_cs(body, sid=acct.sid, rid=777006).json() == [-9]
