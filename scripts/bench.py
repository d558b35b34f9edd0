"""megafs benchmarks: every figure is a ratio against a limit measured in the same run.

Run through ``scripts/bench`` (which installs what is needed).  Starts ``megafs serve`` and a
``megafs mount`` in a temporary folder, runs the workloads, prints a table and, with
``--json FILE``, writes the figures.  Targets (issue 5):

  write       dd bs=1M into the mount until close() returns, vs the same beside the staging dir
  upload      first open() to link readable, vs the single-thread crypto limit
  small       4 KiB files copied in until every link is readable (files/s)
  read        cold sequential read through the mount, vs the crypto limit; warm re-read reported
  listing     ls -l of a folder of N files, cold (fresh mount) and warm
  memory      peak RSS of the mount while a big file is written and uploaded; RSS growth with
              file count
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from benchlib import Mount as MountProcess, Server as ServerProcess  # noqa: E402
from megafs import crypto  # noqa: E402
from megafs.api.client import MegaClient, PutItem  # noqa: E402

MIB = 1 << 20


def now() -> float:
    return time.perf_counter()


def drop_caches() -> None:
    try:
        subprocess.run(["sync"], check=False)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class PeakRss:
    """Samples a process's RSS every 20 ms (VmHWM is lifetime-wide, so sample instead)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except OSError:
                return
            self._stop.wait(0.02)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def dd(dest: Path, mib: int, *, fsync: bool = False) -> float:
    """Seconds for dd of ``mib`` MiB of zeros into ``dest`` until dd exits (after close)."""
    cmd = ["dd", "if=/dev/zero", "of=%s" % dest, "bs=1M", "count=%d" % mib, "status=none"]
    if fsync:
        cmd.append("conv=fsync")
    start = now()
    subprocess.run(cmd, check=True)
    return now() - start


def read_all(path: Path) -> float:
    start = now()
    subprocess.run(["dd", "if=%s" % path, "of=/dev/null", "bs=1M", "status=none"], check=True)
    return now() - start


