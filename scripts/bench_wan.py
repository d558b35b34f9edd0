"""``scripts/bench --wan``: megafs and rclone mount through an emulated WAN (issue 23).

Every connection between a mount and the local server crosses one ``wanlink.Link``: the API
(megafs' ``/cs``, ``sc`` and its plain transfers), the wait URLs of the change feed and the
https transfers (the server hands out the emulator's ports: ``megafs serve --advertise``), and
rclone's CONNECT proxy (its API and its transfers).  Profiles (``wanlink.PROFILES``): home (RTT
40 ms, 50 Mbit/s per connection, 100 Mbit/s in total) and far (RTT 150 ms, 20 Mbit/s per
connection, 100 total).

Workloads, each side in turn within a round (megafs, then rclone, one mount at a time on the
same full account), ``--wan-rounds`` rounds, medians:

  mount    from starting the mount until ``ls`` of its root answers
  ls       ``ls -l`` of a folder of N files, cold (fresh mount) and warm (again)
  read     cold sequential read of a file (fresh mount)
  small_read  ``cat`` of N x 4 KiB files of one folder that neither mount wrote, in name order
           (``cat DIR/*``: how ``cp -r``, ``tar`` and ``grep -r`` go through a tree)
  small    N x 4 KiB ``cp -r``: until it returns, and until every file is on MEGA (megafs:
           every ``.link`` reads; rclone: a separate client of the account sees them all)
  big      one file copied in until it is on MEGA (megafs: its ``.link`` reads)

``--wan-baseline DIR`` adds a third side in the same rounds: the megafs of another source tree
(e.g. ``git archive main | tar -x -C DIR``), run from DIR with the same state dir and account.

Ratios compare with the link's limit: bytes / the total cap, and for the small files the round
trips an ideal batching client needs (``ideal_round_trips``).  Requests per workload come from
the server's ``/_megafs/stats`` (requests by kind, commands by name), connections and bytes
from the emulator's counters.  ``--wan-check`` first measures the emulator itself with no delay
and no cap against a direct mount (the same upload and read), so it is known not to be the
bottleneck.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import requests

from benchlib import Mount, Server
from bench_side import API_HOST, RcloneSide, login, signup
from wanlink import MBIT, PROFILES, Link, Profile
from megafs.api.client import MegaClient, PutItem

MIB = 1 << 20


def now() -> float:
    return time.perf_counter()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ideal_round_trips(files: int) -> int:
    """An ideal batching client: one `u` request for all, the upload connections' handshakes,
    the POSTs in parallel, one `p`, one `l` (the issue's ~5).  Reading them back needs one round
    trip less (one `g` for all, the handshakes, the GETs in parallel); the same figure is used
    for both, which flatters the read's ratio by a round trip."""
    return 5 if files else 0


class Side:
    """One mount kind (megafs or rclone) on the bench's account."""

    name = ""

    def mount(self, mnt: Path) -> None:
        raise NotImplementedError

    def unmount(self, mnt: Path) -> None:
        raise NotImplementedError


class MegafsSide(Side):
    name = "megafs"

    def __init__(self, work: Path, api: str, state: Path, account: str,
                 extra: list[str], root: Path | None = None, name: str = "megafs") -> None:
        self.work, self.api, self.state, self.account = work, api, state, account
        self.extra = extra
        self.root = root            # another source tree's megafs (--wan-baseline)
        self.name = name
        self.proc: Mount | None = None

    def mount(self, mnt: Path) -> None:
        self.proc = Mount(mnt, self.api, self.state, log_path=self.work / (
            "%s-wan.log" % self.name), extra=["--account", self.account] + self.extra,
            root=self.root).start(timeout=300)

    def unmount(self, mnt: Path) -> None:
        subprocess.run([sys.executable, "-m", "megafs", "umount", str(mnt)],
                       capture_output=True, timeout=3600, cwd=self.root)
        if self.proc is not None:
            self.proc.stop()
        self.proc = None


class RcloneWan(Side):
    name = "rclone"

    def __init__(self, side: RcloneSide) -> None:
        self.side = side

    def mount(self, mnt: Path) -> None:
        self.side.mount(mnt, timeout=300)

    def unmount(self, mnt: Path) -> None:
        self.side.unmount(mnt)
        # the next mount must not send this one's cached writes again over the same link
        # (a cut-short --vfs-cache-mode writes upload is retried at the next mount: a round's
        # cold read then shared the link with it)
        shutil.rmtree(self.side.work / "rclone-cache", ignore_errors=True)


class WanBench:
    def __init__(self, args, work: Path, record: Callable[..., None]) -> None:
        self.args, self.work, self.record = args, work, record
        self.link = Link(PROFILES["pass"])
        self.routes = {name: self.link.add(name, "127.0.0.1", 0)
                       for name in ("api", "wait", "transfers", "connect")}
        self.ports = {"wait": free_port(), "transfers": free_port()}
        extra = ["--quota", str(1 << 40), "--tls-api", "--tls-name", API_HOST,
                 "--proxy-port", "0", "--wait-port", str(self.ports["wait"]),
                 "--tls-port", str(self.ports["transfers"]),
                 "--advertise", "wait=https://127.0.0.1:%d/" % self.routes["wait"],
                 "--advertise", "transfers=https://127.0.0.1:%d/" % self.routes["transfers"]]
        self.server = Server(work / "server", extra_args=extra, log_path=work / "server.log")
        self.ca = work / "server" / "tls" / "ca.pem"
        self.mnt = work / "wan-mnt"
        self.state = work / "wan-account"
        self.results: dict[str, dict] = {}
        self.polls = 0          # the bench's own `f` requests, not counted for a side
        self.table: list[str] = []

    # --- set-up -------------------------------------------------------------------------
    def start(self) -> None:
        os.environ["REQUESTS_CA_BUNDLE"] = str(self.ca)
        self.server.start()
        info = requests.get(self.server.url + "_megafs/info", timeout=30).json()
        proxy_port = int(info["proxy"].rstrip("/").rsplit(":", 1)[1])
        self.link.target("api", "127.0.0.1", self.server.port)
        self.link.target("wait", "127.0.0.1", self.ports["wait"])
        self.link.target("transfers", "127.0.0.1", self.ports["transfers"])
        self.link.target("connect", "127.0.0.1", proxy_port)
        self.wan_api = "https://127.0.0.1:%d/" % self.routes["api"]
        self.user, self.password = signup(self.server.url, self.state, self.work / "server")
        login(self.wan_api, self.state, self.user, self.password)   # sessions are per API URL
        poll_state = self.work / "wan-poll"
        login(self.server.url, poll_state, self.user, self.password)
        # a direct client (no emulator) for set-up and for "is it on MEGA yet"
        self.client = MegaClient.open(api=self.server.url, state_dir=str(poll_state),
                                      account=self.user)
        self.root = self.client.fetch().roots()[2]

    def stop(self) -> None:
        try:
            self.client.close()
        except Exception:       # noqa: B902 - best effort at the end
            pass
        self.server.stop()
        self.link.close()

    def stats(self) -> dict:
        return requests.get(self.server.url + "_megafs/stats", timeout=30).json()

    def populate(self) -> None:
        a = self.args
        folder = self.client.mkdir(self.root, "wan-list")["h"]
        one = self.work / "one-byte"
        one.write_bytes(b"x")
        with cf.ThreadPoolExecutor(8) as pool:     # a completion token makes one node
            ups = list(pool.map(lambda _i: self.client.upload(str(one)),
                                range(a.wan_listing)))
        for start in range(0, a.wan_listing, 1000):
            items = [PutItem(folder, up, {"n": "file%05d" % (start + i)})
                     for i, up in enumerate(ups[start:start + 1000])]
            assert all(isinstance(r, dict) for r in self.client.put_files(items))
        self.read_src = self.work / "read-src.bin"
        make_file(self.read_src, a.wan_read_mib)
        up = self.client.upload(str(self.read_src))
        assert isinstance(self.client.put_files([PutItem(self.root, up, {"n": "wan-read.bin"})])[0],
                          dict)
        # the small files read back: uploaded here, so neither mount has a local copy
        folder = self.client.mkdir(self.root, "wan-smallread")["h"]
        srcs = []
        for i in range(a.wan_small):
            src = self.work / ("smallread-%04d.bin" % i)
            src.write_bytes(os.urandom(4096))
            srcs.append(src)
        with cf.ThreadPoolExecutor(8) as pool:
            ups = list(pool.map(lambda src: self.client.upload(str(src)), srcs))
        items = [PutItem(folder, up, {"n": "r%04d.bin" % i}) for i, up in enumerate(ups)]
        assert all(isinstance(r, dict) for r in self.client.put_files(items))
        self.big_src = self.work / "big-src.bin"
        make_file(self.big_src, a.wan_big_mib)
        self.small_src = self.work / "small-src"
        self.small_src.mkdir()
        for i in range(a.wan_small):
            (self.small_src / ("f%04d.bin" % i)).write_bytes(os.urandom(4096))

    def files_on_mega(self) -> dict[str, int]:
        """{handle: size} of every file node of the account, straight from the server."""
        self.polls += 1
        return {n["h"]: n.get("s", 0) for n in self.client.fetch().nodes if n.get("t") == 0}

    def until_on_mega(self, before: dict[str, int], count: int, size: int = -1,
                      timeout: float = 1800) -> None:
        """Until ``count`` new file nodes (of ``size`` bytes, if given) exist on the server."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = [s for h, s in self.files_on_mega().items() if h not in before]
            if len([s for s in new if size < 0 or s == size]) >= count:
                return
            time.sleep(0.1)
        raise RuntimeError("%d new file(s) never reached the server" % count)

    # --- one side, one round -----------------------------------------------------------
    def measure(self, side: Side, tag: str) -> dict[str, dict]:
        """Every workload on ``side``: {workload: {"s": seconds, ...counts}}."""
        a, out = self.args, {}
        mnt = self.mnt

        def span(name: str, fn: Callable[[], dict | None]) -> None:
            self.link.reset()
            before, polls = self.stats(), self.polls
            t0 = now()
            extra = fn() or {}
            seconds = now() - t0
            after = self.stats()
            counts = diff_stats(before, after, self.polls - polls)
            out[name] = dict(s=seconds, **extra, **counts, **self.link.counters.snapshot())

        def do_mount() -> None:
            side.mount(mnt)
            subprocess.run(["ls", str(mnt)], check=True, capture_output=True)
        span("mount", do_mount)
        try:
            listing = mnt / "wan-list"

            def ls() -> None:
                got = subprocess.run(["ls", "-l", str(listing)], check=True,
                                     capture_output=True).stdout
                assert got.count(b"\n") >= a.wan_listing, got[:200]
            span("ls_cold", ls)
            span("ls_warm", ls)

            def read() -> None:
                subprocess.run(["dd", "if=%s" % (mnt / "wan-read.bin"), "of=/dev/null",
                                "bs=1M", "status=none"], check=True)
            span("read", read)

            def read_small() -> None:
                got = subprocess.run(["sh", "-c", 'cat "$1"/*.bin | wc -c', "sh",
                                      str(mnt / "wan-smallread")], check=True,
                                     capture_output=True).stdout
                assert int(got) == a.wan_small * 4096, got
            span("small_read", read_small)
            small = "wan-small-%s" % tag

            def copy_small() -> dict:
                known = self.files_on_mega() if not isinstance(side, MegafsSide) else {}
                t0 = now()
                subprocess.run(["cp", "-r", str(self.small_src), str(mnt / small)], check=True)
                copied = now() - t0
                if isinstance(side, MegafsSide):
                    for i in range(a.wan_small):
                        read_link(mnt / small / ("f%04d.bin" % i))
                else:
                    self.until_on_mega(known, a.wan_small)
                return {"cp_s": copied}
            span("small", copy_small)
            big = "wan-big-%s.bin" % tag

            def copy_big() -> None:
                known = self.files_on_mega() if not isinstance(side, MegafsSide) else {}
                subprocess.run(["cp", str(self.big_src), str(mnt / big)], check=True)
                if isinstance(side, MegafsSide):
                    read_link(mnt / big)
                else:
                    self.until_on_mega(known, 1, a.wan_big_mib * MIB)
            span("big", copy_big)
        finally:
            side.unmount(mnt)
        return out

    # --- driver ------------------------------------------------------------------------
    def check_emulator(self, megafs: MegafsSide) -> None:
        """The emulator with no delay and no cap against a direct mount: upload and read."""
        self.link.profile_set(PROFILES["pass"])
        rates = {}
        for label, api in (("direct", self.server.url), ("emulator", self.wan_api)):
            side = MegafsSide(self.work, api, self.state, self.user, megafs.extra)
            side.mount(self.mnt)
            try:
                target = self.mnt / ("check-%s.bin" % label)
                t0 = now()
                subprocess.run(["cp", str(self.big_src), str(target)], check=True)
                read_link(target)
                up = self.args.wan_big_mib / (now() - t0)
            finally:
                side.unmount(self.mnt)
            side.mount(self.mnt)
            try:
                t0 = now()
                subprocess.run(["dd", "if=%s" % target, "of=/dev/null", "bs=1M",
                                "status=none"], check=True)
                down = self.args.wan_big_mib / (now() - t0)
            finally:
                side.unmount(self.mnt)
            rates[label] = (up, down)
        self.record("wan_emulator_check", workload="megafs cp of %d MiB until its link, then a "
                    "cold read of it: direct vs through the emulator with no delay and no cap"
                    % self.args.wan_big_mib,
                    direct_up_mib_s=rates["direct"][0], direct_read_mib_s=rates["direct"][1],
                    emulated_up_mib_s=rates["emulator"][0],
                    emulated_read_mib_s=rates["emulator"][1],
                    note="the profiles cap at %.1f MiB/s" % (100 * MBIT / MIB))

    def run(self) -> dict:
        a = self.args
        self.start()
        try:
            self.populate()
            sides: list[Side] = []
            megafs = MegafsSide(self.work, self.wan_api, self.state, self.user,
                                a.wan_megafs_arg)
            if "megafs" in a.wan_sides:
                sides.append(megafs)
            if a.wan_baseline:
                # the same workloads with another source tree's megafs (e.g. main), in the
                # same rounds: a comparison no slower machine hour can skew
                sides.append(MegafsSide(self.work, self.wan_api, self.state, self.user,
                                        a.wan_megafs_arg, root=Path(a.wan_baseline).resolve(),
                                        name="baseline"))
            if "rclone" in a.wan_sides:
                rc = RcloneSide(self.work, self.ca, "http://127.0.0.1:%d" % self.routes["connect"],
                                self.user, self.password)
                if rc.setup():
                    sides.append(RcloneWan(rc))
                else:
                    print("  rclone: %s" % rc.reason, flush=True)
            if a.wan_check:
                self.check_emulator(megafs)
            for name in a.wan_profiles:
                profile = PROFILES[name]
                self.link.profile_set(profile)
                rounds: dict[str, list[dict]] = {s.name: [] for s in sides}
                for r in range(a.wan_rounds):
                    for side in sides:
                        got = self.measure(side, "%s-%s-%d" % (name, side.name, r))
                        rounds[side.name].append(got)
                        print("    %s round %d %s: %s" % (name, r + 1, side.name, ", ".join(
                            "%s %.2f s" % (k, v["s"]) for k, v in got.items())), flush=True)
                self.report(profile, rounds)
        finally:
            self.stop()
        print("\n| workload | profile | megafs | rclone | baseline | megafs vs the link's "
              "limit | requests megafs / rclone / baseline |\n|---|---|---|---|---|---|---|")
        print("\n".join(self.table), flush=True)
        return self.results

    def report(self, profile: Profile, rounds: dict[str, list[dict]]) -> None:
        a = self.args
        small = ideal_round_trips(a.wan_small) * profile.rtt + a.wan_small * 4096 / profile.total
        limits = {"big": a.wan_big_mib * MIB / profile.total,
                  "read": a.wan_read_mib * MIB / profile.total,
                  "small_read": small, "small": small}
        for workload in WHAT:
            fields: dict = {}
            for side, got in rounds.items():
                if not got:
                    continue
                runs = [g[workload] for g in got]
                med = statistics.median(r["s"] for r in runs)
                fields["%s_s" % side] = spread([r["s"] for r in runs])
                if workload in limits:
                    fields["%s_vs_limit" % side] = limits[workload] / med
                if workload == "small":
                    fields["%s_cp_s" % side] = spread([r["cp_s"] for r in runs])
                last = runs[-1]
                fields["%s_requests" % side] = last["requests"]
                fields["%s_commands" % side] = last["commands"]
                fields["%s_connections" % side] = last["connections"]
            if workload in limits:
                fields["limit_s"] = limits[workload]
            self.table.append(table_row(profile.name, workload, rounds, limits.get(workload)))
            self.record("wan_%s_%s" % (profile.name, workload), profile=profile.describe(),
                        **fields)


WHAT = {"mount": "mount until `ls` of the root", "ls_cold": "`ls -l` cold",
        "ls_warm": "`ls -l` warm", "read": "cold read",
        "small_read": "small files read back (`cat DIR/*`)", "small": "small files until on MEGA",
        "big": "big file until on MEGA"}


def table_row(profile: str, workload: str, rounds: dict[str, list[dict]],
              limit: float | None) -> str:
    """One markdown row: medians, the ratio to the limit, requests of the last round."""
    cells, reqs = {}, {}
    for side in ("megafs", "rclone", "baseline"):
        runs = [g[workload] for g in rounds.get(side, [])]
        if not runs:
            cells[side], reqs[side] = "-", "-"
            continue
        med = statistics.median(r["s"] for r in runs)
        cells[side] = "%.2f s" % med
        if workload == "small":
            cells[side] += " (cp %.2f s)" % statistics.median(r["cp_s"] for r in runs)
        last = runs[-1]
        reqs[side] = " ".join("%s:%d" % kv for kv in last["requests"].items()) or "0"
        if last["commands"]:
            reqs[side] += " (%s)" % " ".join("%s:%d" % kv for kv in last["commands"].items())
    ratio = "-"
    if limit and rounds.get("megafs"):
        ratio = "%.2f (limit %.2f s)" % (
            limit / statistics.median(g[workload]["s"] for g in rounds["megafs"]), limit)
        if rounds.get("baseline"):
            ratio += "; baseline %.2f" % (
                limit / statistics.median(g[workload]["s"] for g in rounds["baseline"]))
    return "| %s | %s | %s | %s | %s | %s | %s / %s / %s |" % (
        WHAT[workload], profile, cells["megafs"], cells["rclone"], cells["baseline"], ratio,
        reqs["megafs"], reqs["rclone"], reqs["baseline"])


def diff_stats(before: dict, after: dict, polls: int) -> dict:
    """Requests by kind and commands by name between two ``/_megafs/stats`` snapshots, less
    the bench's own: one ``control`` request (the snapshot) and ``polls`` ``f`` requests."""
    out = {}
    own = {"requests": {"control": 1, "cs": polls}, "commands": {"f": polls}}
    for key in ("requests", "commands"):
        b, a = before.get(key, {}), after.get(key, {})
        diff = {k: a[k] - b.get(k, 0) - own[key].get(k, 0) for k in sorted(a)}
        out[key] = {k: v for k, v in diff.items() if v}
    return out


def read_link(path: Path) -> str:
    with open(str(path) + ".link") as fh:
        link = fh.read().strip()
    assert link.startswith("https://mega.nz/file/"), link
    return link


def make_file(path: Path, mib: int) -> None:
    pattern = os.urandom(4 * MIB)
    with open(path, "wb") as fh:
        for _ in range(mib // 4):
            fh.write(pattern)
        fh.write(pattern[:(mib % 4) * MIB])


def spread(values: list[float]) -> str:
    return "%.3f [%.3f-%.3f] (n=%d)" % (statistics.median(values), min(values), max(values),
                                        len(values))


def add_arguments(parser) -> None:
    parser.add_argument("--wan", action="store_true",
                        help="only the WAN mode: megafs and rclone through the link emulator")
    parser.add_argument("--wan-profiles", default="home,far",
                        type=lambda s: [p for p in s.split(",") if p],
                        help="profiles, comma-separated (home,far; pass = no delay, no cap)")
    parser.add_argument("--wan-sides", default="megafs,rclone",
                        type=lambda s: [p for p in s.split(",") if p])
    parser.add_argument("--wan-rounds", type=int, default=None, help="rounds (3; quick 1)")
    parser.add_argument("--wan-big-mib", type=int, default=None, help="big file (256; quick 32)")
    parser.add_argument("--wan-read-mib", type=int, default=None, help="cold read (128; quick 16)")
    parser.add_argument("--wan-small", type=int, default=None, help="small files (100; quick 20)")
    parser.add_argument("--wan-listing", type=int, default=None,
                        help="files in the listed folder (2000; quick 500)")
    parser.add_argument("--wan-check", action=__import__("argparse").BooleanOptionalAction,
                        default=True, help="measure the emulator itself first (on)")
    parser.add_argument("--wan-baseline", metavar="DIR", default=None,
                        help="also run the megafs of this source tree (e.g. a `git archive` of "
                        "main) in the same rounds: the baseline column")
    parser.add_argument("--wan-megafs-arg", action="append", default=[],
                        help="extra argument for megafs mount (repeatable)")


def run(args, work: Path, record: Callable[..., None]) -> dict:
    quick = dict(wan_rounds=1, wan_big_mib=32, wan_read_mib=16, wan_small=20, wan_listing=500)
    full = dict(wan_rounds=3, wan_big_mib=256, wan_read_mib=128, wan_small=100,
                wan_listing=2000)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    # the mounts start with compiled bytecode, as an installed megafs does (an environment
    # with PYTHONDONTWRITEBYTECODE made every mount compile its modules first: ~0.3 s), kept
    # in the bench's folder
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    bench = WanBench(args, work, record)
    return bench.run()
