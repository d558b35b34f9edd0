"""Proof of work that always finishes (issue 19, items 1 and 2), against the real local server:

* no deadline: an answer found after the challenge expired is sent anyway, and the fresh 402
  the server answers it with is solved too;
* cancelling a solve (the cancel event, Ctrl-C) ends every solver thread before it returns;
  SIGTERM or Ctrl-C of ``megafs upload`` during a solve exits at once with one line;
* progress reports: tries, expected tries, elapsed, estimate, and the line a person reads.
"""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from megafs import crypto
from megafs.api import hashcash
from megafs.api.transport import Transport
from megafs.cli.progress import ProofOfWorkLine
from megafs.errors import Cancelled, TransportError
from megafs.retry import RetryPolicy
from helpers.server import ROOT

UNSOLVABLE = "1:0:1700000000:" + "A" * 64       # easiness 0: about 1 try in 500 million


def solver_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("megafs-hashcash")]


def up_command() -> dict:
    mk, pk, ssc = (crypto.random_key() for _ in range(3))
    return {"a": "up", "k": crypto.b64encode(crypto.wrap_key(mk, pk)),
            "ts": crypto.b64encode(crypto.make_ts(mk, ssc))}


@pytest.fixture
def srv(module_server):
    before = module_server.options()
    module_server.clear_faults()
    yield module_server
    module_server.clear_faults()
    module_server.options(before)


def test_a_late_answer_is_sent_and_the_fresh_challenge_solved(srv, caplog):
    # the challenge lives 0.5 s; the first solve is held up for 1.5 s by its first report
    srv.options({"hashcash_ttl": 0.5, "hashcash_easiness": 230})
    before = srv.stats()
    held: list[float] = []

    def hold_first(report: hashcash.Progress) -> None:
        if not held:
            held.append(report.elapsed)
            time.sleep(1.5)

    hashcash.add_observer(hold_first)
    transport = Transport(srv.url, retry=RetryPolicy(initial=0.02, cap=0.3, give_up_after=30))
    try:
        with caplog.at_level("INFO", logger="megafs.api"):
            handle = transport.call(up_command(), anonymous=True)
    finally:
        hashcash.remove_observer(hold_first)
        transport.close()
    assert isinstance(handle, str) and len(handle) == 11
    after = srv.stats()
    assert after.get("hashcash_rejected", 0) == before.get("hashcash_rejected", 0) + 1
    assert after.get("hashcash_solved", 0) == before.get("hashcash_solved", 0) + 1
    assert "answered our proof of work with a new challenge" in caplog.text


def test_cancel_ends_every_solver_thread():
    cancel = threading.Event()
    reports: list[hashcash.Progress] = []
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        hashcash.solve(UNSOLVABLE, workers=2, cancel=cancel, progress=reports.append)
    assert time.monotonic() - started < 3
    assert solver_threads() == []
    assert reports[-1].state == "cancelled" and reports[0].expected > 4e8


def test_ctrl_c_during_a_solve_ends_every_solver_thread():
    def interrupt(report: hashcash.Progress) -> None:
        if report.elapsed > 0.5:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        hashcash.solve(UNSOLVABLE, workers=2, progress=interrupt)
    assert solver_threads() == []


def test_cancel_during_a_login_challenge(srv):
    srv.faults([{"where": "cs", "hashcash": 0, "command": "up"}])
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    transport = Transport(srv.url, retry=RetryPolicy(initial=0.02, cap=0.3, give_up_after=30))
    started = time.monotonic()
    try:
        with pytest.raises(Cancelled):
            transport.batch([up_command()], anonymous=True, cancel=cancel)
    finally:
        transport.close()
    assert time.monotonic() - started < 3 and solver_threads() == []


def test_progress_reports_and_the_line():
    # easiness 100, the real service's: expected tries 2^32 / 74,752
    report = hashcash.Progress(100, 2, 23000, hashcash.expected_tries(100), 72.0)
    assert round(report.expected) == 57455
    assert report.percent == 40 and 170 < report.estimate < 190
    assert report.describe() == ("MEGA asks this computer for a proof of work (easiness 100): "
                                 "about 3 min on 2 cores, 40 %")
    reports: list[hashcash.Progress] = []
    answer, seconds = hashcash.solve("1:255:1700000000:" + "B" * 64, progress=reports.append)
    assert reports[-1].state == "solved" and reports[-1].tries >= 1
    assert reports[-1].describe().endswith("done in 1 s on %d core%s" % (
        reports[-1].workers, "" if reports[-1].workers == 1 else "s"))


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_terminal_line_only_on_a_terminal(monkeypatch):
    # the line is cut to the terminal's width (shutil.get_terminal_size reads COLUMNS first)
    monkeypatch.setenv("COLUMNS", "200")
    report = hashcash.Progress(100, 2, 23000, hashcash.expected_tries(100), 72.0)
    tty, plain = Tty(), io.StringIO()
    for stream in (tty, plain):
        line = ProofOfWorkLine(stream)
        line(report)
        line(hashcash.Progress(100, 2, 60000, report.expected, 180.0, "solved"))
    assert plain.getvalue() == ""
    assert "\r\x1b[KMEGA asks this computer for a proof of work (easiness 100): about 3 min " \
           "on 2 cores, 40 %" in tty.getvalue()
    assert tty.getvalue().endswith("done in 3 min on 2 cores\n")


@pytest.mark.parametrize("sig, code, words", [(signal.SIGTERM, 143, "terminated"),
                                              (signal.SIGINT, 130, "interrupted")])
def test_upload_stopped_during_a_solve_exits_at_once(srv, tmp_path, sig, code, words):
    srv.faults([{"where": "cs", "hashcash": 0, "command": "up"}])
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    issued = srv.stats().get("hashcash_issued", 0)
    env = dict(os.environ, MEGAFS_RETRY_SECONDS="30")
    env.pop("MEGAFS_API", None)
    proc = subprocess.Popen([sys.executable, "-m", "megafs", "upload", "--api", srv.url,
                             "--state-dir", str(tmp_path / "state"), str(path)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while srv.stats().get("hashcash_issued", 0) == issued and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)                 # solving now
        proc.send_signal(sig)
        started = time.monotonic()
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - started < 3
    assert proc.returncode == code and out == ""
    assert [line for line in err.splitlines() if line.strip()] == [
        "megafs upload: %s%s" % (words, " (SIGTERM)" if sig == signal.SIGTERM else "")]


def test_a_server_refusing_every_timely_answer_is_a_clear_error(srv):
    # every challenge expires before any answer arrives: five answers sent in time (within
    # the real challenge life) are refused, then one clear error instead of solving forever
    srv.options({"hashcash_ttl": 0.001, "hashcash_easiness": 255})
    before = srv.stats().get("hashcash_rejected", 0)
    transport = Transport(srv.url, retry=RetryPolicy(initial=0.02, cap=0.3, give_up_after=30))
    try:
        with pytest.raises(TransportError, match="asked for proof of work 5 times and refused "
                                                 "every answer"):
            transport.call(up_command(), anonymous=True)
    finally:
        transport.close()
    assert srv.stats().get("hashcash_rejected", 0) == before + 5
