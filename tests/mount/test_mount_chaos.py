"""Reduced chaos run through a real mount (issue 6): seeded faults on ~10% of requests plus
kill -9 of the mount at several points; afterwards every file is in the account exactly once,
downloads byte-identical through its link, and no staged data is left behind.

The full-size version is the same test with MEGAFS_CHAOS_FILES / MEGAFS_CHAOS_ROUNDS raised
(e.g. 200 files, 5 rounds).
"""
from __future__ import annotations

import hashlib
import os
import time

import pytest

from megafs.api.client import MegaClient
from helpers.mount import MountProcess, fresh_listing, run_with_timeout, wait_for

pytestmark = [pytest.mark.fuse,
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]

FILES = int(os.environ.get("MEGAFS_CHAOS_FILES", "36"))
ROUNDS = int(os.environ.get("MEGAFS_CHAOS_ROUNDS", "2"))
SIZES = [0, 1, 100, 4096, 70000, 131072, 400000, 1048577, 2500000]
if FILES >= 100:   # the full run also carries files up to 20 MiB
    SIZES += [8 * 1048576 + 5, 20 * 1048576]

FAULTS = [
    {"where": "cs", "error": -3, "rate": 0.04, "seed": 11},
    {"where": "cs", "http": 503, "rate": 0.02, "seed": 12},
    {"where": "cs", "drop": True, "rate": 0.02, "seed": 13},
    {"where": "upload", "http": 500, "rate": 0.03, "seed": 14},
    {"where": "upload", "drop": True, "rate": 0.03, "seed": 15},
    {"where": "upload", "error": -4, "rate": 0.02, "seed": 16},
    {"where": "upload", "error": -8, "rate": 0.01, "seed": 17},
    {"where": "upload", "delay": 2, "rate": 0.01, "seed": 18},
]


def test_chaos_with_crashes(server, tmp_path):
    state = tmp_path / "state"
    mnt = tmp_path / "mnt"
    seed = 1234
    expected: dict[str, str] = {}
    blobs: dict[str, bytes] = {}
    for i in range(FILES):
        folder = ("a", "a/b", "c")[i % 3]
        rel = "%s/f%03d.bin" % (folder, i)
        data = hashlib.sha256(b"%d-%d" % (seed, i)).digest() * (SIZES[i % len(SIZES)] // 32 + 1)
        blobs[rel] = data[:SIZES[i % len(SIZES)]]
        expected[rel] = hashlib.sha256(blobs[rel]).hexdigest()
    names = sorted(blobs)
    per_round = -(-len(names) // (ROUNDS + 1))
    m = MountProcess(mnt, server.url, state, log_path=tmp_path / "mount-0.log")
    m.start()
    try:
        for d in ("a", "a/b", "c"):
            os.makedirs(mnt / d, exist_ok=True)
        server.faults(FAULTS)
        for rnd in range(ROUNDS + 1):
            for rel in names[rnd * per_round:(rnd + 1) * per_round]:
                run_with_timeout(lambda: (mnt / rel).write_bytes(blobs[rel]), 60)
            if rnd == ROUNDS:
                break
            # crash at a different point each round: right away, or a moment into the uploads
            time.sleep((0.0, 0.3, 0.7, 0.15, 1.0)[rnd % 5])
            m.kill9()
            log_path = tmp_path / ("mount-%d.log" % (rnd + 1))
            m = MountProcess(mnt, server.url, state, log_path=log_path)
            m.start()
        for rel in names:
            link = run_with_timeout(lambda: (mnt / (rel + ".link")).read_text(), 240)
            assert link.startswith("https://mega.nz/file/")
        import requests
        fired = requests.get(server.url + "_megafs/stats", timeout=10).json().get(
            "faults_fired", "?")
        server.clear_faults()
        listing = fresh_listing(server.url, state)
        files = sorted(p[1:] for p, n in listing.items() if n.type == 0)
        assert files == names                     # every file exactly once
        with MegaClient.public(api=server.url) as pub:
            for rel in names:
                link = (mnt / (rel + ".link")).read_text().strip()
                pub.download(link, str(tmp_path / "dl"))
                got = hashlib.sha256((tmp_path / "dl").read_bytes()).hexdigest()
                assert got == expected[rel], rel
        mount_dirs = list((state / "mounts").iterdir())
        wait_for(lambda: all(not os.listdir(d / "staging") for d in mount_dirs), timeout=20,
                 what="staged data to be removed")
        print("\nchaos: %d files (%d bytes) in 3 folders, %d kill -9 rounds, %s faults fired: "
              "all present once, byte-identical through their links, staging empty"
              % (len(names), sum(map(len, blobs.values())), ROUNDS, fired))
    finally:
        server.clear_faults()
        m.stop()
