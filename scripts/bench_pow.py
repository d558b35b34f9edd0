"""Proof-of-work figures for ``scripts/bench`` (issue 19).

``rate``: the solver's tries per second (``megafs.api.hashcash.solve`` on every core, on a
challenge it cannot answer, stopped after a few seconds) against the machine's limit, ``cores``
x the tries per second of one thread hashing 12 MiB with hashlib SHA-256 (target >= 0.9).

``fresh_mount`` (``scripts/bench --pow``, slow: minutes of every core): a server at the real
service's easiness 100 (the only real ``X-Hashcash`` header quoted in meganz/sdk
``src/posix/net.cpp``) challenges the new account's ``up`` and its ``us``; ``megafs mount``
(daemonized, as a user runs it) of a fresh state dir until it is mounted, then a file copied
in, its link read and downloaded with ``megafs get``.  The solves' times, tries and tries/s
come from the mount's log.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from benchlib import ROOT, Server
from megafs import crypto
from megafs.api import hashcash
from megafs.errors import Cancelled

UNSOLVABLE = "1:0:1700000000:" + "A" * 64      # easiness 0: ~1 try in 500 million
SOLVED = re.compile(r"solved a proof-of-work challenge \(easiness (\d+)\) in ([\d.]+) s "
                    r"\((\d+) tries, ([\d.]+) tries/s\)")


def one_core_rate(seconds: float = 3.0) -> float:
    """Tries per second of one thread: SHA-256 of a 4-byte prefix + 12 MiB body (hashlib)."""
    body = crypto.hashcash_body(os.urandom(48))
    tries, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        digest = hashlib.sha256(tries.to_bytes(4, "little"))
        digest.update(body)
        digest.digest()
        tries += 1
    return tries / (time.perf_counter() - start)


def threads_rate(workers: int, seconds: float = 3.0) -> float:
    """Tries per second of ``workers`` threads each running ``one_core_rate``'s loop at once:
    what plain hashlib reaches on this machine now (on a machine loaded by other programs it
    is well under ``cores`` x one thread, for any solver)."""
    rates: list[float] = []
    threads = [threading.Thread(target=lambda: rates.append(one_core_rate(seconds)))
               for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(rates)


def solver_rate(seconds: float = 6.0) -> tuple[float, int]:
    """(tries per second, threads) of ``hashcash.solve`` on every core."""
    cancel = threading.Event()
    reports: list[hashcash.Progress] = []
    timer = threading.Timer(seconds, cancel.set)
    timer.start()
    try:
        hashcash.solve(UNSOLVABLE, cancel=cancel, progress=reports.append)
    except Cancelled:
        pass
    last = reports[-1]
    return last.tries / last.elapsed, last.workers


def rate(record: Callable[..., None], seconds: float = 6.0) -> float:
    """Record ``hashcash_rate``; return the ratio to the limit."""
    one = one_core_rate(seconds / 2)
    solver, workers = solver_rate(seconds)
    plain = threads_rate(workers, seconds / 2)
    # the limit again after the solver, to see how much the machine's load moved meanwhile
    again = one_core_rate(seconds / 2)
    ratio = solver / (workers * max(one, again))
    record("hashcash_rate", workload="hashcash.solve on every core vs cores x one-thread "
           "hashlib SHA-256 of 12 MiB", one_core_tries_s=[round(one, 1), round(again, 1)],
           solver_tries_s=solver, cores=workers, ratio=ratio, target=">= 0.9",
           plain_threads_tries_s=plain, ratio_to_plain_threads=solver / plain,
           load=os.getloadavg()[0])
    return ratio


def megafs(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "megafs", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


def fresh_mount(work: Path, record: Callable[..., None], easiness: int = 100) -> None:
    """Record ``pow_mount``: a fresh anonymous mount at ``easiness`` until a link reads."""
    server = Server(work / "pow-server", extra_args=["--hashcash-easiness", str(easiness)],
                    log_path=work / "pow-server.log").start()
    mnt, state, log = work / "pow-mnt", work / "pow-state", work / "pow-mount.log"
    mnt.mkdir(exist_ok=True)
    try:
        start = time.perf_counter()
        res = megafs("mount", str(mnt), "--api", server.url, "--state-dir", str(state),
                     "--log-file", str(log))
        mounted = time.perf_counter() - start
        if res.returncode != 0:
            raise RuntimeError("megafs mount failed: %s" % res.stderr.strip())
        payload = os.urandom(1 << 20)
        (mnt / "f.bin").write_bytes(payload)
        while not (mnt / "f.bin.link").exists():
            time.sleep(0.05)
        link = (mnt / "f.bin.link").read_text().strip()
        got = megafs("get", "--api", server.url, link, "-o", str(work / "pow-got.bin"))
        if got.returncode != 0 or (work / "pow-got.bin").read_bytes() != payload:
            raise RuntimeError("megafs get of the link failed: %s" % got.stderr.strip())
        total = time.perf_counter() - start
    finally:
        megafs("umount", str(mnt), "--state-dir", str(state), timeout=600)
        server.stop()
    solves = [(float(s), int(t), float(r)) for _e, s, t, r in SOLVED.findall(log.read_text())]
    seconds = sum(s for s, _t, _r in solves)
    tries = sum(t for _s, t, _r in solves)
    record("pow_mount", workload="fresh anonymous mount at easiness %d (up and us "
           "challenged) until a link downloads" % easiness, mounted_s=mounted, link_read_s=total,
           solves=["%.1f s, %d tries, %.1f tries/s" % s for s in solves],
           solver_tries_s=tries / seconds if seconds else 0.0,
           expected_tries_per_solve=round(hashcash.expected_tries(easiness)))
