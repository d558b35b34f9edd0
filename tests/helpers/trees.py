"""Raw MEGA nodes (as ``f`` lists them) and trees made of them, for the tree and read tests."""
from __future__ import annotations

from megafs import crypto
from megafs.tree.tree import Tree

MK = bytes(range(16))
UH = "AbCdEfGhIjK"


def raw_root(h="ROOTROOT", t=2):
    return {"h": h, "p": "", "u": UH, "t": t, "a": "", "k": "", "ts": 1}


def raw_node(h, parent, name, *, folder=False, ts=100, size=10, attrs=None, mk=MK, user=UH):
    key = crypto.random_key(16 if folder else 32)
    a = {"n": name} if name is not None else {}
    a.update(attrs or {})
    node = {"h": h, "p": parent, "u": user, "t": 1 if folder else 0,
            "a": crypto.b64encode(crypto.encrypt_attr(a, key)),
            "k": "%s:%s" % (user, crypto.b64encode(crypto.wrap_key(key, mk))), "ts": ts}
    if not folder:
        node["s"] = size
    return node


def tree_of(*raws):
    tree = Tree(MK, UH)
    tree.load([raw_root(), raw_root("INBOXXXX", 3), raw_root("RUBBISHX", 4), *raws])
    return tree
