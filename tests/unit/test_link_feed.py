"""A folder link's tree and its change feed, pure parts (issue 25 item 4): the link session's
``sc`` packets checked as its listing is (``publicfolder.check_packets``), applied to the
tree a link mount shows (``tree/linkfeed.py``: keys ``ROOT:KEY`` under the share key), and
the read-only file system's refusals (``vfs/linkfs.py``: EROFS and one log line each)."""
from __future__ import annotations

import errno
import logging
import os

import pytest

from megafs import crypto
from megafs.api.folderlink import parse_folder_link
from megafs.api.publicfolder import check_packets, parse_listing
from megafs.errors import FsError
from megafs.tree.linkfeed import LinkWatcher, link_tree
from megafs.vfs.linkfs import LinkFileSystem
from megafs.vfs.readcache import ReadCache

SHARE_KEY = bytes(range(16))
ROOT, SUB = "R0000000", "S0000000"
LINK = parse_folder_link("https://mega.nz/folder/AbCdEf01#" + crypto.b64encode(SHARE_KEY))


def node(h: str, p: str, name: str, t: int = 1, size: int = 0) -> dict:
    key = os.urandom(16 if t else 32)
    attr_key = key if t else crypto.FileKey.unpack(key).aes_key
    raw = {"h": h, "p": p, "t": t, "u": "UUUUUUUUUUU", "ts": 1,
           "a": crypto.b64encode(crypto.encrypt_attr({"n": name}, attr_key)),
           "k": "%s:%s" % (ROOT, crypto.b64encode(crypto.wrap_key(key, SHARE_KEY)))}
    if t == 0:
        raw["s"] = size
    return raw


def listing_reply(*nodes: dict) -> dict:
    return {"f": [node(ROOT, "OWNERxxx", "album"), node(SUB, ROOT, "extras"), *nodes],
            "ok": [], "s": [], "sn": "AAAAAAAAAAA"}


def watcher(*nodes: dict) -> LinkWatcher:
    listing = parse_listing(listing_reply(*nodes), SHARE_KEY)
    return LinkWatcher(None, link_tree(listing, SHARE_KEY), listing.sn)   # type: ignore


def names(tree, handle: str = ROOT) -> list[str]:
    return sorted(tree.children(handle))


def test_good_packets_pass_and_other_kinds_are_left_out_quietly(caplog):
    good = [{"a": "t", "t": {"f": [node("F0000000", SUB, "x.txt", 0, 5)]}},
            {"a": "u", "n": "F0000000", "at": "abc"}, {"a": "d", "n": "F0000000"}]
    with caplog.at_level(logging.WARNING):
        assert check_packets(good + [{"a": "s2", "n": ROOT}, {"a": "ph"}, "junk"]) == good
    assert caplog.records == []


@pytest.mark.parametrize("packet, reason", [
    ({"a": "t", "t": {"f": []}}, "no nodes"),
    ({"a": "t", "t": {"f": [dict(node("F0000000", SUB, "x"), t=2)]}}, "not a file or folder"),
    ({"a": "t", "t": {"f": [dict(node("F0000000", SUB, "x", 0), s=2 ** 62)]}},
     "size MEGA cannot store"),
    ({"a": "t", "t": {"f": [dict(node("F0000000", SUB, "x"), h="short")]}}, "good handle"),
    ({"a": "t", "t": {"f": [dict(node("F0000000", SUB, "x"), k=None)]}}, "no key"),
    ({"a": "u", "n": "F0000000"}, "no attributes"),
    ({"a": "d", "n": ["F0000000"]}, "no node handle"),
])
def test_a_malformed_packet_is_left_out_with_one_line(packet, reason, caplog):
    with caplog.at_level(logging.WARNING):
        assert check_packets([packet]) == []
    assert [r.getMessage() for r in caplog.records if reason in r.getMessage()] and \
        len(caplog.records) == 1
    assert check_packets({"a": "t"}) == []          # not a list at all


def test_packets_add_rename_and_remove_nodes_of_the_link():
    w = watcher(node("A0000000", ROOT, "a.txt", 0, 3))
    tree = w.tree
    assert names(tree) == ["a.txt", "extras"]
    new = node("F0000000", SUB, "late.txt", 0, 7)
    paths = w.apply(check_packets([{"a": "t", "t": {"f": [new]}}]))
    assert names(tree, SUB) == ["late.txt"] and paths == {"/extras", "/extras/late.txt"}
    key = tree.get("A0000000").key
    at = crypto.b64encode(crypto.encrypt_attr({"n": "b.txt"},
                                              crypto.FileKey.unpack(key).aes_key))
    assert w.apply(check_packets([{"a": "u", "n": "A0000000", "at": at}])) == \
        {"/", "/a.txt", "/b.txt"}
    assert names(tree) == ["b.txt", "extras"]
    w.apply(check_packets([{"a": "d", "n": SUB}]))
    assert names(tree) == ["b.txt"] and tree.get("F0000000") is None


