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

and (issue 12) the crypto limit on one thread and on every core; ``--rounds`` interleaved
rounds of the small-file copy and the listing, megafs beside rclone mount (mega backend,
``--vfs-cache-mode writes``; same server, same full account, which the bench signs up unless
given ``--rclone-user``; one mount at a time; ``bench_side.py``), reported as medians with
their spread and megafs/rclone ratios; the mount of an account with
``--many-nodes`` nodes (made in bulk through ``p``); the latency of a remote change (another
client of the same account makes a folder; until the mount lists it).

Issue 19: the proof-of-work solver's tries/s against ``cores`` x one-thread hashlib SHA-256
over 12 MiB (every run), and with ``--pow`` only the slow proof-of-work steps: that rate and
a fresh anonymous mount at the real service's easiness 100 until a link downloads
(``bench_pow.py``; minutes of every core).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent

from benchlib import Mount as MountProcess, Server as ServerProcess  # noqa: E402
from bench_side import API_HOST, RcloneSide, login, rclone_binary, signup  # noqa: E402
import bench_pow  # noqa: E402
import bench_wan  # noqa: E402
from megafs import crypto, sealing  # noqa: E402
from megafs.api import hashcash  # noqa: E402
from megafs.api import commands  # noqa: E402
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
        if args.workdir:                # made if missing, as --keep's folder would be
            os.makedirs(args.workdir, mode=0o700, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="megafs-bench-", dir=args.workdir))
        self.results: dict[str, dict] = {}
        extra = ["--quota", str(1 << 40)]
        self.ca: Path | None = None
        self.rclone_user, self.rclone_pass = args.rclone_user, args.rclone_pass
        if args.rounds and rclone_binary() is not None:
            # rclone only talks https to the real API host name (bench_side.py)
            self.ca = self.work / "server" / "tls" / "ca.pem"
            os.environ["REQUESTS_CA_BUNDLE"] = str(self.ca)
            extra += ["--tls-api", "--tls-name", API_HOST, "--proxy-port", "0"]
        self.server = ServerProcess(self.work / "server", extra_args=extra,
                                    log_path=self.work / "server.log")
        self.mnt = self.work / "mnt"
        self.state = self.work / "state"
        self.account: str | None = None     # the side-by-side rounds mount rclone's account
        self.mount: MountProcess | None = None
        self.rclone: RcloneSide | None = None
        self.rclone_ok = False

    # --- plumbing ---------------------------------------------------------------------------
    def start_mount(self) -> MountProcess:
        extra = ["--account", self.account] if self.account else []
        self.mount = MountProcess(self.mnt, self.server.url, self.state,
                                  log_path=self.work / "mount.log", extra=extra).start()
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
        """AES-CTR + chunk MAC of 4 MiB spans (the uploader's unit), on one thread and on
        every core; the single-thread figure is the limit the ratios use, as before."""
        mib = self.args.crypto_mib
        key, nonce = os.urandom(16), os.urandom(8)
        buf = memoryview(bytearray(os.urandom(4 * MIB)))
        rates = {}
        for parallel in (False, True):
            start = now()
            for i in range(mib // 4):
                sealing.seal_chunks(key, nonce, 4718592 + i * 4 * MIB, buf, parallel=parallel)
            rates[parallel] = (mib // 4 * 4) / (now() - start)
        self.record("crypto_limit", workload="%d MiB AES-CTR + chunk MAC in 4 MiB spans, "
                    "in-process" % mib, mib_s=rates[False], all_cores_mib_s=rates[True],
                    cores=os.cpu_count())
        return rates[False]

    def hashcash(self, easiness: int = 180, rounds: int = 5) -> None:
        """Solve time of login proof-of-work challenges at the SDK tests' easiness, on one
        thread and on every core (the time varies a lot from challenge to challenge)."""
        times: dict[int, list[float]] = {}
        cores = os.cpu_count() or 1
        for workers in sorted({1, cores}):
            for _ in range(rounds):
                challenge = "1:%d:%d:%s" % (easiness, int(time.time()),
                                            crypto.b64encode(os.urandom(48)))
                times.setdefault(workers, []).append(hashcash.solve(challenge,
                                                                    workers=workers)[1])
        self.record("hashcash", workload="solve %d login challenges at easiness %d"
                    % (rounds, easiness), one_thread_s=spread(times[1]),
                    all_cores_s=spread(times[cores]), cores=cores)

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
        client = MegaClient.open(api=self.server.url, state_dir=str(self.state),
                                 account=self.account)
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

    def listing(self, count: int, tag: str = "",
                target: str = "cold < 2 s, warm < 0.3 s") -> None:
        folder = "list-%d" % count
        self.populate(folder, count)
        mount = self.remount()
        assert mount.proc is not None
        path = self.mnt / folder

        def ls() -> float:
            start = now()
            out = subprocess.run(["ls", "-l", str(path)], check=True, capture_output=True)
            elapsed = now() - start
            assert out.stdout.count(b"\n") >= count
            return elapsed
        cold = ls()
        warm = ls()
        self.record("listing" + tag, workload="ls -l of a folder of %d files" % count,
                    cold_s=cold, warm_s=warm, rss_mib=rss_kib(mount.proc.pid) / 1024,
                    target=target)

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

    # --- issue 12: rounds side by side, many nodes, remote changes ----------------------------
    def copy_small(self, root: Path, tag: str, count: int, links: bool) -> float:
        """files/s of ``cp -r`` of ``count`` 4 KiB files into ``root`` until every file is on
        MEGA: megafs until every ``.link`` reads, rclone until its listing shows them all."""
        src = self.work / "small-src"
        if not src.exists():
            src.mkdir()
            for i in range(count):
                (src / ("f%05d.bin" % i)).write_bytes(os.urandom(4096))
        dest = root / tag
        start = now()
        subprocess.run(["cp", "-r", str(src), str(dest)], check=True)
        if links:
            with cf.ThreadPoolExecutor(16) as pool:
                got = list(pool.map(read_link, (dest / ("f%05d.bin" % i) for i in range(count))))
            assert len(set(got)) == count
        else:
            assert self.rclone is not None
            self.rclone.wait_uploaded(tag, count)
        return count / (now() - start)

    def list_times(self, path: Path, count: int, remount) -> tuple[float, float]:
        remount()

        def ls() -> float:
            start = now()
            out = subprocess.run(["ls", "-l", str(path)], check=True, capture_output=True)
            assert out.stdout.count(b"\n") >= count
            return now() - start
        return ls(), ls()

    def rounds(self) -> None:
        a = self.args
        small, listing = a.side_small, a.side_listing
        folder = "list-side-%d" % listing
        self.populate(folder, listing)
        mf: dict[str, list[float]] = {"small": [], "cold": [], "warm": []}
        rc: dict[str, list[float]] = {"small": [], "cold": [], "warm": []}
        rmnt = self.work / "rclone-mnt"
        for r in range(a.rounds):
            self.remount()
            mf["small"].append(self.copy_small(self.mnt, "small-%d" % r, small, links=True))
            cold, warm = self.list_times(self.mnt / folder, listing, self.remount)
            mf["cold"].append(cold)
            mf["warm"].append(warm)
            if self.rclone is not None and self.rclone_ok:
                self.stop_mount()           # one mount at a time on the shared account
                self.rclone.mount(rmnt)
                try:
                    rc["small"].append(self.copy_small(rmnt, "rsmall-%d" % r, small,
                                                       links=False))
                finally:
                    self.rclone.unmount(rmnt)

                def remount_rclone() -> None:
                    self.rclone.unmount(rmnt)       # type: ignore[union-attr]
                    drop_caches()
                    self.rclone.mount(rmnt)         # type: ignore[union-attr]
                try:
                    cold, warm = self.list_times(rmnt / folder, listing, remount_rclone)
                finally:
                    self.rclone.unmount(rmnt)
                rc["cold"].append(cold)
                rc["warm"].append(warm)
            print("    round %d: megafs %.1f files/s, ls -l %.3f/%.3f s%s" % (
                r + 1, mf["small"][-1], mf["cold"][-1], mf["warm"][-1],
                "; rclone %.1f files/s, ls -l %.3f/%.3f s"
                % (rc["small"][-1], rc["cold"][-1], rc["warm"][-1]) if rc["small"] else ""),
                flush=True)
        fields = {"rounds": a.rounds, "rclone": "measured" if rc["small"] else
                  (self.rclone.reason if self.rclone is not None else "off")}
        for key, unit in (("small", "files_s"), ("cold", "s"), ("warm", "s")):
            fields["megafs_%s_%s" % (key, unit)] = spread(mf[key])
            if rc[key]:
                fields["rclone_%s_%s" % (key, unit)] = spread(rc[key])
                ratio = (statistics.median(mf[key]) / statistics.median(rc[key]) if key == "small"
                         else statistics.median(rc[key]) / statistics.median(mf[key]))
                fields["%s_speedup_megafs_over_rclone" % key] = ratio
        self.record("side_by_side", workload="%d x 4 KiB cp -r until on MEGA; ls -l of %d "
                    "files cold/warm; %d interleaved rounds" % (small, listing, a.rounds),
                    target="small >= 300 files/s; listing at least as fast as rclone",
                    **fields)

    def many_nodes(self, count: int) -> None:
        """Mount time of an account holding ``count`` more nodes (folders made in bulk with
        ``p``, 10,000 a request), and the mount's RSS after it came up."""
        client = MegaClient.open(api=self.server.url, state_dir=str(self.state))
        try:
            session = client._need_session()
            root = client.fetch().roots()[2]
            top = client.mkdir(root, "many-%d" % count)["h"]
            made = 0
            start = now()
            while made < count:
                n = min(10000, count - made)
                nodes = [commands.folder_node({"n": "d%07d" % (made + i)}, session.master_key)
                         for i in range(n)]
                reply = client.transport.batch([commands.put_nodes(top, nodes,
                                                                   client.request_id)])[0]
                assert isinstance(reply, dict), reply
                made += n
            t_make = now() - start
        finally:
            client.close()
        self.stop_mount()
        drop_caches()
        start = now()
        mount = self.start_mount()
        subprocess.run(["ls", str(self.mnt)], check=True, capture_output=True)
        t_mount = now() - start
        assert mount.proc is not None
        rss = rss_kib(mount.proc.pid) / 1024
        self.stop_mount()               # not timed: the unmount writes the tree cache
        drop_caches()
        start = now()
        mount = self.start_mount()
        subprocess.run(["ls", str(self.mnt)], check=True, capture_output=True)
        t_again = now() - start
        assert mount.proc is not None
        rss_again = rss_kib(mount.proc.pid) / 1024
        self.record("many_nodes", workload="mount of an account with %d more nodes, until "
                    "ls of the root answers" % count, first_mount_s=t_mount,
                    second_mount_s=t_again, rss_first_mib=rss, rss_second_mib=rss_again,
                    make_s=t_make, target="< 5 s from the cache for 1,000,000 nodes, "
                    "RSS < 1 GiB")

    def remote_change(self, rounds: int) -> None:
        """Seconds until the mount shows another client's change (same account): a new
        folder (until its name resolves) and a move of a folder the mount has just looked up
        (until the old name is gone: the kernel's cached entry must be dropped)."""
        assert self.mount is not None
        client = MegaClient.open(api=self.server.url, state_dir=str(self.state))
        made, moved = [], []

        def until(start: float, test, what: str) -> float:
            while not test():
                if now() - start > 60:
                    raise RuntimeError("the mount never showed " + what)
                time.sleep(0.005)
            return now() - start
        try:
            root = client.fetch().roots()[2]
            away = client.mkdir(root, "remote-change-away-%d" % os.getpid())["h"]
            for r in range(rounds):
                name = "remote-change-%d-%d" % (os.getpid(), r)
                start = now()
                node = client.mkdir(root, name)
                made.append(until(start, (self.mnt / name).exists, name))
                for _ in range(3):
                    os.stat(self.mnt / name)          # the kernel now caches the entry
                start = now()
                client.move(node["h"], away)
                moved.append(until(start, lambda: not (self.mnt / name).exists(), "the move"))
                time.sleep(0.2)
        finally:
            client.close()
        self.record("remote_change", workload="another client makes a folder / moves a "
                    "folder the mount just looked up (%d rounds)" % rounds,
                    new_folder_s=spread(made), moved_away_s=spread(moved), target="< 1 s")

    def pow(self) -> int:
        """``--pow``: the solver's rate, then a fresh mount at easiness 100 (slow)."""
        bench_pow.rate(self.record)
        bench_pow.fresh_mount(self.work, self.record)
        return self.finish("pow")

    # --- driver -----------------------------------------------------------------------------
    def run(self) -> int:
        a = self.args
        mode = "pow" if a.pow else "wan" if a.wan else "quick" if a.quick else "full"
        print("megafs bench (%s) in %s" % (mode, self.work))
        if a.pow:
            return self.pow()
        if a.wan:
            bench_wan.run(a, self.work, self.record)
            return self.finish("wan")
        self.server.start()
        try:
            limit = self.crypto_limit()
            self.hashcash(rounds=3 if a.quick else 5)
            bench_pow.rate(self.record)
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
            if a.big_listing:
                self.listing(a.big_listing, tag="_%d" % a.big_listing,
                             target="usable: cold in a few seconds, memory bounded")
            self.memory(a.memory_mib, a.rss_few, a.rss_many)
            if a.rounds:
                proxy = None
                if self.ca:     # the server's CONNECT proxy to its API (--proxy-port)
                    proxy = requests.get(self.server.url + "_megafs/info", timeout=30).json()[
                        "proxy"]
                account_state = self.work / "rclone-account"
                if proxy and not self.rclone_user:
                    self.rclone_user, self.rclone_pass = signup(
                        self.server.url, account_state, self.work / "server")
                elif proxy:
                    login(self.server.url, account_state, self.rclone_user, self.rclone_pass)
                self.rclone = RcloneSide(self.work, self.ca, proxy, self.rclone_user,
                                         self.rclone_pass)
                self.rclone_ok = self.rclone.setup()
                if not self.rclone_ok:
                    print("  rclone: %s" % self.rclone.reason, flush=True)
                    self.rounds()
                else:
                    # both mount the same account: the listing folder is made once
                    saved = self.state
                    self.stop_mount()
                    self.state, self.account = account_state, self.rclone_user
                    try:
                        self.rounds()
                    finally:
                        self.stop_mount()
                        self.state, self.account = saved, None
                        self.start_mount()
            self.remote_change(a.change_rounds)
            if a.many_nodes:
                self.many_nodes(a.many_nodes)
        finally:
            self.stop_mount()
            self.server.stop()
        return self.finish("quick" if a.quick else "full")

    def finish(self, mode: str) -> int:
        a = self.args
        meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": platform.platform(),
                "cpus": os.cpu_count(), "python": platform.python_version(), "mode": mode}
        if a.json:
            Path(a.json).write_text(json.dumps({"meta": meta, "results": self.results},
                                               indent=2))
        if not a.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        return 0


def spread(values: list[float]) -> str:
    """``median [min-max] (n)`` of some rounds."""
    return "%.3f [%.3f-%.3f] (n=%d)" % (statistics.median(values), min(values), max(values),
                                        len(values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes (< 2 minutes)")
    bench_wan.add_arguments(parser)
    parser.add_argument("--pow", action="store_true",
                        help="only the proof-of-work steps: the solver's tries/s against the "
                             "machine's limit and a fresh mount at easiness 100 (minutes)")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    parser.add_argument("--workdir", default=None,
                        help="where to put the temporary folder (made if missing)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved side-by-side rounds (quick 3, full 5; 0 = none)")
    parser.add_argument("--many-nodes", type=int, default=None, metavar="N",
                        help="nodes of the big-account mount (quick 20,000, full 1,000,000)")
    parser.add_argument("--big-listing", type=int, default=None, metavar="N",
                        help="also ls -l a folder of N files (quick 0, full 100,000)")
    parser.add_argument("--rclone-user", default=os.environ.get("MEGAFS_BENCH_RCLONE_USER", ""),
                        help="e-mail of a full account on the server for rclone (default: "
                             "the bench signs one up)")
    parser.add_argument("--rclone-pass", default=os.environ.get("MEGAFS_BENCH_RCLONE_PASS", ""))
    args = parser.parse_args()
    if args.quick:
        sizes = dict(crypto_mib=64, big_mib=128, small=200, listing=1000, memory_mib=256,
                     rss_few=100, rss_many=400, scaling=False, side_small=300,
                     side_listing=1000, rounds=3, many_nodes=20000, change_rounds=5,
                     big_listing=0)
    else:
        sizes = dict(crypto_mib=256, big_mib=1024, small=1000, listing=10000, memory_mib=4096,
                     rss_few=500, rss_many=5000, scaling=True, side_small=300,
                     side_listing=5000, rounds=5, many_nodes=1000000, change_rounds=10,
                     big_listing=100000)
    for key, value in sizes.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return Bench(args).run()


if __name__ == "__main__":
    sys.exit(main())
