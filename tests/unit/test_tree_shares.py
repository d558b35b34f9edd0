"""The tree's share keys (issue 25, ``tree/shares.py``): kept from ``f`` (``ok`` checked with
``ha``), from ``s2`` action packets (made: kept when ``ha`` authenticates it; ended with
``okd``; another account's share ignored), across the node-tree cache, with who each folder is
shared with (revoking the folder link keeps the key of a folder a user still shares: a
stand-in client, since the local server models no user shares); and the ``cr`` that
``tree/remote.py`` adds to a ``p``/``m`` into an exported folder, decryptable with the share
key to the very node keys (none outside every shared folder)."""
from __future__ import annotations

import pytest

from megafs import crypto
from megafs.api import sharekeys
from megafs.tree import cache, remote
from megafs.tree.nodes import FILE, FOLDER, ROOT, Node
from megafs.tree.packets import apply
from megafs.tree.shares import ShareKeys
from megafs.tree.tree import Tree

MASTER, USER = bytes(range(16)), "userHANDLE1"
SHARE = bytes(range(100, 116))


def sample() -> Tree:
    """root / album (exported) / sub / f.bin, root / other / g.bin."""
    tree = Tree(MASTER, USER)
    tree.restore([
        Node("ROOT0001", "", ROOT, None),
        Node("ALBUM001", "ROOT0001", FOLDER, "album", key=b"a" * 16, attrs={"n": "album"}),
        Node("SUB00001", "ALBUM001", FOLDER, "sub", key=b"s" * 16, attrs={"n": "sub"}),
        Node("FILE0001", "SUB00001", FILE, "f.bin", key=b"f" * 32, attrs={"n": "f.bin"}),
        Node("OTHER001", "ROOT0001", FOLDER, "other", key=b"o" * 16, attrs={"n": "other"}),
        Node("FILE0002", "OTHER001", FILE, "g.bin", key=b"g" * 32, attrs={"n": "g.bin"}),
    ])
    return tree


def ok_entry(handle: str, key: bytes, master: bytes = MASTER) -> dict:
    return {"h": handle, "k": crypto.b64encode(sharekeys.owner_key(key, master)),
            "ha": crypto.b64encode(sharekeys.handle_auth(handle, master))}


def unwrap_cr(cr: list, key: bytes) -> dict[tuple[str, int], bytes]:
    roots, _items, flat = cr
    return {(roots[flat[i]], flat[i + 1]): crypto.unwrap_key(crypto.b64decode(flat[i + 2]), key)
            for i in range(0, len(flat), 3)}


def test_share_keys_from_f_only_when_ha_authenticates():
    tree = sample()
    forged = dict(ok_entry("OTHER001", SHARE), ha=ok_entry("ALBUM001", SHARE)["ha"])
    tree.load([{"h": "ROOT0001", "t": 2}], ok=[ok_entry("ALBUM001", SHARE), forged, "junk"])
    assert dict(tree.shares.snapshot()) == {"ALBUM001": SHARE}
    tree.load([{"h": "ROOT0001", "t": 2}])          # a listing without ``ok``: kept
    assert tree.shares.get("ALBUM001") == SHARE


def test_s2_packets_make_and_end_a_share(caplog):
    tree = sample()
    made = dict(ok_entry("ALBUM001", SHARE), a="s2", n="ALBUM001", o=USER, u="EXP", r=0)
    del made["h"], made["k"]
    made["ok"] = ok_entry("ALBUM001", SHARE)["k"]
    assert apply(tree, made) == set()
    assert tree.shares.get("ALBUM001") == SHARE
    # another account's share, and a forged ha, change nothing
    apply(tree, dict(made, n="OTHER001", o="someoneElse"))
    apply(tree, dict(made, n="OTHER001"))
    assert "OTHER001" not in tree.shares.snapshot()
    assert "does not match" in caplog.text
    # ended: without r, and okd once no sharee is left
    apply(tree, {"a": "s2", "n": "ALBUM001", "o": USER, "u": "EXP"})
    assert tree.shares.get("ALBUM001") == SHARE
    apply(tree, {"a": "s2", "n": "ALBUM001", "o": USER, "u": "EXP", "okd": 1})
    assert tree.shares.get("ALBUM001") is None


