"""First contact and daily use on real mounts (issue 13): every mistake of "What was seen" is
one line naming the cause and the fix with a non-zero exit, Ctrl-C leaves nothing behind, a
refused second mount never touches the running one, umount returns once the mount process has
exited, waits for links and fsync can be interrupted, and progress shows bytes, rates and ETA.
"""
from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers.mount import ROOT, MountProcess, force_unmount, is_mounted, megafs, wait_for

pytestmark = pytest.mark.fuse


def _one_line(res: subprocess.CompletedProcess, *needles: str) -> str:
    """The single stderr line of a failed command, checked for ``needles``."""
    assert res.returncode != 0, res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr and "RuntimeError" not in res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _pids_of(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_mistakes_before_mounting_are_one_line(tmp_path, server):
    state = str(tmp_path / "state")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    api = ["--api", server.url, "--state-dir", state]
    started = time.monotonic()
    _one_line(megafs("mount", str(mnt), *api, "-o", "bogus", check=False),
              "unknown mount option 'bogus'", "--help")
    _one_line(megafs("mount", str(tmp_path / "none"), *api, check=False),
              "does not exist", "mkdir -p")
    (mnt / "keep").write_text("x")
    _one_line(megafs("mount", str(mnt), *api, check=False), "not empty", "-o nonempty")
    (mnt / "keep").unlink()
    _one_line(megafs("mount", str(mnt), *api, "--uploads", "100", check=False),
              "between 1 and 64")
    _one_line(megafs("mount", str(mnt), "--api", server.url, "--state-dir", "/proc/x",
                     check=False), "cannot use the state directory /proc/x", "--state-dir")
    for command in (["mount", str(mnt)], ["upload", str(ROOT / "setup.cfg")]):
        _one_line(megafs(*command, "--api", server.url, check=False,
                         env={"HOME": "/proc/x", "XDG_DATA_HOME": ""}),
                  "cannot use the state directory /proc/x/.local/share/megafs", "--state-dir")
    # an unreachable API (or a forgotten --local) is reported in seconds, mount/upload/get
    dead = "http://127.0.0.1:1/"
    _one_line(megafs("mount", str(mnt), "--api", dead, "--state-dir", state, check=False),
              "cannot reach the MEGA API at %s" % dead, "--local")
    _one_line(megafs("upload", "--api", dead, "--state-dir", state, str(ROOT / "setup.cfg"),
                     check=False), "cannot reach the MEGA API")
    link = "https://mega.nz/file/AbCdEfGh#" + "B" * 42 + "A"
    _one_line(megafs("get", "--api", dead, link, check=False), "cannot reach the MEGA API")
    _one_line(megafs("get", "--api", server.url, link, "--connections", "100", check=False),
              "between 1 and 64")
    _one_line(megafs("upload", "--api", server.url, "--session", str(tmp_path / "typo.json"),
                     str(ROOT / "setup.cfg"), check=False), "typo.json does not exist")
    assert not (tmp_path / "typo.json").exists()
    assert time.monotonic() - started < 60
    assert not is_mounted(mnt)


def test_get_never_overwrites_and_names_a_missing_folder(tmp_path, server):
    state = str(tmp_path / "state")
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(5000))
    link = megafs("upload", "--api", server.url, "--state-dir", state, str(src)).stdout.strip()
    out = tmp_path / "out.bin"
    out.write_bytes(b"precious")
    _one_line(megafs("get", "--api", server.url, link, "-o", str(out), check=False),
              "exists; add --force")
    assert out.read_bytes() == b"precious"
    _one_line(megafs("get", "--api", server.url, link, "-o", str(tmp_path / "no" / "x"),
                     check=False), "folder %s does not exist" % (tmp_path / "no"))
    _one_line(megafs("get", "--api", server.url, link, "-o", str(tmp_path / "nodir") + "/",
                     check=False), "does not exist")
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "out.bin", "server-data",
                                            "server-data-server.log", "state"]
    megafs("get", "--api", server.url, link, "-o", str(out), "--force", "-v")
    assert out.read_bytes() == src.read_bytes()
    # -v and --log-level before the subcommand; -vv shows the requests at DEBUG
    res = megafs("-vv", "get", "--api", server.url, link, "-o", str(tmp_path), "--force")
    assert "DEBUG" in res.stderr and "batch" in res.stderr
    assert "HTTP 200" in res.stderr and link.split("#")[1] not in res.stderr


