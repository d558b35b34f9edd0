"""Unit tests of the node tree: decryption, escaping, duplicate names and sc packets."""
from __future__ import annotations

import logging

import pytest

from megafs import crypto
from megafs.errors import ProtocolError
from megafs.tree.packets import apply as apply_packet
from megafs.tree.tree import Tree, lookup

from helpers.trees import MK, UH, raw_node, tree_of


def test_load_lookup_and_paths():
    tree = tree_of(raw_node("DIRAAAAA", "ROOTROOT", "docs", folder=True),
                   raw_node("FILEAAAA", "DIRAAAAA", "a.txt", size=5, attrs={"t": 1234}))
    assert tree.root == "ROOTROOT" and tree.rubbish == "RUBBISHX"
    assert set(tree.children("ROOTROOT")) == {"docs"}
    node = lookup(tree, "/docs/a.txt")
    assert node.handle == "FILEAAAA" and node.size == 5 and node.mtime == 1234
    assert node.file_key.pack() == node.key
    assert tree.path_of("FILEAAAA") == "/docs/a.txt"
    assert lookup(tree, "/docs/missing") is None
    assert lookup(tree, "/docs/a.txt/x") is None
    assert lookup(tree, "/").handle == "ROOTROOT"


def test_mtime_falls_back_to_ts():
    tree = tree_of(raw_node("FILEAAAA", "ROOTROOT", "a", ts=777))
    assert lookup(tree, "/a").mtime == 777


@pytest.mark.parametrize("remote,shown", [
    ("a/b", "a%2Fb"), ("..", "%2E%2E"), (".", "%2E"), ("x\0y", "x%00y"), ("", "%empty"),
    ("50%/x", "50%25%2Fx"), ("50% done", "50% done"), ("emoji 📷 and spaces", "emoji 📷 and spaces"),
    ("line\nbreak", "line\nbreak"), ("bad\ud800", "bad%uD800"),
])
def test_invalid_names_are_escaped(remote, shown):
    tree = tree_of(raw_node("FILEAAAA", "ROOTROOT", remote))
    assert list(tree.children("ROOTROOT")) == [shown]
    assert lookup(tree, "/" + shown).handle == "FILEAAAA"


def test_long_names_are_cut_with_handle():
    tree = tree_of(raw_node("FILEAAAA", "ROOTROOT", "é" * 200))
    (name,) = tree.children("ROOTROOT")
    assert len(name.encode()) <= 255 and name.endswith("~FILEAAAA")


def test_duplicate_names_newest_keeps_name():
    tree = tree_of(raw_node("OLDAAAAA", "ROOTROOT", "photo.png", ts=100),
                   raw_node("NEWAAAAA", "ROOTROOT", "photo.png", ts=200),
                   raw_node("MIDAAAAA", "ROOTROOT", "photo.png", ts=150),
                   raw_node("NOEXTAAA", "ROOTROOT", "README", ts=1),
                   raw_node("NOEXTBBB", "ROOTROOT", "README", ts=2))
    kids = tree.children("ROOTROOT")
    assert kids["photo.png"].handle == "NEWAAAAA"
    assert kids["photo (OLDAAAAA).png"].handle == "OLDAAAAA"
    assert kids["photo (MIDAAAAA).png"].handle == "MIDAAAAA"
    assert kids["README"].handle == "NOEXTBBB"
    assert kids["README (NOEXTAAA)"].handle == "NOEXTAAA"
    assert tree.path_of("OLDAAAAA") == "/photo (OLDAAAAA).png"
    # when the newest goes away, the next newest takes the plain name
    apply_packet(tree, {"a": "d", "n": "NEWAAAAA"})
    assert tree.children("ROOTROOT")["photo.png"].handle == "MIDAAAAA"


def test_undecryptable_nodes_get_placeholder_and_log(caplog):
    bad_key = raw_node("BADKEYAA", "ROOTROOT", "secret", mk=bytes(16))
    no_entry = raw_node("OTHERUSR", "ROOTROOT", "theirs", user="ZZZZZZZZZZZ")
    garbage = raw_node("GARBAGEA", "ROOTROOT", "x")
    garbage["a"] = "not base64 !!"
    with caplog.at_level(logging.WARNING, logger="megafs.tree.nodes"):
        tree = tree_of(bad_key, no_entry, garbage)
    kids = tree.children("ROOTROOT")
    assert set(kids) == {"undecryptable-BADKEYAA", "undecryptable-OTHERUSR",
                         "undecryptable-GARBAGEA"}
    assert all(not n.ok for n in kids.values())
    assert sum("cannot be decrypted" in r.message for r in caplog.records) == 3


