"""The model-based stress test through a real mount (issue 9, item 2).

Random operation sequences (``tests/helpers/stress_model.py``) are checked step by step against an
in-memory model; afterwards the mount is unmounted with a bare ``fusermount -u`` (pending
uploads are left to the next mount), mounted again, and every file is checked again: contents
and mtimes through the mount, exactly one node per name in a fresh listing from another client,
and the same bytes downloaded through each file's public link.

``scripts/stress`` runs the long version (``MEGAFS_STRESS_FULL=1``): several processes at once,
tens of thousands of operations, and prints one summary line.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megafs.api.client import MegaClient
from helpers.mount import MountProcess, fresh_listing, run_with_timeout
from helpers import stress_model

pytestmark = [pytest.mark.fuse,
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]

FULL = os.environ.get("MEGAFS_STRESS_FULL") == "1"
PROCS = int(os.environ.get("MEGAFS_STRESS_PROCS", "4" if FULL else "1"))
EXAMPLES = int(os.environ.get("MEGAFS_STRESS_EXAMPLES", "150" if FULL else "25"))
STEPS = int(os.environ.get("MEGAFS_STRESS_STEPS", "60" if FULL else "50"))
SEED = int(os.environ.get("MEGAFS_STRESS_SEED", "20261130"))


def test_model_based_stress(server, tmp_path):
    started = time.monotonic()
    state, mnt = tmp_path / "state", tmp_path / "mnt"
    m = MountProcess(mnt, server.url, state, log_path=tmp_path / "mount-1.log")
    m.start()
    divergences: list[str] = []
    examples = steps = 0
    # the concurrent reader of atomic saves (issue 22): never an error, never a mixed version
    stop, read_out = tmp_path / "reader.stop", tmp_path / "reader.json"
    reader = subprocess.Popen([sys.executable, str(Path(stress_model.__file__)), "--reader",
                               str(mnt), str(read_out), str(stop)])
    try:
        if PROCS == 1:
            try:
                results = stress_model.run(mnt, SEED, EXAMPLES, STEPS)
            finally:
                divergences += stress_model.MountMachine.stats.divergences
                examples = stress_model.MountMachine.stats.examples
                steps = stress_model.MountMachine.stats.steps
            expected = stress_model.expected_tree(results)
        else:
            expected = {}
            procs = []
            for i in range(PROCS):
                folder = mnt / ("p%d" % i)
                folder.mkdir()
                out = tmp_path / ("worker-%d.json" % i)
                procs.append((subprocess.Popen(
                    [sys.executable, str(Path(stress_model.__file__)),
                     str(folder), str(SEED + i), str(EXAMPLES // PROCS), str(STEPS), str(out)],
                    cwd=str(Path(__file__).parent)), out))
            errors = []
            for proc, out in procs:
                proc.wait(3600)
                report = json.loads(out.read_text())
                examples += report["examples"]
                steps += report["steps"]
                divergences += report["divergences"]
                if report["error"]:
                    errors.append(report["error"])
                expected.update({p: (bytes.fromhex(d), mt) for p, (d, mt)
                                 in report["files"].items()})
            assert errors == [], errors
        assert divergences == []
        stop.touch()
        reader.wait(120)
        reads = json.loads(read_out.read_text())
        assert reads["problems"] == [], reads
        assert reads["files"] > 0 and reads["whole"] > 0, reads
        assert reads["stale"] <= max(2, reads["reads"] // 100), reads
        # Remount without waiting for uploads: the next mount must finish them.
        m.stop()
        m = MountProcess(mnt, server.url, state, log_path=tmp_path / "mount-2.log")
        m.start()
        mismatches = []
        for path, (data, mtime) in sorted(expected.items()):
            p = Path(path)
            got = run_with_timeout(p.read_bytes, 60)
            if got != data:
                mismatches.append("%s: bytes differ after remount" % path)
            seen = os.stat(p).st_mtime_ns
            if mtime != -1 and seen != mtime:
                mismatches.append("%s: mtime %d, expected %d" % (path, seen, mtime))
        links = {}
        for path in expected:
            links[path] = run_with_timeout(lambda: Path(path + ".link").read_text(), 300).strip()
        listing = fresh_listing(server.url, state)
        files = [p for p, n in listing.items() if n.type == 0]
        want = sorted("/" + os.path.relpath(p, mnt) for p in expected)
        duplicates = len(files) - len(set(files))
        if sorted(files) != want:
            mismatches.append("server listing differs: extra %s, missing %s"
                              % (sorted(set(files) - set(want))[:5],
                                 sorted(set(want) - set(files))[:5]))
        with MegaClient.public(api=server.url) as pub:
            for path, (data, _mtime) in expected.items():
                dest = tmp_path / "dl"
                pub.download(links[path], str(dest))
                if hashlib.sha256(dest.read_bytes()).digest() != hashlib.sha256(data).digest():
                    mismatches.append("%s: bytes through the link differ" % path)
        problems = [line for log in (tmp_path / "mount-1.log", tmp_path / "mount-2.log")
                    for line in log.read_text(errors="replace").splitlines()
                    if " WARNING " in line or " ERROR " in line or "Traceback" in line]
        line = ("stress-summary: processes=%d examples=%d operations=%d files=%d "
                "divergences=%d remount-mismatches=%d duplicates=%d log-problems=%d "
                "save-reads=%d read-problems=%d seconds=%.0f"
                % (PROCS, examples, steps, len(expected), len(divergences), len(mismatches),
                   duplicates, len(problems), reads["reads"], len(reads["problems"]),
                   time.monotonic() - started))
        print("\n" + line)
        summary = os.environ.get("MEGAFS_STRESS_SUMMARY")
        if summary:
            Path(summary).write_text(line + "\n")
        assert mismatches == [] and duplicates == 0
        assert problems == []
    finally:
        stop.touch()
        if reader.poll() is None:
            reader.kill()
            reader.wait()
        m.stop()
