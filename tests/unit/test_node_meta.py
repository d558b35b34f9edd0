"""The mode and xattr attributes (``tree/meta.py``): they survive MEGA's SDK rewriting the
attribute blob (every value comes back a JSON string: meganz/sdk src/attrmap.cpp
``AttrMap::getjson``), and garbage under the keys shows the defaults instead of failing."""
from __future__ import annotations

import json

from megafs.tree import meta


def _through_sdk(attrs: dict) -> dict:
    """What the SDK's ``a`` sends back for ``attrs``: each value as a JSON string (objects
    and numbers as their JSON text)."""
    return {k: v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
            for k, v in attrs.items()}


def test_mode_and_xattrs_round_trip_through_an_sdk_rename():
    xattrs = {"user.xdg.origin.url": b"https://example.org/a", "user.bin": b"\x00\xff"}
    attrs = {"n": "a", "t": 5, meta.MODE_ATTR: meta.mode_value(0o100755),
             meta.XATTR_ATTR: meta.xattrs_value(xattrs)}
    assert all(len(k) <= 8 for k in attrs)        # the SDK keeps 8 characters of a key
    back = _through_sdk(attrs)
    assert meta.mode_of(back, 0o644) == 0o755
    assert meta.xattrs_of(back) == xattrs
    assert meta.xattrs_of({meta.XATTR_ATTR: {"user.a": "YQ=="}}) == {"user.a": b"a"}


def test_garbage_shows_the_defaults():
    for bad in (7, "9z", "", "1234567", None, [1], {"x": 1}):
        assert meta.mode_of({meta.MODE_ATTR: bad}, 0o644) == 0o644
        assert meta.xattrs_of({meta.XATTR_ATTR: bad}) == {}
    assert meta.xattrs_of({meta.XATTR_ATTR: '{"user.a": "!!", "other": "YQ==", "user.b": 3}'}
                          ) == {}
    assert meta.carried({"n": "a", meta.MODE_ATTR: "600"}) == {meta.MODE_ATTR: "600"}


def test_setuid_and_setgid_are_never_kept_or_shown():
    assert meta.mode_value(0o6755) == "755" and meta.mode_value(0o1777) == "1777"
    assert meta.mode_of({meta.MODE_ATTR: "4755"}, 0o644) == 0o755    # a hostile node