def test_packets_cannot_move_the_root_or_make_a_cycle():
    w = watcher()
    tree = w.tree
    # the exported folder itself "moved" or removed: the mount's root stays
    w.apply(check_packets([{"a": "t", "t": {"f": [node(ROOT, SUB, "album")]}},
                           {"a": "d", "n": ROOT}]))
    assert tree.get(ROOT) is not None and names(tree) == ["extras"]
    # a folder put inside its own child is refused by the tree (tree/walks.py)
    w.apply(check_packets([{"a": "t", "t": {"f": [node("T0000000", SUB, "t")]}}]))
    w.apply(check_packets([{"a": "t", "t": {"f": [node(SUB, "T0000000", "extras")]}}]))
    assert tree.path_of("T0000000") == "/extras/t"
    # a node under a parent the link does not have is shown nowhere
    w.apply(check_packets([{"a": "t", "t": {"f": [node("Z0000000", "Q0000000", "z", 0)]}}]))
    assert "z" not in names(tree)


def test_a_key_entry_for_another_root_is_shown_as_undecryptable():
    stray = dict(node("F0000000", SUB, "x.txt", 0, 1), k="OTHERxxx:" + "A" * 43)
    w = watcher()
    w.apply(check_packets([{"a": "t", "t": {"f": [stray]}}]))
    assert names(w.tree, SUB) == ["undecryptable-F0000000"]


def test_every_write_is_erofs_with_one_log_line(caplog):
    w = watcher(node("A0000000", ROOT, "a.txt", 0, 3))
    fs = LinkFileSystem(w.tree, ReadCache(object()), None, LINK)   # type: ignore[arg-type]
    writes = [lambda: fs.create("/new", os.O_WRONLY), lambda: fs.open("/a.txt", os.O_RDWR),
              lambda: fs.open("/a.txt", os.O_RDONLY | os.O_TRUNC),
              lambda: fs.write(1, b"x", 0), lambda: fs.truncate("/a.txt", 0),
              lambda: fs.mkdir("/d"), lambda: fs.rmdir("/extras"), lambda: fs.unlink("/a.txt"),
              lambda: fs.rename("/a.txt", "/b"), lambda: fs.symlink("/l", "a.txt"),
              lambda: fs.utimens("/a.txt", 0), lambda: fs.chmod("/a.txt", 0o600),
              lambda: fs.chown("/a.txt"), lambda: fs.setxattr("/a.txt", "user.x", b"1"),
              lambda: fs.removexattr("/a.txt", "user.x")]
    for write in writes:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="megafs.vfs.linkfs"):
            with pytest.raises(FsError) as refused:
                write()
        assert refused.value.errno == errno.EROFS
        assert len(caplog.records) == 1 and "refused (EROFS)" in caplog.records[0].getMessage()
    assert fs.readdir("/") == ["a.txt", "extras"]
    item = fs.getxattr("/a.txt", "user.mega.link")
    assert fs.getattr("/a.txt.link")["st_size"] == len(item) + 1
    assert fs.getxattr("/", "user.mega.link").decode() == LINK.url()


class ScriptedFeed:
    """A link session whose polls answer from a script (packets or a MegaError) and whose
    ``f`` answers a listing: what the watcher's loop does with each answer."""

    link = LINK

    def __init__(self, script: list, listing: dict) -> None:
        self.script = script
        self.reply = listing

    def poll(self, sn, timeout, cancel=None):
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def listing(self):
        return parse_listing(self.reply, SHARE_KEY)


def test_the_feed_lists_again_when_behind_and_empties_the_mount_once_revoked(caplog):
    from megafs.errors import ApiCode, MegaError
    w = watcher(node("A0000000", ROOT, "a.txt", 0, 3))
    new = node("F0000000", SUB, "late.txt", 0, 7)
    touched, gone = [], []
    w.public = ScriptedFeed([([{"a": "t", "t": {"f": [new]}}], "AAAAAAAAAAB"),
                             MegaError(ApiCode.ETOOMANY, "behind"),
                             ([], "AAAAAAAAAAC"), MegaError(ApiCode.ENOENT, "gone")],
                            listing_reply(node("B0000000", ROOT, "b.txt", 0, 1)))
    w.on_paths = lambda paths: touched.append((paths, names(w.tree)))
    w.on_gone = lambda: gone.append(1)
    with caplog.at_level(logging.WARNING):
        w._run()                          # returns once the link is gone
    assert touched[0][0] == {"/extras", "/extras/late.txt"}
    assert touched[1] == ({"/", "/a.txt", "/b.txt", "/extras", "/extras/late.txt"},
                          ["b.txt", "extras"])      # listed again: the listing's tree
    assert touched[2] == ({"/", "/b.txt", "/extras"}, [])  # revoked: empty, all invalidated
    assert w.gone and gone == [1] and names(w.tree) == [] and w.tree.get(ROOT) is not None
    assert w.sn == "AAAAAAAAAAC"           # the sn of the listing made again, then polled on
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and "fell behind" in warnings[0] and "revoked" in warnings[1]
