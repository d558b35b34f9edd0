"""Transfer micro-benchmark: client upload/download against a local ``megafs serve``, no mount.

Every figure is a ratio against the crypto limit measured in the same run and the same
process (single-thread AES-CTR + chunk CBC-MAC over ``--crypto-mib`` MiB, as in
``scripts/bench``), so the numbers hold on a loaded machine.  Each round measures, in order:

  limit     the crypto limit (MiB/s)
  upload    ``MegaClient.upload`` of a ``--mib`` file until the completion token is back (the
            server has fsynced the blob); target >= 0.6 x limit
  download  ``MegaClient.download`` of that file to a new file: ranged GETs, decrypt, MAC check,
            fsync, rename; target >= 0.5 x limit
  ranged    ``read_range`` of the whole file in 1 MiB blocks on ``--connections`` threads
            (the mount's read path without its cache), decrypt only; reported
  limit2    the crypto limit again (the machine's load may have changed meanwhile)

and, per phase, the peak RSS (sampled every 10 ms) and the CPU seconds of the client process
and of the server.  Ratios use the mean of the two limit measurements.  Other work on the
machine skews the ratios (a loaded second core slows the 2-thread pipelines more than the
1-thread limit), so each round first waits up to ``--settle`` seconds for the CPU pressure
(``/proc/pressure/cpu`` avg10) to drop below 10% and reports the pressure it saw.

    .venv/bin/python scripts/bench_transfer.py [--mib 1024] [--rounds 3] [--json FILE]
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from megafs import crypto  # noqa: E402
from megafs.api.client import MegaClient, PutItem  # noqa: E402
from benchlib import Server as ServerProcess  # noqa: E402

MIB = 1 << 20


def now() -> float:
    return time.perf_counter()


def rss_kib(pid: int) -> int:
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class PeakRss:
    """Samples the RSS of some processes every 10 ms."""

    def __init__(self, **pids: int) -> None:
        self.pids = pids
        self.peak = {name: 0 for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                try:
                    self.peak[name] = max(self.peak[name], rss_kib(pid))
                except OSError:
                    pass
            self._stop.wait(0.01)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open("/proc/%d/stat" % pid) as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_pressure() -> float | None:
    """The share of the last 10 s in which some task waited for a CPU (PSI), in percent."""
    try:
        with open("/proc/pressure/cpu") as fh:
            return float(fh.readline().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


def settle(seconds: float) -> float | None:
    """Wait (at most ``seconds``) for the CPU pressure to drop below 10%; return the last."""
    deadline = time.monotonic() + seconds
    pressure = cpu_pressure()
    while pressure is not None and pressure >= 10 and time.monotonic() < deadline:
        time.sleep(1)
        pressure = cpu_pressure()
    return pressure


class Phase:
    """Wall time, CPU seconds of client and server, and peak RSS of one measured step."""

    def __init__(self, server_pid: int) -> None:
        self.pids = {"client": os.getpid(), "server": server_pid}

    def __enter__(self) -> "Phase":
        self.cpu0 = {k: cpu_seconds(p) for k, p in self.pids.items()}
        self.rss = PeakRss(**self.pids).__enter__()
        self.start = now()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = now() - self.start
        self.rss.__exit__()
        self.cpu = {k: cpu_seconds(p) - self.cpu0[k] for k, p in self.pids.items()}
        self.peak_mib = {k: v / 1024 for k, v in self.rss.peak.items()}


def crypto_limit(mib: int) -> float:
    key, nonce = os.urandom(16), os.urandom(8)
    buf = os.urandom(MIB)
    start = now()
    for i in range(mib):
        crypto.encrypt_chunk(key, nonce, i * MIB, buf)
    return mib / (now() - start)


def make_source(path: Path, mib: int) -> None:
    """``mib`` MiB of incompressible data (a 16 MiB random pattern repeated), fsynced."""
    pattern = os.urandom(16 * MIB)
    with open(path, "wb") as fh:
        left = mib * MIB
        while left:
            n = min(left, len(pattern))
            fh.write(pattern[:n])
            left -= n
        fh.flush()
        os.fsync(fh.fileno())


def ranged_read(client: MegaClient, url: str, key: crypto.FileKey, size: int,
                threads: int) -> None:
    """The whole file in 1 MiB ``read_range`` calls, ``threads`` of them at a time."""
    offsets = iter(range(0, size, MIB))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                offset = next(offsets, None)
            if offset is None:
                return
            length = min(MIB, size - offset)
            if len(client.read_range(url, key, offset, length)) != length:
                raise RuntimeError("short read_range at %d" % offset)

    with cf.ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(worker) for _ in range(threads)]:
            future.result()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for piece in iter(lambda: fh.read(MIB), b""):
            digest.update(piece)
    return digest.hexdigest()


def run_round(args: argparse.Namespace, server: ServerProcess, client: MegaClient, root: str,
              source: Path, digest: str, work: Path, index: int) -> dict:
    size = source.stat().st_size
    out: dict = {"round": index, "cpu_pressure_before": settle(args.settle)}
    out["limit"] = crypto_limit(args.crypto_mib)
    assert server.proc is not None
    with Phase(server.proc.pid) as phase:
        uploaded = client.upload(str(source))
    record(out, "upload", phase)
    node = client.put_files([PutItem(root, uploaded, {"n": "bench-%d.bin" % index})])[0]
    assert isinstance(node, dict), node
    ph = client.export([node["h"]])[0]
    assert isinstance(ph, str), ph
    link = client.link_for(node, ph)
    dest = work / "download.bin"
    with Phase(server.proc.pid) as phase:
        client.download(link, str(dest))
    record(out, "download", phase)
    if dest.stat().st_size != size:
        raise RuntimeError("downloaded size differs")
    if args.verify and file_digest(dest) != digest:
        raise RuntimeError("downloaded data differs")
    dest.unlink()
    key = client.file_key(node)
    info = client.open_download(handle=node["h"])
    with Phase(server.proc.pid) as phase:
        ranged_read(client, info.url, key, size, args.connections)
    record(out, "ranged", phase)
    out["limit2"] = crypto_limit(args.crypto_mib)
    out["cpu_pressure_after"] = cpu_pressure()
    client.delete(node["h"])
    mib = size / MIB
    limit = (out["limit"] + out["limit2"]) / 2
    for name in ("upload", "download", "ranged"):
        rate = mib / out[name + "_s"]
        out[name + "_mib_s"] = rate
        out[name + "_ratio"] = rate / limit
    return out


def record(out: dict, name: str, phase: Phase) -> None:
    out[name + "_s"] = phase.seconds
    out[name + "_cpu_s"] = phase.cpu
    out[name + "_peak_rss_mib"] = phase.peak_mib


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="file size in MiB (1024)")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions (3)")
    parser.add_argument("--crypto-mib", type=int, default=256, help="crypto limit sample (256)")
    parser.add_argument("--connections", type=int, default=4, help="client connections (4)")
    parser.add_argument("--verify", action="store_true", help="compare downloaded bytes")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    parser.add_argument("--workdir", default=None, help="where to put the temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra argument for megafs serve (repeatable)")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds to wait for a quiet CPU before each round (30)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="megafs-bench-transfer-", dir=args.workdir))
    server = ServerProcess(work / "server", extra_args=["--quota", str(1 << 42)]
                           + args.server_arg, log_path=work / "server.log")
    source = work / "source.bin"
    rounds = []
    print("megafs transfer bench: %d MiB, %d connections, %d round(s), in %s"
          % (args.mib, args.connections, args.rounds, work), flush=True)
    try:
        make_source(source, args.mib)
        digest = file_digest(source) if args.verify else ""
        server.start()
        client = MegaClient.open(api=server.url, state_dir=str(work / "state"),
                                 connections=args.connections)
        try:
            root = client.fetch().roots()[2]
            for i in range(args.rounds):
                r = run_round(args, server, client, root, source, digest, work, i + 1)
                rounds.append(r)
                print("  round %d (cpu pressure %s%%): limit %.0f/%.0f MiB/s" % (
                    r["round"], r["cpu_pressure_before"], r["limit"], r["limit2"]), flush=True)
                for name in ("upload", "download", "ranged"):
                    cpu, rss = r[name + "_cpu_s"], r[name + "_peak_rss_mib"]
                    print("    %-8s %6.0f MiB/s  %.2f x limit   cpu client %.2f s server %.2f s"
                          "   peak RSS client %.0f MiB server %.0f MiB"
                          % (name, r[name + "_mib_s"], r[name + "_ratio"], cpu["client"],
                             cpu["server"], rss["client"], rss["server"]), flush=True)
        finally:
            client.close()
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if rounds:
        best = {name: max(r[name + "_ratio"] for r in rounds)
                for name in ("upload", "download", "ranged")}
        median = {name: sorted(r[name + "_ratio"] for r in rounds)[len(rounds) // 2]
                  for name in ("upload", "download", "ranged")}
        print("ratio vs crypto limit   median / best:  upload %.2f / %.2f (target 0.6)   "
              "download %.2f / %.2f (target 0.5)   ranged %.2f / %.2f"
              % (median["upload"], best["upload"], median["download"], best["download"],
                 median["ranged"], best["ranged"]))
    if args.json:
        meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": platform.platform(),
                "cpus": os.cpu_count(), "python": platform.python_version(),
                "mib": args.mib, "connections": args.connections}
        Path(args.json).write_text(json.dumps({"meta": meta, "rounds": rounds}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
