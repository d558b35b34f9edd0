"""Server conformance for shares and folder links (issue 25), over real HTTP with a raw protocol
client acting as the web client (meganz/webclient js/crypto.js ``api_setshare1``,
``crypto_handleauth``, ``api_completeupload2``): ``s2`` to EXP with ``ok``/``ha``/``cr``, the
``ok``/``s`` lists and multi-entry ``k`` of the owner's ``f``, ``l`` on folders, ``n=``
folder-link sessions (``f``, ``g``), the ``s2``/``ph`` action packets, and the refusal of a
``p``/``m``/``s2`` whose ``cr`` lacks keys the sharees need."""
from __future__ import annotations

import json

import pytest
import requests

from helpers.client import fast_retry
from helpers.rawapi import Api, encrypt_file, plaintext
from megafs import crypto
from megafs.api.publicfolder import PublicFolder


@pytest.fixture(autouse=True)
def no_server_errors(module_server):
    log = module_server.log_path
    start = log.stat().st_size if log.exists() else 0
    yield
    text = log.read_bytes()[start:].decode(errors="replace")
    assert " ERROR " not in text and "Traceback" not in text, text[-2000:]


class Tree:
    """An account with ``album/{one.txt, sub/two.txt}`` made through the raw API."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.acct = api.new_account()
        self.root = api.roots(self.acct)[2]
        self.folder = api.mkdir(self.acct, self.root, "album")
        self.sub = api.mkdir(self.acct, self.folder["h"], "sub")
        self.files = {"one.txt": plaintext(1000, 1), "sub/two.txt": plaintext(70_000, 2)}
        self.nodes = [self.folder, self.sub,
                      api.put_file(self.acct, self.folder["h"], encrypt_file(self.files[
                          "one.txt"]), "one.txt"),
                      api.put_file(self.acct, self.sub["h"], encrypt_file(self.files[
                          "sub/two.txt"]), "two.txt")]
        self.share_key = crypto.random_key()

    def key(self, node: dict) -> bytes:
        return self.api.node_key(self.acct, node)

    def cr(self, nodes: list[dict], items: list[str] | None = None) -> list:
        flat: list = []
        for i, node in enumerate(nodes):
            flat += [0, i, crypto.b64encode(crypto.wrap_key(self.key(node), self.share_key))]
        return [[self.folder["h"]], [n["h"] for n in nodes] if items is None else items, flat]

    def s2(self, cr: list | None = "all", **extra) -> object:
        h = self.folder["h"]
        cmd = {"a": "s2", "n": h, "s": [{"u": "EXP", "r": 0}],
               "ok": crypto.b64encode(crypto.wrap_key(self.share_key, self.acct.master_key)),
               "ha": crypto.b64encode(crypto.wrap_key((h + h).encode(), self.acct.master_key)),
               "i": "rid0000000", **extra}
        if cr is not None:
            cmd["cr"] = self.cr(self.nodes) if cr == "all" else cr
        return self.api.call(cmd, sid=self.acct.sid)

    def export(self) -> str:
        assert self.s2() == {"r": [0], "u": []}
        ph = self.api.call({"a": "l", "n": self.folder["h"]}, sid=self.acct.sid)
        assert isinstance(ph, str) and len(ph) == 8
        return ph

    def link_call(self, ph: str, command: dict):
        """One command in the folder-link session of public handle ``ph``."""
        return self.api.post_cs(json.dumps([command]), rid=None, params="n=" + ph).json()[0]


@pytest.fixture
def tree(api):
    return Tree(api)


def test_s2_answers_an_object_and_f_lists_the_share(api, tree):
    ph = tree.export()
    listing = api.call({"a": "f", "c": 1, "r": 1}, sid=tree.acct.sid)
    (ok,) = listing["ok"]
    assert ok["h"] == tree.folder["h"]
    assert crypto.unwrap_key(crypto.b64decode(ok["k"]), tree.acct.master_key) == tree.share_key
    assert [(s["h"], s["u"], s["r"]) for s in listing["s"]] == [(tree.folder["h"], "EXP", 0)]
    assert {"h": tree.folder["h"], "ph": ph} in [{"h": p["h"], "ph": p["ph"]}
                                                 for p in listing["ph"]]
    by_handle = {n["h"]: n for n in listing["f"]}
    for node in tree.nodes:     # the owner's entry first, then the share root's
        own, shared = by_handle[node["h"]]["k"].split("/")
        assert own.split(":")[0] == tree.acct.uh and shared.split(":")[0] == tree.folder["h"]
        assert crypto.unwrap_key(crypto.b64decode(shared.split(":")[1]),
                                 tree.share_key) == tree.key(node)


def test_the_link_session_lists_the_subtree_under_the_share_key(api, tree):
    ph = tree.export()
    listing = tree.link_call(ph, {"a": "f", "c": 1, "r": 1})
    assert listing["f"][0]["h"] == tree.folder["h"]       # the root first, parents first
    assert sorted(n["h"] for n in listing["f"]) == sorted(n["h"] for n in tree.nodes)
    for node in listing["f"]:
        owner, wrapped = node["k"].split(":")
        assert owner == tree.folder["h"]
        key = crypto.unwrap_key(crypto.b64decode(wrapped), tree.share_key)
        assert crypto.decrypt_attr(crypto.b64decode(node["a"]), key)["n"]
    file_node = tree.nodes[3]
    got = tree.link_call(ph, {"a": "g", "g": 1, "n": file_node["h"]})
    assert got["s"] == 70_000 and got["g"].startswith("http")
    outside = api.put_file(tree.acct, tree.root, encrypt_file(b"private"), "private.txt")
    assert tree.link_call(ph, {"a": "g", "g": 1, "n": outside["h"]}) == -9
    for command in ({"a": "p", "t": tree.folder["h"], "n": []}, {"a": "l", "n": outside["h"]},
                    {"a": "d", "n": tree.folder["h"]}, {"a": "ug"}):
        assert tree.link_call(ph, command) == -11
    assert tree.link_call("AAAAAAAA", {"a": "f", "c": 1, "r": 1}) == -9


def test_a_folder_link_made_by_hand_reads_with_megafs(module_server, api, tree, tmp_path):
    """A test acting as the web client makes the link (cr with named items; a later upload's
    cr names its completion token, as ``api_completeupload2`` does); megafs reads it."""
    ph = tree.export()
    enc = encrypt_file(plaintext(5000, 3))
    token = api.upload_bytes(tree.acct, enc.ciphertext)
    item = api.file_item(tree.acct, token, enc, "late.txt")
    cr = [[tree.folder["h"]], [token], [0, 0, crypto.b64encode(crypto.wrap_key(
        enc.key.pack(), tree.share_key))]]
    assert "f" in api.call({"a": "p", "t": tree.folder["h"], "n": [item], "cr": cr},
                           sid=tree.acct.sid)
    url = "https://mega.nz/folder/%s#%s" % (ph, crypto.b64encode(tree.share_key))
    with PublicFolder(url, api=module_server.url, retry=fast_retry()) as public:
        listing = public.listing()
        got = {}
        for path, entry in listing.walk():
            if entry.type == 0:
                public.download(entry, str(tmp_path / entry.handle))
                got[path] = (tmp_path / entry.handle).read_bytes()
    assert got == dict(tree.files, **{"late.txt": enc.plaintext})


def test_missing_or_malformed_cr_keys(api, tree):
    assert tree.s2(cr=None) == -14                 # the folder's nodes need keys
    assert tree.s2(cr=tree.cr(tree.nodes[:-1])) == -14
    for bad in ([1, 2], [[tree.folder["h"]], [], [0, 0]], [[tree.folder["h"]], [], [5, 0, "x"]],
                [[tree.folder["h"]], [], [0, 0, "not base64!"]]):
        assert tree.s2(cr=bad) == -2
    assert api.call({"a": "l", "n": tree.folder["h"]}, sid=tree.acct.sid) == -11
    tree.export()
    other = crypto.random_key()
    clash = api.call({"a": "s2", "n": tree.folder["h"], "s": [{"u": "EXP", "r": 0}],
                      "ok": crypto.b64encode(crypto.wrap_key(other, tree.acct.master_key)),
                      "ha": "A" * 22}, sid=tree.acct.sid)
    assert crypto.unwrap_key(crypto.b64decode(clash["ok"]), tree.acct.master_key) == \
        tree.share_key
    enc = encrypt_file(b"no keys")
    token = api.upload_bytes(tree.acct, enc.ciphertext)
    assert api.call({"a": "p", "t": tree.sub["h"],
                     "n": [api.file_item(tree.acct, token, enc, "x")]}, sid=tree.acct.sid) == -14
    outside = api.mkdir(tree.acct, tree.root, "outside")
    assert api.call({"a": "m", "n": outside["h"], "t": tree.sub["h"]}, sid=tree.acct.sid) == -14
    cr = [[tree.folder["h"]], [outside["h"]], [0, 0, crypto.b64encode(crypto.wrap_key(
        tree.key(outside), tree.share_key))]]
    assert api.call({"a": "m", "n": outside["h"], "t": tree.sub["h"], "cr": cr},
                    sid=tree.acct.sid) == 0
    # a move inside the share needs nothing new
    assert api.call({"a": "m", "n": outside["h"], "t": tree.folder["h"]}, sid=tree.acct.sid) == 0


def test_s2_refuses_files_and_unknown_users(api, tree):
    assert api.call({"a": "s2", "n": tree.nodes[2]["h"], "s": [{"u": "EXP", "r": 0}]},
                    sid=tree.acct.sid) == -2
    # shares with full accounts: tests/client/test_client_inshares.py; nobody by that name: -9
    assert tree.s2(s=[{"u": "someoneelse", "r": 0}]) == -9
    assert tree.s2(s=[{"u": "nobody@example.com", "r": 0}]) == -9
    assert tree.s2(s=[{"u": "EXP", "r": 7}]) == -2


def test_packets_and_revocation(api, tree):
    sn = api.call({"a": "f", "c": 1, "r": 1}, sid=tree.acct.sid)["sn"]
    ph = tree.export()
    assert api.call({"a": "s2", "n": tree.folder["h"], "s": [{"u": "EXP"}]},
                    sid=tree.acct.sid) == {"r": [0], "u": []}
    packets = requests.post(api.url + "sc?sn=%s&sid=%s" % (sn, tree.acct.sid),
                            timeout=10).json()["a"]
    added, link, unlinked, removed = [p for p in packets if p["a"] in ("s2", "ph")]
    assert added["a"] == "s2" and added["u"] == "EXP" and added["r"] == 0
    assert added["o"] == tree.acct.uh and added["ok"] and added["ha"]
    assert link == dict(link, a="ph", ph=ph, n=1)
    assert removed["a"] == "s2" and "r" not in removed and removed["okd"] == 1
    assert unlinked == dict(unlinked, a="ph", ph=ph, d=1)
    assert tree.link_call(ph, {"a": "f", "c": 1, "r": 1}) == -9
    listing = api.call({"a": "f", "c": 1, "r": 1}, sid=tree.acct.sid)
    assert listing["ok"] == [] and listing["s"] == []
    assert all("/" not in n["k"] for n in listing["f"])     # keys under the share key gone


def test_replays_are_per_link_and_bad_handles_are_refused(api):
    first, second = Tree(api), Tree(api)
    links = [first.export(), second.export()]
    body = json.dumps([{"a": "f", "c": 1, "r": 1}])
    answers = [api.post_cs(body, rid="same-id", params="n=" + ph).json()[0] for ph in links]
    assert answers[0]["f"][0]["h"] == first.folder["h"]
    assert answers[1]["f"][0]["h"] == second.folder["h"]
    assert api.post_cs(body, rid="x", params="n=bad!").json() == -2


def test_deleting_the_folder_ends_the_link(api, tree):
    ph = tree.export()
    assert api.call({"a": "d", "n": tree.folder["h"]}, sid=tree.acct.sid) == 0
    assert tree.link_call(ph, {"a": "f", "c": 1, "r": 1}) == -9
    assert api.call({"a": "f", "c": 1, "r": 1}, sid=tree.acct.sid)["ok"] == []


def test_the_link_session_follows_the_owners_changes_on_sc(api, tree):
    ph = tree.export()
    sn = tree.link_call(ph, {"a": "f", "c": 1, "r": 1})["sn"]
    poll = api.url + "sc?sn=%s&n=%s"
    idle = requests.post(poll % (sn, ph), timeout=10).json()
    assert idle["sn"] == sn and "/wsc/" in idle["w"]
    sid = tree.acct.sid
    enc = encrypt_file(b"new in sub")
    token = api.upload_bytes(tree.acct, enc.ciphertext)
    wrapped_key = crypto.b64encode(crypto.wrap_key(enc.key.pack(), tree.share_key))
    cr = [[tree.folder["h"]], [], [0, 0, wrapped_key]]
    added = api.call({"a": "p", "t": tree.sub["h"], "i": "ownerrid01", "cr": cr,
                      "n": [api.file_item(tree.acct, token, enc, "new.txt")]}, sid=sid)["f"][0]
    one, two = tree.nodes[2], tree.nodes[3]
    renamed = crypto.b64encode(crypto.encrypt_attr({"n": "renamed.txt"}, tree.key(one)))
    assert api.call({"a": "a", "n": one["h"], "at": renamed}, sid=sid) == 0
    assert api.call({"a": "m", "n": two["h"], "t": tree.root}, sid=sid) == 0
    assert api.call({"a": "d", "n": added["h"]}, sid=sid) == 0
    api.put_file(tree.acct, tree.root, encrypt_file(b"elsewhere"), "elsewhere.txt")
    feed = requests.post(poll % (sn, ph), timeout=10).json()
    kinds = [(p["a"], p.get("n")) for p in feed["a"]]
    assert kinds == [("t", None), ("u", one["h"]), ("d", two["h"]), ("d", added["h"])]
    new = feed["a"][0]
    assert "i" not in new and [n["h"] for n in new["t"]["f"]] == [added["h"]]
    owner, wrapped = new["t"]["f"][0]["k"].split(":")
    assert owner == tree.folder["h"]
    assert crypto.unwrap_key(crypto.b64decode(wrapped), tree.share_key) == enc.key.pack()
    assert api.call({"a": "l", "n": tree.folder["h"], "d": 1}, sid=sid) == 0
    assert requests.post(poll % (sn, ph), timeout=10).json() == -9