def test_stale_mount_and_status_pipe(tmp_path, server):
    state = tmp_path / "state"
    mnt = tmp_path / "mnt"
    with MountProcess(mnt, server.url, state) as m:
        (mnt / "f").write_bytes(b"x" * 100)
        # `megafs status | head` ends quietly when head goes
        res = subprocess.run("%s -m megafs status %s --state-dir %s | head -c 1"
                             % (sys.executable, mnt, state), shell=True, capture_output=True,
                             text=True, timeout=60, cwd=ROOT)
        assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait(20)
        m.proc = None
        assert is_mounted(mnt)
        _one_line(megafs("mount", str(mnt), "--api", server.url, "--state-dir", str(state),
                         check=False), "dead mount", "megafs umount %s" % mnt)
        megafs("umount", str(mnt), "--state-dir", str(state))
        assert not is_mounted(mnt)


def test_umount_leaves_other_filesystems_and_overlaps_with_the_state_dir_are_refused(
        tmp_path, server):
    """Issue 24: `megafs umount` of a tmpfs said "unmounted" and the tmpfs was gone with its
    file; a mount point inside the state dir mounted and its first write hung in D state."""
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "megafs-test", str(other)],
                   check=True, timeout=30)
    try:
        (other / "keep").write_text("precious")
        state = tmp_path / "state"
        _one_line(megafs("umount", str(other), "--state-dir", str(state), check=False),
                  "%s is a tmpfs mount, not a megafs mount" % other, "umount(8)")
        assert is_mounted(other) and (other / "keep").read_text() == "precious"
    finally:
        subprocess.run(["umount", str(other)], timeout=30)
    inside = state / "mnt"
    inside.mkdir(parents=True)
    _one_line(megafs("mount", str(inside), "--api", server.url, "--state-dir", str(state),
                     check=False), "is inside the state dir", "--state-dir")
    _one_line(megafs("mount", str(state), "--api", server.url, "--state-dir", str(state),
                     "-o", "nonempty", check=False), "is inside the state dir")
    outer = tmp_path / "outer"
    outer.mkdir()
    _one_line(megafs("mount", str(outer), "--api", server.url, "--state-dir",
                     str(outer / "state"), check=False), "is inside the mount point")
    assert not is_mounted(inside) and not is_mounted(state) and not is_mounted(outer)
    # a megafs mount is still unmounted by it, live and dead
    mnt = tmp_path / "mnt"
    with MountProcess(mnt, server.url, tmp_path / "state2") as m:
        megafs("umount", str(mnt), "--state-dir", str(tmp_path / "state2"))
        assert not is_mounted(mnt)
        m.proc = None
    with MountProcess(mnt, server.url, tmp_path / "state2") as m:
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait(20)
        m.proc = None
        megafs("umount", str(mnt), "--state-dir", str(tmp_path / "state3"))
        assert not is_mounted(mnt)


