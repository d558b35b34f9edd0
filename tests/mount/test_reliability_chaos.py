"""Chaos run with issue 6's exact fault mix, an outage and kill -9 rounds, through real mounts.

One scenario covers issue 6 items 1-3 (and the log scan of item 6) together, the way a user
meets them: files of assorted sizes are copied into nested folders of a real ``megafs mount``
while the real local server fails a seeded ~10% of requests with the issue's mix (batch
``-3``/``-4``, HTTP 500/503, connections dropped mid-upload, ``-4`` and ``-8`` from upload URLs,
2-second stalls).  In one round the server is stopped for an outage while writes go on (they
stage locally), then started again on the same port and data.  Every round ends with kill -9 of
the mount at a seeded random point: right after the writes, after a random delay, once a random
file is uploading, or in the middle of writing a file (which is then written again after the
remount, as a user would).  Afterwards:

* every file is in the account exactly once (no duplicates, no ``NAME (HANDLE)`` twins);
* every file downloads byte-identical through its public link, and ``NAME.link`` equals
  ``user.mega.link`` and points at the node's public handle;
* no staged data is left behind;
* none of the logs (mount and server, at ``-vv``) holds the session id, master key, password
  key or any link key.

Size: the default suite runs a reduced version (20 files, 3 rounds, 3 s outage, files up to
2.5 MiB).  ``scripts/chaos`` runs the full one: ``MEGAFS_CHAOS_FULL=1`` means 200 files from
0 B to 20 MiB, 5 rounds and a 30 s outage; MEGAFS_CHAOS_FILES / _ROUNDS / _OUTAGE / _SEED
override each.  The summary line (one line, starting ``chaos-summary:``) is printed and, when
MEGAFS_CHAOS_SUMMARY names a file, written there.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from pathlib import Path

import pytest
import requests

from megafs.api.client import MegaClient
from helpers.mount import MountProcess, fresh_listing, run_with_timeout, wait_for
from helpers.server import ServerProcess

pytestmark = [pytest.mark.fuse,
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]

FULL = os.environ.get("MEGAFS_CHAOS_FULL") == "1"
FILES = int(os.environ.get("MEGAFS_CHAOS_FILES", "200" if FULL else "20"))
ROUNDS = int(os.environ.get("MEGAFS_CHAOS_ROUNDS", "5" if FULL else "3"))
OUTAGE = float(os.environ.get("MEGAFS_CHAOS_OUTAGE", "30" if FULL else "3"))
SEED = int(os.environ.get("MEGAFS_CHAOS_SEED", "6"))
MIB = 1 << 20

FOLDERS = ("a", "a/b", "a/b/c", "d", "d/e f", "d/e f/g")
SMALL_SIZES = [0, 1, 100, 4095, 4096, 65537, 131072, 131073, 400000, MIB, MIB + 1, 2500000]
BIG_SIZES = [5 * MIB + 3, 8 * MIB, 12 * MIB + 7, 20 * MIB]

# Issue 6, item 1: 10% of requests fail.  Rules are tried in order and each decides on its own
# seeded sequence, so per request kind the chance that some rule fires is 1 - prod(1 - rate)
# (cs ~9.6% plus stalls of `u`/`l` batches, upload ~9.6%).  `expire` makes that upload URL
# answer -8 from then on.
FAULT_MIX = [
    {"where": "cs", "error": -3, "rate": 0.02, "seed": 101},
    {"where": "cs", "error": -4, "rate": 0.02, "seed": 102},
    {"where": "cs", "http": 500, "rate": 0.02, "seed": 103},
    {"where": "cs", "http": 503, "rate": 0.02, "seed": 104},
    {"where": "cs", "command": "u", "delay": 2, "rate": 0.02, "seed": 105},
    {"where": "cs", "command": "l", "delay": 2, "rate": 0.02, "seed": 106},
    {"where": "upload", "drop": True, "rate": 0.025, "seed": 201},
    {"where": "upload", "error": -4, "rate": 0.02, "seed": 202},
    {"where": "upload", "error": -8, "rate": 0.01, "seed": 203},
    {"where": "upload", "expire": True, "rate": 0.005, "seed": 204},
    {"where": "upload", "http": 500, "rate": 0.01, "seed": 205},
    {"where": "upload", "http": 503, "rate": 0.01, "seed": 206},
    {"where": "upload", "delay": 2, "rate": 0.02, "seed": 207},
    {"where": "sc", "error": -3, "rate": 0.05, "seed": 301},
    {"where": "sc", "http": 503, "rate": 0.05, "seed": 302},
    {"where": "download", "http": 503, "rate": 0.05, "seed": 401},
    {"where": "download", "drop": True, "rate": 0.05, "seed": 402},
]


# 2 s stalls of `p` batches too: a stalled `p` of a mount killed meanwhile is applied after the
# remount uploaded the file again, and the mount must remove that late repeat (see
# test_stalled_put_across_kill9_does_not_duplicate in test_reliability_crash.py).
FAULT_MIX.append({"where": "cs", "command": "p", "delay": 2, "rate": 0.02, "seed": 107})


def make_files(rng: random.Random) -> dict[str, bytes]:
    blobs = {}
    for i in range(FILES):
        if FULL and i % 20 == 7:
            size = BIG_SIZES[(i // 20) % len(BIG_SIZES)]
        elif FULL and i % 50 == 0:
            size = rng.randrange(0, 20 * MIB + 1)
        else:
            size = SMALL_SIZES[i % len(SMALL_SIZES)]
        folder = FOLDERS[i % len(FOLDERS)]
        rel = "%s/f%03d %s.bin" % (folder, i, ("x", "é", "\U0001F600")[i % 3])
        block = hashlib.sha256(b"%d-%d" % (SEED, i)).digest()
        blobs[rel] = (block * (size // 32 + 1))[:size]
    return blobs


class Counters:
    def __init__(self) -> None:
        self.faults = 0
        self.requests = 0

    def collect(self, url: str) -> None:
        """Add a server's totals; call once per server lifetime (before stop, and at the end)."""
        stats = requests.get(url + "_megafs/stats", timeout=10).json()
        self.faults += int(stats.get("faults_fired", 0)) + int(stats.get("faults_delay", 0))
        self.requests += sum(stats.get("requests", {}).values())


