"""``fuse/dircache.ListingCache``: when an open folder may keep the kernel's cached listing
(the mount-level behaviour is tested in tests/mount/test_listing_cache.py)."""
from __future__ import annotations

import time

from megafs.fuse.dircache import ListingCache


def test_listing_cache_keeps_only_the_same_stamp_while_young():
    cache = ListingCache(keep_for=60.0)
    names_map, overlay = {"a": 1}, None
    key = ("/f", "HANDLE")
    assert not cache.keep(key, (names_map, overlay))          # never filled
    cache.filled(key, (names_map, overlay))
    assert cache.keep(key, (names_map, overlay))
    assert not cache.keep(("/g", "HANDLE"), (names_map, overlay))   # another place
    assert not cache.keep(key, (dict(names_map), overlay))     # equal but replaced: a change
    assert not cache.keep(key, (names_map, {"b": 2}))          # a staged file shown there
    old = ListingCache(keep_for=0.05)
    old.filled(key, (names_map,))
    time.sleep(0.1)
    assert not old.keep(key, (names_map,))                     # attributes about to expire
    small = ListingCache(remembered=2)
    for i in range(3):
        small.filled(("/%d" % i, "H"), (names_map,))
    assert not small.keep(("/0", "H"), (names_map,))           # forgotten (LRU)
    assert small.keep(("/2", "H"), (names_map,))