def test_an_api_that_does_not_answer_http_is_named_in_seconds(tmp_path, server):
    """Issue 24: a port that accepts connections but never answers (or the wrong scheme)
    kept `mount` silent for 3 minutes and `upload` retrying TLS for 5-7 minutes."""
    import socket

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)          # the kernel completes handshakes; nothing is ever read or sent
    try:
        dead = "http://127.0.0.1:%d/" % hole.getsockname()[1]
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        state = ["--state-dir", str(tmp_path / "state")]
        # `login --local` whose kept port now belongs to the silent listener
        kept = tmp_path / "kept"
        kept.mkdir(mode=0o700)
        (kept / "local-server.port").write_text(str(hole.getsockname()[1]))
        # upload and get share the check (cli/transfer.py); each case costs the 10 s wait, so
        # the three run at once
        commands = [["mount", str(mnt), "--api", dead, *state],
                    ["get", "https://mega.nz/file/AbCdEfGh#" + "B" * 42 + "A", "--api", dead,
                     *state],
                    ["login", "a@example.com", "--local", "--state-dir", str(kept)]]
        started = time.monotonic()
        with ThreadPoolExecutor(len(commands)) as pool:
            results = list(pool.map(lambda c: megafs(*c, check=False, timeout=60,
                                                     env={"MEGAFS_PASSWORD": "pw"}), commands))
        for res in results:
            _one_line(res, "accepts connections but sends no HTTP reply")
        assert time.monotonic() - started < 30
        assert not is_mounted(mnt)
    finally:
        hole.close()
    # the test server speaks https: plain http to it, and https to a plain-http server
    plain = server.url.replace("https://", "http://")
    _one_line(megafs("upload", "--api", plain, "--state-dir", str(tmp_path / "s2"),
                     str(ROOT / "setup.cfg"), check=False, timeout=60),
              "does not answer plain http", "https://127.0.0.1:%d/" % server.port)
    from helpers.server import ServerProcess
    with ServerProcess(tmp_path / "plain-data") as srv:
        wrong = srv.url.replace("http://", "https://")
        _one_line(megafs("mount", str(tmp_path / "mnt"), "--api", wrong, "--state-dir",
                         str(tmp_path / "s3"), check=False, timeout=60),
                  "speaks plain http, not https", "--api http://127.0.0.1:%d/" % srv.port)


def test_no_access_to_dev_fuse_is_one_line(tmp_path, server):
    """In a mount namespace of its own, /dev/fuse is replaced by a file this process may not
    open (root without CAP_DAC_OVERRIDE): the mount says so before starting anything."""
    if os.geteuid() != 0 or subprocess.run(["which", "unshare", "setpriv"],
                                           capture_output=True).returncode:
        pytest.skip("needs root, unshare and setpriv")
    fake = tmp_path / "nofuse"
    fake.write_text("")
    os.chmod(fake, 0)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    os.chmod(tmp_path, 0o755)
    script = ("mount --bind %s /dev/fuse && exec setpriv --bounding-set "
              "-dac_override,-dac_read_search %s -m megafs mount %s --api %s --state-dir %s"
              % (fake, sys.executable, mnt, server.url, tmp_path / "state"))
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    _one_line(res, "cannot open /dev/fuse", "Permission denied")
    assert not is_mounted(mnt)


