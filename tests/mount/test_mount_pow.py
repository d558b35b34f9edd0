"""A mount and its proof of work (issue 19): it is paid once per account (a remount and a later
``megafs upload`` resume the saved session: no `up`, no `us`), a mount solving its login shows
it in ``megafs status``, and ``mount``'s wait for the daemon does not time out while the login
solves (the daemon reports progress through its readiness pipe)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from megafs.api import hashcash
from megafs.mount import daemon
from helpers.mount import ROOT, MountProcess, force_unmount, is_mounted, megafs, wait_for


def logins(srv) -> dict:
    stats = srv.stats()
    return {"up": stats["commands"].get("up", 0), "us": stats["commands"].get("us", 0),
            "challenged": stats.get("hashcash_login", 0)}


def test_a_remount_and_uploads_send_no_login(tmp_path, module_server):
    state = tmp_path / "state"
    before = logins(module_server)
    with MountProcess(tmp_path / "mnt", module_server.url, state):
        pass
    first = logins(module_server)
    # each `up`/`us` is counted twice: the challenged request and the one with the answer
    assert first["up"] > before["up"] and first["challenged"] > before["challenged"]
    with MountProcess(tmp_path / "mnt", module_server.url, state) as mount:
        (mount.mnt / "a.txt").write_bytes(b"hello")
        wait_for(lambda: (mount.mnt / "a.txt.link").exists(), what="the link")
    path = tmp_path / "f.bin"
    path.write_bytes(b"y" * 3000)
    for _ in range(2):
        out = megafs("upload", "--api", module_server.url, "--state-dir", str(state), str(path))
        assert "/file/" in out.stdout or "#" in out.stdout
    assert logins(module_server) == first


def test_status_and_the_waiting_mount_show_a_login_solving(tmp_path, module_server):
    module_server.faults([{"where": "cs", "hashcash": 0, "command": "up"}])   # never solved
    state, mnt = tmp_path / "state", tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "megafs", "mount", str(mnt), "--api",
                             module_server.url, "--state-dir", str(state)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        def solving() -> dict | None:
            res = megafs("status", str(mnt), "--state-dir", str(state), "--json", check=False)
            pow_ = json.loads(res.stdout)["proof_of_work"] if res.returncode == 0 else None
            return pow_ if pow_ and pow_["tries"] > 0 else None
        pow_ = wait_for(solving, timeout=30, what="status showing the proof of work")
        assert pow_["state"] == "solving" and pow_["easiness"] == 0 and pow_["workers"] >= 1
        assert pow_["line"].startswith("MEGA asks this computer for a proof of work (easiness 0)")
        text = megafs("status", str(mnt), "--state-dir", str(state)).stdout
        assert "logging in" in text and "MEGA asks this computer" in text
        assert proc.poll() is None and not is_mounted(mnt)
        os.killpg(proc.pid, signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and "interrupted" in err.decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        force_unmount(mnt)
        module_server.clear_faults()
    res = megafs("status", str(mnt), "--state-dir", str(state), "--json", check=False)
    assert res.returncode != 0 or json.loads(res.stdout)["proof_of_work"] is None


def test_the_readiness_wait_lasts_while_the_child_reports_progress(monkeypatch):
    monkeypatch.setattr(daemon, "READY_TIMEOUT", 0.6)
    rfd, wfd = os.pipe()
    report = hashcash.Progress(100, 2, 10, hashcash.expected_tries(100), 1.0)
    seen: list[hashcash.Progress] = []
    pid = os.fork()
    if pid == 0:                          # the "mount child": progress for 2 s, then ready
        try:
            os.close(rfd)
            for _ in range(8):
                os.write(wfd, b"P" + json.dumps(report.as_dict()).encode() + b"\n")
                time.sleep(0.25)
            os.write(wfd, b"Rhttp://api/\n")
        finally:
            os._exit(0)
    os.close(wfd)
    try:
        started = time.monotonic()
        assert daemon._wait_ready(rfd, seen.append) == b"Rhttp://api/\n"
        assert time.monotonic() - started > 1.5
    finally:
        os.close(rfd)
        os.waitpid(pid, 0)
    assert len(seen) == 8 and (seen[0].easiness, seen[0].tries) == (100, 10)
