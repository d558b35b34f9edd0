"""The node-tree state cache (``tree/cache.py``): a saved tree loads back node for node, and a
cache that is damaged, of another format, account or key is ignored (the mount then fetches)."""
from __future__ import annotations

import gc
import marshal
import os
import sys

from megafs.tree import cache
from megafs.tree.nodes import FILE, FOLDER, ROOT, Node
from megafs.tree.tree import Tree

KEY, USER = bytes(range(16)), "userHANDLE1"


def sample_tree(files: int = 120_000) -> Tree:
    """A root, a folder and ``files`` files in it (more than two cache chunks)."""
    nodes = [Node("ROOT0001", "", ROOT, None), Node("FOLDER01", "ROOT0001", FOLDER, "docs",
                                                    key=b"k" * 16, attrs={"n": "docs"})]
    nodes += [Node("F%07d" % i, "FOLDER01", FILE, "f%d" % i, size=i, ts=1_700_000_000 + i,
                   key=bytes([i % 256]) * 32, attrs={"n": "f%d" % i, "mfs-mt": i},
                   public="P%07d" % i if i % 7 == 0 else None, mtime_ns=i * 10**9 + 5)
              for i in range(files)]
    nodes.append(Node("RENAMED1", "FOLDER01", FILE, "shown (1)", attrs={"n": "shown"}))
    tree = Tree(KEY, USER)
    tree.restore(nodes)
    return tree


def test_a_saved_tree_loads_back_node_for_node(tmp_path):
    tree = sample_tree()
    assert cache.save(tree, "SN000001", str(tmp_path)) == len(tree)
    assert oct(os.stat(tmp_path / cache.FILE_NAME).st_mode & 0o777) == "0o600"
    loaded = cache.load(str(tmp_path), KEY, USER)
    assert loaded is not None
    again, sn = loaded
    assert sn == "SN000001" and again.root == "ROOT0001" and len(again) == len(tree)
    for node in tree.nodes():
        assert again.get(node.handle) == node
    assert again.child("FOLDER01", "f42").size == 42
    assert gc.isenabled()                       # the pause ends with the load


def test_other_account_key_format_or_damage_is_ignored(tmp_path):
    tree = sample_tree(10)
    cache.save(tree, "SN1", str(tmp_path))
    path = tmp_path / cache.FILE_NAME
    good = path.read_bytes()
    assert cache.load(str(tmp_path), bytes(16), USER) is None           # another key
    assert cache.load(str(tmp_path), KEY, "someoneElse") is None        # another account
    path.write_bytes(good[:-10])                                        # truncated
    assert cache.load(str(tmp_path), KEY, USER) is None
    # a chunk whose columns do not line up
    header = marshal.dumps((cache.FORMAT, tuple(sys.version_info[:2]), USER,
                            cache._key_digest(KEY), "SN1", 1, {}, {}))
    bad = marshal.dumps([["ROOT0001"], [""], [ROOT]])
    path.write_bytes(cache._framed(header) + cache._framed(bad))
    assert cache.load(str(tmp_path), KEY, USER) is None
    # the rows of the first format are not read as columns
    old = marshal.dumps((1, tuple(sys.version_info[:2]), USER, cache._key_digest(KEY), "SN1", 1))
    path.write_bytes(cache._framed(old) + good[len(cache._framed(header)):])
    assert cache.load(str(tmp_path), KEY, USER) is None
    assert gc.isenabled()