def test_ctrl_c_of_a_mount_that_waits_leaves_nothing(tmp_path, server):
    """The API answers nothing (every batch delayed): Ctrl-C of `megafs mount` stops its
    daemon; no process, no mount, and the next mount works."""
    state = tmp_path / "state"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    server.faults([{"where": "cs", "delay": 30}])
    proc = subprocess.Popen([sys.executable, "-m", "megafs", "mount", str(mnt), "--api",
                             server.url, "--state-dir", str(state)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        wait_for(lambda: _pids_of("megafs mount %s" % mnt) and len(
            _pids_of("megafs mount %s" % mnt)) >= 2, timeout=30, what="the mount daemon")
        time.sleep(1)
        os.killpg(proc.pid, signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and "interrupted" in err.decode()
        wait_for(lambda: not _pids_of("megafs mount %s" % mnt), timeout=15,
                 what="no mount process left")
        assert not is_mounted(mnt)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        force_unmount(mnt)
    server.clear_faults()
    megafs("mount", str(mnt), "--api", server.url, "--state-dir", str(state))
    try:
        assert is_mounted(mnt)
    finally:
        megafs("umount", str(mnt), "--state-dir", str(state))


@pytest.mark.log_ok("stopping a local server")
def test_second_local_mount_is_refused_without_touching_the_first(tmp_path):
    state = tmp_path / "state"
    m1, m2 = tmp_path / "m1", tmp_path / "m2"
    m1.mkdir()
    m2.mkdir()
    s = ["--state-dir", str(state)]
    res = megafs("mount", str(m1), "--local", *s)
    assert "log %s" % (state / "logs" / ("mount-%s.log" % str(m1).strip("/").replace(
        "/", "-"))) in res.stderr
    try:
        _one_line(megafs("mount", str(m2), "--local", *s, check=False),
                  "already mounted at %s" % m1, "another --state-dir")
        assert not is_mounted(m2)
        # the first mount and its server keep working: an upload finishes and downloads
        data = os.urandom(100000)
        (m1 / "a.bin").write_bytes(data)
        link = (m1 / "a.bin.link").read_text().strip()
        assert link.startswith("http://127.0.0.1:")
        out = tmp_path / "a.out"
        megafs("get", "--local", *s, link, "-o", str(out))
        assert out.read_bytes() == data
        # the runtime's own lock refuses too, also when the registry check is skipped
        from megafs.mount.runtime import MountConfig, MountRuntime
        from megafs.errors import FsError
        with pytest.raises(FsError, match="in use by the mount at %s" % m1):
            MountRuntime(MountConfig(state_dir=str(state), local=True)).__enter__()
        megafs("status", str(m1), *s)
    finally:
        megafs("umount", str(m1), *s, check=False)
        force_unmount(m1)
    # umount returned after the mount process exited: a remount right away finds nothing
    # left behind (no "stopping a local server ... left behind" warning in its log)
    log = state / "logs" / ("mount-%s.log" % str(m1).strip("/").replace("/", "-"))
    before = log.stat().st_size
    megafs("mount", str(m1), "--local", *s)
    try:
        assert "left behind" not in log.read_text()[before:]
        assert (m1 / "a.bin").read_bytes() == data
    finally:
        megafs("umount", str(m1), *s)
    assert not is_mounted(m1)


def test_umount_without_the_mounts_state_dir_still_waits_for_the_process(tmp_path):
    """`megafs umount MNT` of a mount made with --state-dir, run without it (the default state
    dir knows nothing of it): it still returns only once the mount process has exited, so a
    remount right away does not find the state dir's local server in use."""
    state, mnt = tmp_path / "state", tmp_path / "m"
    mnt.mkdir()
    elsewhere = {"XDG_DATA_HOME": str(tmp_path / "empty-default")}
    s = ["--state-dir", str(state)]
    for _ in range(2):
        megafs("mount", str(mnt), "--local", *s)
        try:
            (mnt / "f.txt").write_text("kept\n")
        finally:
            megafs("umount", str(mnt), env=elsewhere, check=False)
            force_unmount(mnt)
    megafs("mount", str(mnt), "--local", *s)
    try:
        assert (mnt / "f.txt").read_text() == "kept\n"
    finally:
        megafs("umount", str(mnt), *s)


def _blocked(args: list[str], sig: int) -> float:
    """Start ``args``, let it block for a second, send ``sig``; seconds until it ended."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.0)
    assert proc.poll() is None, "did not block: %r" % (proc.communicate(),)
    start = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return 99.0
    return time.monotonic() - start


def test_waits_for_a_stuck_upload_can_be_interrupted(tmp_path, server):
    """`cat X.link`, `getfattr -n user.mega.link` and fsync wait for an upload that is stuck;
    SIGINT and SIGKILL end them within about a second (FUSE INTERRUPT -> EINTR)."""
    state = tmp_path / "state"
    mnt = tmp_path / "mnt"
    with MountProcess(mnt, server.url, state):
        # every upload POST waits 20 s: longer than the six checks below (a write by the
        # fsync check restarts the upload, and its POST waits again)
        server.faults([{"where": "upload", "delay": 20}])
        (mnt / "stuck.bin").write_bytes(os.urandom(50000))
        fsync = [sys.executable, "-c", "import os; fd = os.open(%r, os.O_WRONLY); "
                 "os.write(fd, b'more'); os.fsync(fd)" % str(mnt / "stuck.bin")]
        for sig in (signal.SIGINT, signal.SIGKILL):
            for args in (["cat", str(mnt / "stuck.bin.link")],
                         [sys.executable, "-c", "import os; os.getxattr(%r, 'user.mega.link')"
                          % str(mnt / "stuck.bin")], fsync):
                took = _blocked(args, sig)
                assert took < 1.5, (args, sig, took)
        server.clear_faults()
        # the mount is fine afterwards: the link comes once the upload goes through
        wait_for(lambda: (mnt / "stuck.bin.link").read_text().startswith("https://"),
                 timeout=60, what="the link after the fault")


def test_umount_and_status_watch_show_bytes_rates_and_eta(tmp_path, server):
    state = tmp_path / "state"
    mnt = tmp_path / "mnt"
    s = ["--state-dir", str(state)]
    mnt.mkdir()
    megafs("mount", str(mnt), "--api", server.url, *s, "-o", "connections=1")
    try:
        server.faults([{"where": "upload", "delay": 0.7}])
        (mnt / "big.bin").write_bytes(os.urandom(12 << 20))
        (mnt / "small.txt").write_bytes(b"hello")
        watch = megafs("status", str(mnt), *s, "--watch", timeout=180)
        assert watch.returncode == 0
        assert "big.bin" in watch.stderr and "B/s" in watch.stderr and "<" in watch.stderr
        assert "total:" in watch.stderr and "nothing left to upload" in watch.stderr
        (mnt / "more.bin").write_bytes(os.urandom(8 << 20))
        res = megafs("umount", str(mnt), *s, timeout=180)
    finally:
        server.clear_faults()
        force_unmount(mnt)
    lines = res.stderr.splitlines()
    meters = [ln for ln in lines if "more.bin" in ln and "B/s" in ln]
    assert meters, res.stderr
    assert any("/8.00M" in ln and "<" in ln for ln in meters), meters      # bytes and ETA
    assert any(ln.startswith("total: ") and "B/s" in ln for ln in lines)
    assert "uploaded in" in res.stderr and lines[-1].startswith("megafs umount: unmounted")


def test_libfuse_options_pass_through(tmp_path, server):
    state = tmp_path / "state"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # an option libfuse itself refuses: its own words, in one line, and nothing left
    _one_line(megafs("mount", str(mnt), "--api", server.url, "--state-dir", str(state),
                     "-o", "max_read=abc", check=False),
              "libfuse could not mount", "invalid parameter in option `max_read=abc'")
    assert not is_mounted(mnt)
    with MountProcess(mnt, server.url, state, extra=["-o", "ro,noatime,nosuid,_netdev"]):
        with open("/proc/self/mountinfo") as fh:
            line = next(ln for ln in fh if " %s " % mnt in ln)
        assert "ro," in line and "nosuid" in line and "fuse.megafs" in line
        with pytest.raises(OSError) as err:
            (mnt / "x").write_text("no")
        assert err.value.errno == errno.EROFS


def test_foreground_mount_notifies_systemd(tmp_path, server):
    """Type=notify: READY=1 once the mount is live, STOPPING=1 when it goes."""
    import socket
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(60)
    got: list[str] = []
    mnt = tmp_path / "mnt"

    def receive() -> None:
        try:
            while len(got) < 2:
                got.append(sock.recv(4096).decode())
        except OSError:
            pass
    t = threading.Thread(target=receive, daemon=True)
    t.start()
    m = MountProcess(mnt, server.url, tmp_path / "state", env={"NOTIFY_SOCKET": sock_path})
    with m:
        wait_for(lambda: got, timeout=30, what="READY=1")
        assert got[0].startswith("READY=1") and is_mounted(mnt)
    t.join(30)
    sock.close()
    assert len(got) == 2 and got[1] == "STOPPING=1"


@pytest.mark.log_ok("staging area full")
def test_staging_limit_waits_for_uploads_then_enospc(tmp_path, server):
    """-o staging_max: a write past the limit waits while uploads can free space, and fails
    with ENOSPC (and a WARNING naming the limit) when nothing can or the file alone is
    larger."""
    state = tmp_path / "state"
    mnt = tmp_path / "mnt"
    with MountProcess(mnt, server.url, state, extra=["-o", "staging_max=3M"]) as m:
        server.faults([{"where": "upload", "delay": 1.0}])
        (mnt / "a.bin").write_bytes(os.urandom(2 << 20))       # closed: uploads (slowly)
        start = time.monotonic()
        (mnt / "b.bin").write_bytes(os.urandom(2 << 20))       # waits until a.bin is done
        waited = time.monotonic() - start
        assert waited > 0.5
        assert (mnt / "b.bin").stat().st_size == 2 << 20
        with pytest.raises(OSError) as err:
            (mnt / "huge.bin").write_bytes(os.urandom(4 << 20))
        assert err.value.errno == errno.ENOSPC
        server.clear_faults()
        wait_for(lambda: os.getxattr(mnt / "b.bin", "user.mega.state") == b"uploaded",
                 timeout=60, what="b.bin uploaded")
        # a writer holding 2 MiB open: nothing can free space, a second writer fails at once
        with open(mnt / "held.bin", "wb") as held:
            held.write(os.urandom(2 << 20))
            held.flush()
            start = time.monotonic()
            with pytest.raises(OSError) as err:
                (mnt / "c.bin").write_bytes(os.urandom(2 << 20))
            assert err.value.errno == errno.ENOSPC and time.monotonic() - start < 5
        assert any("staging area full" in ln and "ENOSPC" in ln for ln in m.log_problems())


@pytest.mark.slow
@pytest.mark.log_ok("upload of stuck.bin: MEGA error -3")
def test_status_and_umount_say_why_an_upload_waits(tmp_path, server):
    """Issue 24, item 3: an upload that keeps failing shows its last error, the attempt count
    and the next retry time in `status`, `status --json` and umount's wait."""
    import json
    state = tmp_path / "state"
    mnt = tmp_path / "mnt"
    s = ["--state-dir", str(state)]
    # each request gives up after 1 s of -3 answers, so the queue's own back-off shows
    with MountProcess(mnt, server.url, state, env={"MEGAFS_RETRY_SECONDS": "1"}):
        server.faults([{"where": "cs", "command": "u", "level": "command", "error": -3}])
        (mnt / "stuck.bin").write_bytes(os.urandom(5000))

        def backing_off():
            files = json.loads(megafs("status", str(mnt), *s, "--json").stdout)["files"]
            row = next(f for f in files if f["path"] == "/stuck.bin")
            return row if row["attempts"] >= 2 and row["next_try"] else None
        row = wait_for(backing_off, timeout=60, interval=0.3, what="a backing-off upload")
        assert row["state"] == "pending" and "MEGA error -3 EAGAIN" in row["error"], row
        assert time.time() - 1 < row["next_try"] < time.time() + 70
        text = megafs("status", str(mnt), *s).stdout
        line = next(ln for ln in text.splitlines() if "/stuck.bin" in ln)
        assert re.search(r"\(attempt \d+ failed: MEGA error -3 EAGAIN.*; (next try in \d+ s"
                         r"|trying again now)\)$", line), line
        res = megafs("umount", str(mnt), *s, "--timeout", "2", check=False)
        assert res.returncode == 1 and "still pending" in res.stderr, res.stderr
        assert "stuck.bin: pending" in res.stderr and "failed: " in res.stderr, res.stderr
        server.clear_faults()
        wait_for(lambda: os.getxattr(mnt / "stuck.bin", "user.mega.state") == b"uploaded",
                 timeout=90, what="the upload after the fault")
        assert megafs("status", str(mnt), *s, "--json").stdout.count("stuck.bin") == 0


@pytest.mark.parametrize("flag", [["-d"], ["-o", "debug"]])
def test_debug_flag_stays_in_the_foreground_with_the_debug_log(tmp_path, server, flag):
    """Issue 24, item 9: `-d` / `-o debug` as other FUSE file systems take them: the mount
    stays attached, logs DEBUG and libfuse's request trace on stderr, and ends with umount."""
    state = tmp_path / "state"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    err = open(tmp_path / "stderr.txt", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "megafs", "mount", str(mnt), "--api",
                             server.url, "--state-dir", str(state), *flag], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: is_mounted(mnt), timeout=60, what="the mount")
        assert proc.poll() is None                  # in the foreground: still attached
        (mnt / "f.txt").write_text("x")
        megafs("umount", str(mnt), "--state-dir", str(state))
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        force_unmount(mnt)
        err.close()
    text = (tmp_path / "stderr.txt").read_text()
    assert " DEBUG megafs." in text and "opcode: " in text, text[-2000:]