def read_link(path: Path) -> str:
    with open(str(path) + ".link") as fh:
        return fh.read().strip()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="megafs-bench-", dir=args.workdir))
        self.results: dict[str, dict] = {}
        self.server = ServerProcess(self.work / "server", extra_args=["--quota", str(1 << 40)],
                                    log_path=self.work / "server.log")
        self.mnt = self.work / "mnt"
        self.state = self.work / "state"
        self.mount: MountProcess | None = None

    # --- plumbing ---------------------------------------------------------------------------
    def start_mount(self) -> MountProcess:
        self.mount = MountProcess(self.mnt, self.server.url, self.state,
                                  log_path=self.work / "mount.log").start()
        return self.mount

    def remount(self) -> MountProcess:
        self.stop_mount()
        drop_caches()
        return self.start_mount()

    def stop_mount(self) -> None:
        if self.mount is not None:
            # drain first so the next mount starts with an empty queue
            subprocess.run([sys.executable, "-m", "megafs", "umount", str(self.mnt)],
                           capture_output=True, timeout=3600)
            self.mount.stop()
            self.mount = None

    def record(self, name: str, **fields) -> None:
        self.results[name] = fields
        shown = ", ".join("%s=%s" % (k, (round(v, 3) if isinstance(v, float) else v))
                          for k, v in fields.items())
        print("  %-22s %s" % (name, shown), flush=True)

    # --- workloads --------------------------------------------------------------------------
    def crypto_limit(self) -> float:
        mib = self.args.crypto_mib
        key, nonce = os.urandom(16), os.urandom(8)
        buf = os.urandom(MIB)
        start = now()
        for i in range(mib):
            crypto.encrypt_chunk(key, nonce, i * MIB, buf)
        mbps = mib / (now() - start)
        self.record("crypto_limit", workload="%d MiB AES-CTR + chunk MAC, 1 thread, in-process"
                    % mib, mib_s=mbps)
        return mbps

    def write_and_upload(self, limit: float, mib: int, tag: str = "") -> None:
        local = self.state / ("bench-local-%d" % mib)
        self.state.mkdir(parents=True, exist_ok=True)
        t_local = dd(local, mib)
        t_local_sync = dd(local, mib, fsync=True)
        local.unlink()
        target = self.mnt / ("big-%d.bin" % mib)
        start = now()
        t_write = dd(target, mib)
        link = read_link(target)
        t_upload = now() - start
        assert link.startswith("https://mega.nz/file/"), link
        write = mib / t_write
        self.record("write" + tag, workload="dd bs=1M %d MiB until close()" % mib,
                    mib_s=write, local_mib_s=mib / t_local, local_fsync_mib_s=mib / t_local_sync,
                    ratio=write / (mib / t_local), ratio_vs_fsync=write / (mib / t_local_sync),
                    target=">= 0.6 of local")
        upload = mib / t_upload
        self.record("upload" + tag, workload="%d MiB first open() to .link readable" % mib,
                    mib_s=upload, ratio=upload / limit, target=">= 0.6 x crypto limit")

    def read(self, limit: float, mib: int, tag: str = "") -> None:
        self.remount()
        target = self.mnt / ("big-%d.bin" % mib)
        cold = mib / read_all(target)
        warm = mib / read_all(target)
        self.record("read" + tag, workload="cold sequential read of %d MiB (fresh mount)" % mib,
                    mib_s=cold, warm_mib_s=warm, ratio=cold / limit,
                    target=">= 0.5 x crypto limit")

    def small_files(self, count: int, tag: str = "") -> None:
        src = self.work / ("small-src-%d" % count)
        src.mkdir()
        for i in range(count):
            (src / ("f%05d.bin" % i)).write_bytes(os.urandom(4096))
        dest = self.mnt / ("small-%d" % count)
        start = now()
        subprocess.run(["cp", "-r", str(src), str(dest)], check=True)
        t_copy = now() - start
        with cf.ThreadPoolExecutor(16) as pool:
            got = list(pool.map(read_link, (dest / ("f%05d.bin" % i) for i in range(count))))
        elapsed = now() - start
        assert all(link.startswith("https://mega.nz/file/") for link in got)
        assert len(set(got)) == count
        shutil.rmtree(src)
        self.record("small_files" + tag, workload="%d x 4 KiB cp -r, until all links read"
                    % count, files_s=count / elapsed, copy_s=t_copy, total_s=elapsed,
                    target=">= 100 files/s")

    def populate(self, folder: str, count: int) -> None:
        """Create ``count`` 1-byte files in a new folder through the client API (fast set-up)."""
        client = MegaClient.open(api=self.server.url, state_dir=str(self.state))
        try:
            root = client.fetch().roots()[2]
            parent = client.mkdir(root, folder)["h"]
            one = self.work / "one-byte"
            one.write_bytes(b"x")
            with cf.ThreadPoolExecutor(8) as pool:
                ups = list(pool.map(lambda _i: client.upload(str(one)), range(count)))
            for start in range(0, count, 1000):
                items = [PutItem(parent, up, {"n": "file%05d" % (start + i)})
                         for i, up in enumerate(ups[start:start + 1000])]
                results = client.put_files(items)
                bad = [r for r in results if not isinstance(r, dict)]
                assert not bad, bad[:3]
        finally:
            client.close()

    def listing(self, count: int, tag: str = "") -> None:
        folder = "list-%d" % count
        self.populate(folder, count)
        self.remount()
        path = self.mnt / folder

        def ls() -> float:
            start = now()
            out = subprocess.run(["ls", "-l", str(path)], check=True, capture_output=True)
            elapsed = now() - start
            assert out.stdout.count(b"\n") >= count
            return elapsed
        cold = ls()
        warm = ls()
        self.record("listing" + tag, workload="ls -l of %d files (+ their .link)" % count,
                    cold_s=cold, warm_s=warm, target="cold < 2 s, warm < 0.3 s")

    def memory(self, big_mib: int, few: int, many: int) -> None:
        mount = self.remount()
        assert mount.proc is not None
        pid = mount.proc.pid
        base = rss_kib(pid)
        target = self.mnt / "memory.bin"
        with PeakRss(pid) as peak:
            dd(target, big_mib)
            read_link(target)
        self.record("memory_big", workload="peak RSS while %d MiB written and uploaded"
                    % big_mib, peak_mib=peak.peak / 1024, start_mib=base / 1024,
                    target="<= 200 MiB")
        dest = self.mnt / "memfiles"
        dest.mkdir()
        payload = os.urandom(4096)

        def make(lo: int, hi: int) -> None:
            for i in range(lo, hi):
                (dest / ("m%05d" % i)).write_bytes(payload)
            with cf.ThreadPoolExecutor(16) as pool:
                list(pool.map(read_link, (dest / ("m%05d" % i) for i in range(lo, hi))))
        make(0, few)
        after_few = rss_kib(pid)
        make(few, many)
        after_many = rss_kib(pid)
        self.record("memory_files", workload="RSS after %d vs %d small files" % (few, many),
                    rss_few_mib=after_few / 1024, rss_many_mib=after_many / 1024,
                    growth_mib=(after_many - after_few) / 1024, target="growth <= 50 MiB")

    # --- driver -----------------------------------------------------------------------------
    def run(self) -> int:
        a = self.args
        print("megafs bench (%s) in %s" % ("quick" if a.quick else "full", self.work))
        self.server.start()
        try:
            limit = self.crypto_limit()
            self.start_mount()
            self.write_and_upload(limit, a.big_mib)
            if a.scaling:
                self.write_and_upload(limit, 10, tag="_10MiB")
            self.read(limit, a.big_mib)
            if a.scaling:
                self.read(limit, 10, tag="_10MiB")
            self.small_files(a.small)
            if a.scaling and a.small < 1000:
                self.small_files(1000, tag="_1000")
            self.listing(a.listing)
            if a.scaling:
                self.listing(max(1000, a.listing // 10), tag="_%d" % max(1000, a.listing // 10))
            self.memory(a.memory_mib, a.rss_few, a.rss_many)
        finally:
            self.stop_mount()
            self.server.stop()
        meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": platform.platform(),
                "cpus": os.cpu_count(), "python": platform.python_version(),
                "mode": "quick" if a.quick else "full"}
        if a.json:
            Path(a.json).write_text(json.dumps({"meta": meta, "results": self.results},
                                               indent=2))
        if not a.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes (< 2 minutes)")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    parser.add_argument("--workdir", default=None, help="where to put the temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if args.quick:
        sizes = dict(crypto_mib=64, big_mib=128, small=200, listing=1000, memory_mib=256,
                     rss_few=100, rss_many=400, scaling=False)
    else:
        sizes = dict(crypto_mib=256, big_mib=1024, small=1000, listing=10000, memory_mib=4096,
                     rss_few=500, rss_many=5000, scaling=True)
    for key, value in sizes.items():
        setattr(args, key, value)
    return Bench(args).run()


if __name__ == "__main__":
    sys.exit(main())
