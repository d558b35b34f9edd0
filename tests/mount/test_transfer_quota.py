"""Reads through a real mount past MEGA's transfer quota (issue 19 item 4): a read that meets
the quota waits the time the server gives and then returns the right bytes; meanwhile
``megafs status`` and the log (once) say so, and a reader blocked in that wait can be
interrupted or killed at once without harming the mount."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest

from megafs.api.client import MegaClient, PutItem
from helpers.mount import MountProcess, megafs, run_with_timeout
from helpers.server import ServerProcess

pytestmark = [pytest.mark.fuse, pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]

QUOTA = 1 << 20
WINDOW = 8          # seconds: room for three interrupted callers before the window moves
SIZE = 600_000      # two files do not fit in one window


def _blocked_then(args: list[str], sig: int) -> float:
    """Start ``args``, check it is still blocked after a second, send ``sig``; seconds until
    it ended."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    assert proc.poll() is None, "the read did not wait"
    start = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return 99.0
    return time.monotonic() - start


def test_a_read_waits_out_the_transfer_quota_and_can_be_interrupted(tmp_path):
    with ServerProcess(tmp_path / "server-data",
                       extra_args=["--transfer-quota", str(QUOTA),
                                   "--transfer-window", str(WINDOW)]) as server:
        state = tmp_path / "state"
        files = {name: os.urandom(SIZE) for name in ("a.bin", "b.bin", "c.bin")}
        with MegaClient.open(api=server.url, state_dir=str(state)) as client:
            root = client.fetch().roots()[2]
            for name, data in files.items():
                (tmp_path / name).write_bytes(data)
                node = client.put_files([PutItem(root, client.upload(str(tmp_path / name)),
                                                 {"n": name})])[0]
                assert isinstance(node, dict), node
        with MountProcess(tmp_path / "mnt", server.url, state) as m:
            assert (m.mnt / "a.bin").read_bytes() == files["a.bin"]     # the quota's room
            started = time.monotonic()
            # a reader of b.bin waits for the window; Ctrl-C or kill -9 end it at once
            for sig in (signal.SIGKILL, signal.SIGINT):
                took = _blocked_then(["cat", str(m.mnt / "b.bin")], sig)
                assert took < 1.5, (sig, took)
            # so is a writer of a remote file whose bytes must come down first
            write = [sys.executable, "-c", "import os; fd = os.open(%r, os.O_WRONLY); "
                     "os.pwrite(fd, b'x', 0)" % str(m.mnt / "c.bin")]
            took = _blocked_then(write, signal.SIGKILL)
            assert took < 1.5, took
            status = megafs("status", str(m.mnt), "--state-dir", str(state))
            assert "reads wait for MEGA's transfer quota: continuing in" in status.stdout, \
                status.stdout
            # the next reader gets the right bytes once the window has moved
            assert run_with_timeout(lambda: (m.mnt / "b.bin").read_bytes(), 60) == \
                files["b.bin"]
            assert time.monotonic() - started > 2.0
            said = [ln for ln in m.log().splitlines() if "transfer quota is used up" in ln]
            assert said and all(" INFO " in ln and "continue in" in ln for ln in said), said
            # said once per wait: on a loaded machine the steps above can outlast the window,
            # and a refusal after it starts a new wait (and a new line), never one within it
            at = [datetime.strptime(ln[:23], "%Y-%m-%d %H:%M:%S,%f") for ln in said]
            asked = [float(re.search(r"server asked for (\d+) s", ln).group(1))  # type: ignore
                     for ln in said]
            assert all((at[i + 1] - at[i]).total_seconds() >= asked[i] - 0.5
                       for i in range(len(said) - 1)), said
            # the killed writer changed nothing: no file waits for an upload
            status = json.loads(megafs("status", str(m.mnt), "--state-dir", str(state),
                                       "--json").stdout)
            assert status["mounted"] and status["files"] == [], status
