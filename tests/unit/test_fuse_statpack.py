"""``fuse.adapter.StatPacker`` writes the same bytes as mfusepy's ``set_st_attrs`` (after a
memset), whatever the values, for the stat dicts the core makes (readdirplus uses it)."""
from __future__ import annotations

import ctypes
import stat

from hypothesis import given, strategies as st

from megafs.fuse import adapter
import mfusepy

NS = st.integers(min_value=0, max_value=(1 << 62))


def reference(attrs: dict) -> bytes:
    buf = mfusepy.c_stat()
    ctypes.memset(ctypes.byref(buf), 0, ctypes.sizeof(buf))
    mfusepy.set_st_attrs(buf, attrs, use_ns=True)
    return bytes(buf)


@given(mode=st.sampled_from([stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755]),
       size=st.integers(min_value=0, max_value=(1 << 62)), mtime=NS, atime=NS, ctime=NS,
       uid=st.integers(min_value=0, max_value=(1 << 32) - 1), nlink=st.integers(1, 1000))
def test_packed_stat_matches_the_bindings_field_by_field_fill(mode, size, mtime, atime, ctime,
                                                              uid, nlink):
    attrs = {"st_mode": mode, "st_nlink": nlink, "st_size": size, "st_uid": uid,
             "st_gid": uid ^ 5, "st_mtime": mtime, "st_atime": atime, "st_ctime": ctime,
             "st_blocks": (size + 511) // 512, "st_blksize": 131072}
    packed = mfusepy.c_stat()
    ctypes.memset(ctypes.byref(packed), 0xAB, ctypes.sizeof(packed))   # stale bytes go
    adapter.StatPacker().pack_into(packed, attrs)
    assert bytes(packed) == reference(attrs)
    assert packed.st_size == size and packed.st_mtimespec.tv_nsec == mtime % 1_000_000_000


def test_missing_keys_are_zero():
    packed = mfusepy.c_stat()
    ctypes.memset(ctypes.byref(packed), 0xAB, ctypes.sizeof(packed))
    adapter.StatPacker().pack_into(packed, {"st_mode": stat.S_IFREG | 0o600})
    assert bytes(packed) == reference({"st_mode": stat.S_IFREG | 0o600})