def write_file(mnt: Path, rel: str, data: bytes) -> None:
    run_with_timeout(lambda: (mnt / rel).write_bytes(data), 120)


@pytest.fixture
def server(tmp_path):
    """The real local server at -vv (its log is scanned for secrets)."""
    with ServerProcess(tmp_path / "server-data", extra_args=["-v"]) as srv:
        yield srv


@pytest.mark.log_ok("megafs.retry", "change feed", "upload of")
def test_chaos_outage_and_kill9_rounds(server, tmp_path):
    started = time.monotonic()
    rng = random.Random(SEED)
    blobs = make_files(rng)
    names = list(blobs)
    rng.shuffle(names)
    state, mnt = tmp_path / "state", tmp_path / "mnt"
    logs = [server.log_path]
    counters = Counters()
    per_round = -(-len(names) // (ROUNDS + 1))
    outage_round = min(1, ROUNDS)
    kill_modes: list[str] = []
    kill_plan = ["now", "delay", "uploading", "mid-write"]
    rng.shuffle(kill_plan)     # a seeded order; every mode is used once 4+ rounds are run

    def mount(n: int) -> MountProcess:
        logs.append(tmp_path / ("mount-%d.log" % n))
        return MountProcess(mnt, server.url, state, extra=["-v"], log_path=logs[-1]).start()

    m = mount(0)
    try:
        for d in FOLDERS:
            os.makedirs(mnt / d, exist_ok=True)
        server.faults(FAULT_MIX)
        for rnd in range(ROUNDS + 1):
            batch = names[rnd * per_round:(rnd + 1) * per_round]
            if rnd == outage_round:
                # Outage: half the round's files go in while the server is down.
                half = len(batch) // 2
                for rel in batch[:half]:
                    write_file(mnt, rel, blobs[rel])
                counters.collect(server.url)
                server.stop()
                for rel in batch[half:]:
                    write_file(mnt, rel, blobs[rel])     # staged locally meanwhile
                if batch[half:]:
                    rel = batch[-1]
                    got = run_with_timeout(lambda: (mnt / rel).read_bytes(), 60)
                    assert got == blobs[rel]
                    assert os.getxattr(mnt / rel, "user.mega.state") in (b"pending",
                                                                         b"uploading")
                time.sleep(OUTAGE)       # the outage itself (scenario length, not an assertion)
                server.start()
                server.faults(FAULT_MIX)
            else:
                for rel in batch:
                    write_file(mnt, rel, blobs[rel])
            if rnd == ROUNDS:
                break
            mode = kill_plan[rnd % len(kill_plan)]
            kill_modes.append(mode)
            rewrite = None
            if mode == "delay":
                time.sleep(rng.uniform(0.05, 2.0))
            elif mode == "uploading" and batch:
                target = rng.choice(batch)
                try:
                    wait_for(lambda: os.getxattr(mnt / target, "user.mega.state")
                             in (b"uploading", b"uploaded"), timeout=60,
                             what="an upload in flight")
                except AssertionError:
                    pass     # it may have completed already; kill anyway
            elif mode == "mid-write":
                rewrite = "a/b/rewrite-%d.bin" % rnd
                blobs[rewrite] = hashlib.sha256(b"rw%d" % rnd).digest() * (3 * MIB // 32)
                names.append(rewrite)
                fed = threading.Event()

                def writer(rel: str = rewrite) -> None:
                    try:
                        with open(mnt / rel, "wb") as fh:
                            for off in range(0, len(blobs[rel]), 65536):
                                fh.write(blobs[rel][off:off + 65536])
                                fh.flush()
                                fed.set()
                    except OSError:
                        pass         # the mount died under it: expected
                t = threading.Thread(target=writer, daemon=True)
                t.start()
                fed.wait(30)
            m.kill9()
            if rewrite is not None:
                t.join(30)
                assert not t.is_alive(), "a write did not return after the mount died"
            m = mount(rnd + 1)
            if rewrite is not None:
                write_file(mnt, rewrite, blobs[rewrite])   # the user writes it again
        # Every file completes: its .link appears (the mount retries through the faults).
        links = {}
        for rel in names:
            links[rel] = run_with_timeout(lambda: (mnt / (rel + ".link")).read_text(),
                                          600).strip()
            assert links[rel].startswith("https://mega.nz/file/"), rel
            assert os.getxattr(mnt / rel, "user.mega.link").decode() == links[rel]
        counters.collect(server.url)
        server.clear_faults()
        remote = fresh_listing(server.url, state)
        files = {p[1:]: n for p, n in remote.items() if n.type == 0}
        duplicates = len(files) - len(set(files) & set(names))
        assert sorted(files) == sorted(names), "missing or duplicated files"
        mismatches = 0
        with MegaClient.public(api=server.url) as pub:
            for rel in names:
                ph = links[rel].split("/file/", 1)[1].split("#", 1)[0]
                assert files[rel].public == ph, rel        # .link points at this node
                dest = tmp_path / "dl"
                pub.download(links[rel], str(dest))
                if dest.read_bytes() != blobs[rel]:
                    mismatches += 1
        assert mismatches == 0
        mount_dirs = list((state / "mounts").iterdir())
        wait_for(lambda: all(not os.listdir(d / "staging") for d in mount_dirs), timeout=60,
                 what="staged data to be removed")
        staged_left = sum(len(os.listdir(d / "staging")) for d in mount_dirs)
    finally:
        if server.proc is not None:
            server.clear_faults()
        m.stop()
    # Issue 6 item 6: no secrets in any log of the run.
    session = json.loads(next((state / "sessions").glob("*.json")).read_text())
    secrets_ = {"sid": session["sid"], "master key": session["master_key"],
                "password key": session["password_key"]}
    for rel, link in links.items():
        secrets_["link key of " + rel] = link.split("#", 1)[1]
    text = "".join(Path(p).read_text(errors="replace") for p in logs)
    leaked = [what for what, value in secrets_.items() if value in text]
    assert not leaked, leaked
    mount_text = "".join(Path(p).read_text(errors="replace") for p in logs[1:])
    assert "Traceback" not in mount_text
    # A killed mount resetting its keep-alive connections is routine for the server (logged
    # at DEBUG); any traceback in the server log is a failure.
    server_text = Path(logs[0]).read_text(errors="replace")
    assert "Traceback" not in server_text
    summary = ("chaos-summary: files=%d bytes=%d folders=%d requests=%d faults=%d rounds=%d "
               "kill-points=%s outage=%gs duplicates=%d mismatches=%d staged-left=%d "
               "secrets-in-logs=0 seconds=%.0f"
               % (len(names), sum(len(blobs[n]) for n in names), len(FOLDERS),
                  counters.requests, counters.faults, ROUNDS, ",".join(kill_modes), OUTAGE,
                  duplicates, mismatches, staged_left, time.monotonic() - started))
    print("\n" + summary)
    if os.environ.get("MEGAFS_CHAOS_SUMMARY"):
        with open(os.environ["MEGAFS_CHAOS_SUMMARY"], "a") as fh:
            fh.write(summary + "\n")
    assert counters.faults > 0
