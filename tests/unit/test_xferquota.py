"""The transfer-quota gate (issue 19 item 4, ``megafs/api/xferquota.py``): the server's time
left is hostile input; a wait is shared, announced once, cancellable and ended by ``close``."""
from __future__ import annotations

import os
import threading
import time

import pytest

from megafs.api.commands import parse_g_reply
from megafs.api.xferquota import (MAX_WAIT, UNKNOWN_WAIT, QuotaGate, TransferQuotaExceeded,
                                  parse_time_left, wait_text)
from megafs.errors import Cancelled


@pytest.mark.parametrize("value,seconds", [
    ("720", 720), (" 5 ", 5), (720, 720), ("1", 1), (str(10 ** 30), MAX_WAIT),
    (10 ** 9, MAX_WAIT), ("0", UNKNOWN_WAIT), ("-3", UNKNOWN_WAIT), ("+3", UNKNOWN_WAIT),
    ("1e9", UNKNOWN_WAIT), ("7.5", UNKNOWN_WAIT), ("", UNKNOWN_WAIT), ("abc", UNKNOWN_WAIT),
    ("\u0663", UNKNOWN_WAIT), ("9" * 41, UNKNOWN_WAIT), (None, UNKNOWN_WAIT),
    (7.5, UNKNOWN_WAIT), (True, UNKNOWN_WAIT), (-1, UNKNOWN_WAIT), ([5], UNKNOWN_WAIT)])
def test_time_left_is_checked(value, seconds):
    assert parse_time_left(value) == seconds


def test_wait_text():
    assert [wait_text(s) for s in (0.2, 45.2, 60, 720, 719.5, 3600, 7300)] == [
        "1 s", "46 s", "1 min", "12 min", "12 min", "1 h 0 min", "2 h 2 min"]


def test_g_over_quota_is_a_transfer_quota_refusal():
    with pytest.raises(TransferQuotaExceeded) as info:
        parse_g_reply({"e": -17, "tl": 720, "s": 5})
    assert info.value.time_left == 720 and info.value.code == -17
    assert str(info.value).startswith("transfer quota used up") and "12 min" in str(info.value)
    with pytest.raises(TransferQuotaExceeded) as info:
        parse_g_reply(-17)                        # no time given: ask again later
    assert info.value.time_left == UNKNOWN_WAIT


def test_one_wait_shared_announced_once_and_cancellable():
    told: list[float] = []
    gate = QuotaGate(on_wait=told.append)
    gate.wait()                                   # nothing to wait for
    started = time.monotonic()
    gate.refused(TransferQuotaExceeded(1, "test"))
    gate.refused(TransferQuotaExceeded(1, "test"))   # a second refusal: the same wait
    assert told == [1] and 0.5 < gate.left() <= 1
    with pytest.raises(Cancelled):
        gate.wait(lambda: True)
    assert time.monotonic() - started < 0.5
    gate.wait()
    assert 0.9 < time.monotonic() - started < 2 and gate.left() == 0


def test_close_ends_every_wait_and_a_gate_that_does_not_wait_raises():
    gate = QuotaGate()
    gate.refused(TransferQuotaExceeded(MAX_WAIT, "test"))
    ended: list[BaseException] = []

    def waiter() -> None:
        try:
            gate.wait()
        except Cancelled as exc:
            ended.append(exc)
    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.3)
    gate.close()
    thread.join(2)
    assert not thread.is_alive() and len(ended) == 1
    with pytest.raises(TransferQuotaExceeded):
        gate.refused(TransferQuotaExceeded(5, "after close"))
    with pytest.raises(TransferQuotaExceeded):
        QuotaGate(waiting=False).refused(TransferQuotaExceeded(5, "fail fast"))


def test_a_wait_of_a_reader_that_is_gone_ends():
    """``fuse.adapter._alive``: the kernel's readahead reads are never interrupted, so a wait
    also ends once the process that asked has exited (a zombie counts as exited)."""
    import subprocess
    import sys

    from megafs.fuse.adapter import _alive
    assert _alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while _alive(child.pid) and time.monotonic() < deadline:   # exits, not yet reaped
        time.sleep(0.02)
    assert not _alive(child.pid)
    child.wait()
    assert not _alive(child.pid)