def test_share_keys_survive_the_tree_cache(tmp_path):
    tree = sample()
    tree.shares.set("ALBUM001", SHARE)
    tree.shares.shared("ALBUM001", "colleagueUH1", True)
    cache.save(tree, "SN1", str(tmp_path))
    loaded = cache.load(str(tmp_path), MASTER, USER)
    assert loaded is not None and dict(loaded[0].shares.snapshot()) == {"ALBUM001": SHARE}
    assert loaded[0].shares.others("ALBUM001")


class Unsharing:
    """A stand-in for the ``MegaApi`` call ``unexport_folder`` makes (recorded)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def unshare_folder(self, handle: str) -> None:
        self.calls.append(handle)


def test_revoking_the_link_keeps_the_key_of_a_folder_users_share():
    tree = sample()
    tree.load([{"h": "ROOT0001", "t": 2}],
              ok=[ok_entry("ALBUM001", SHARE), ok_entry("OTHER001", SHARE)],
              shares=[{"h": "ALBUM001", "u": "EXP", "r": 0},
                      {"h": "ALBUM001", "u": "colleagueUH1", "r": 1},
                      {"h": "OTHER001", "u": "EXP", "r": 0}, {"h": 5}, "junk"])
    client = Unsharing()
    remote.unexport_folder(client, tree, "ALBUM001")        # type: ignore[arg-type]
    remote.unexport_folder(client, tree, "OTHER001")        # type: ignore[arg-type]
    assert client.calls == ["ALBUM001", "OTHER001"]
    assert dict(tree.shares.snapshot()) == {"ALBUM001": SHARE}
    # the colleague's share ends (a packet without r, then okd): the key goes
    apply(tree, {"a": "s2", "n": "ALBUM001", "o": USER, "u": "colleagueUH1"})
    assert not tree.shares.others("ALBUM001")
    apply(tree, {"a": "s2", "n": "ALBUM001", "o": USER, "u": "colleagueUH1", "okd": 1})
    assert tree.shares.get("ALBUM001") is None


def test_cr_of_put_and_move_into_an_exported_folder():
    tree = sample()
    assert remote.cr_for_put(tree, "SUB00001", [b"n" * 32]) is None      # nothing shared
    assert remote.cr_for_move(tree, "FILE0002", "SUB00001") is None
    tree.shares.set("ALBUM001", SHARE)
    cr = remote.cr_for_put(tree, "SUB00001", [b"n" * 32, b"m" * 16])
    assert cr is not None and cr[0] == ["ALBUM001"] and cr[1] == []
    assert unwrap_cr(cr, SHARE) == {("ALBUM001", 0): b"n" * 32, ("ALBUM001", 1): b"m" * 16}
    assert remote.cr_for_put(tree, "OTHER001", [b"n" * 32]) is None     # outside the share
    # a move names every node of the moved subtree
    cr = remote.cr_for_move(tree, "OTHER001", "SUB00001")
    assert cr is not None and sorted(cr[1]) == ["FILE0002", "OTHER001"]
    keys = unwrap_cr(cr, SHARE)
    assert {cr[1][i]: k for (_, i), k in keys.items()} == {"OTHER001": b"o" * 16,
                                                           "FILE0002": b"g" * 32}
    assert remote.cr_for_move(tree, "FILE0001", "OTHER001") is None     # moved out


def test_share_keys_map_is_a_snapshot():
    keys = ShareKeys()
    keys.set("ALBUM001", SHARE)
    before = keys.snapshot()
    keys.set("ALBUM001", None)
    assert dict(before) == {"ALBUM001": SHARE} and len(keys) == 0
    with pytest.raises(ValueError):
        keys.set("ALBUM001", b"short")


def test_a_removed_folder_forgets_its_share_key():
    tree = sample()
    tree.shares.set("SUB00001", SHARE)
    tree.shares.set("OTHER001", SHARE)
    tree.remove("ALBUM001")
    assert dict(tree.shares.snapshot()) == {"OTHER001": SHARE}