def test_malformed_nodes_are_skipped(caplog):
    with caplog.at_level(logging.WARNING, logger="megafs.tree.nodes"):
        tree = tree_of(-9, {"h": 5}, {"h": "TYPEBAD1", "t": "x"}, "string",
                       raw_node("GOODAAAA", "ROOTROOT", "good"))
    assert list(tree.children("ROOTROOT")) == ["good"]
    assert sum("malformed node" in r.message for r in caplog.records) == 4


def test_listing_without_root_is_an_error():
    tree = Tree(MK, UH)
    with pytest.raises(ProtocolError):
        tree.load([raw_node("FILEAAAA", "ROOTROOT", "a")])


def test_action_packets():
    tree = tree_of(raw_node("DIRAAAAA", "ROOTROOT", "d", folder=True))
    new = raw_node("FILEAAAA", "DIRAAAAA", "n.txt")
    assert apply_packet(tree, {"a": "t", "t": {"f": [new]}}) == {"DIRAAAAA"}
    assert lookup(tree, "/d/n.txt").handle == "FILEAAAA"
    # rename through a 'u' packet re-encrypted with the node's own key
    key = tree.get("FILEAAAA").key
    at = crypto.b64encode(crypto.encrypt_attr({"n": "renamed.txt"}, key))
    apply_packet(tree, {"a": "u", "n": "FILEAAAA", "at": at, "ts": 5})
    assert set(tree.children("DIRAAAAA")) == {"renamed.txt"}
    # public handle set and removed
    apply_packet(tree, {"a": "ph", "h": "FILEAAAA", "ph": "PUBLICPH", "n": 1})
    assert tree.get("FILEAAAA").public == "PUBLICPH"
    apply_packet(tree, {"a": "ph", "h": "FILEAAAA", "ph": "PUBLICPH", "d": 1})
    assert tree.get("FILEAAAA").public is None
    # move = d(m:1) + t
    moved = dict(new, p="ROOTROOT", a=at)
    apply_packet(tree, {"a": "d", "n": "FILEAAAA", "m": 1})
    apply_packet(tree, {"a": "t", "t": {"f": [moved]}})
    assert tree.path_of("FILEAAAA") == "/renamed.txt"
    # deleting a folder removes its subtree
    apply_packet(tree, {"a": "t", "t": {"f": [raw_node("INNERAAA", "DIRAAAAA", "inner")]}})
    apply_packet(tree, {"a": "d", "n": "DIRAAAAA"})
    assert tree.get("INNERAAA") is None and lookup(tree, "/d") is None
    # garbage packets are ignored
    for junk in (5, None, {"a": "t"}, {"a": "t", "t": 3}, {"a": "d", "n": 7}, {"a": "zz"},
                 {"a": "u", "n": "FILEAAAA", "at": 9}):
        assert apply_packet(tree, junk) == set()
    assert lookup(tree, "/renamed.txt") is not None


def test_update_that_fails_to_decrypt_marks_node():
    tree = tree_of(raw_node("FILEAAAA", "ROOTROOT", "a"))
    bad = crypto.b64encode(crypto.encrypt_attr({"n": "b"}, bytes(16)))
    apply_packet(tree, {"a": "u", "n": "FILEAAAA", "at": bad})
    assert list(tree.children("ROOTROOT")) == ["undecryptable-FILEAAAA"]


def test_own_copy_keeps_values_but_not_the_listings_objects():
    """Nodes keep copies of the handles and numbers of a parsed listing, so that the listing's
    memory can go back to the system once it is freed (``nodes.own_copy``)."""
    import json

    from megafs.tree.nodes import decrypt_node, own_copy
    raw = json.loads('{"h": "AbCdEfGh", "ts": 1700000000, "s": 123456789012345, '
                     '"odd": "\\ud800x", "neg": -7000000000, "small": 7}')
    for key in ("h", "ts", "s", "odd", "neg"):
        copy = own_copy(raw[key])
        assert copy == raw[key] and type(copy) is type(raw[key]) and copy is not raw[key]
    assert own_copy(raw["small"]) == 7
    node = decrypt_node({"h": raw["h"], "t": 2, "p": "", "ts": raw["ts"], "u": "OwnerUser"},
                        bytes(16), "OwnerUser")
    assert node.handle == "AbCdEfGh" and node.handle is not raw["h"] and node.ts == 1700000000
