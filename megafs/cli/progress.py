"""Progress on stderr for people: one transfer (``upload``/``get``) and a mount's upload queue
(``umount``, ``status --watch``).

Lines are formatted by tqdm (bytes, percentage, rate, elapsed and ETA), so they read like
every other progress bar on the terminal.  On a terminal the block of lines is redrawn in place
a few times a second; when stderr is a file or a pipe a plain block is printed every
``PLAIN_EVERY`` seconds (and at the end), so logs and tests see the same figures without
control characters.  Labels (remote names, paths) go through ``config.printable``: a name
never writes escape sequences, bidi overrides or newlines.  Rates are averages of what was
sent since a file's upload (or the watch) began.  Never
touches stdout (links and ``--json`` go there), except ``status --watch`` on a terminal.
"""
from __future__ import annotations

import shutil
import sys
import threading
import time
from typing import Any, TextIO

from tqdm import tqdm

from ..config import printable

PLAIN_EVERY = 2.0          # seconds between blocks when stderr is not a terminal


def _meter(done: int, total: int, elapsed: float, prefix: str, rate: float | None,
           width: int) -> str:
    # rate None: tqdm uses the average since ``elapsed`` began, steadier for an ETA than the
    # last samples (a stalled upload would otherwise show an ETA of centuries)
    return tqdm.format_meter(min(done, total), total, elapsed, ncols=width, prefix=prefix,
                             unit="B", unit_scale=True, unit_divisor=1024, rate=rate)


def _rate(sent: int, elapsed: float) -> float:
    """Bytes per second sent while watched; 0 (tqdm shows "?") before anything was."""
    return max(0, sent) / elapsed if elapsed > 0 else 0.0


class Transfer:
    """The progress of one file transfer; ``transfer(done_bytes)`` from any thread."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        enabled = self.stream.isatty()
        self.lock = threading.Lock()
        label = printable(label)      # a remote name: no escape sequences, no RTLO
        label = label if len(label) <= 30 else label[:27] + "..."
        self.bar = tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
                        file=self.stream, disable=not enabled, leave=False, mininterval=0.1)

    def __call__(self, *args: Any) -> None:
        done = next((a for a in args if isinstance(a, int)), None)
        if done is None:
            return
        with self.lock:
            if done > self.bar.n:
                self.bar.update(done - self.bar.n)

    def finish(self) -> None:
        with self.lock:
            self.bar.close()

    @staticmethod
    def note(line: str, stream: TextIO | None = None) -> None:
        """Print one line to stderr (or ``stream``) without breaking a bar on screen."""
        tqdm.write(line, file=stream or sys.stderr)


class QueueProgress:
    """Bytes, rates and ETA of a mount's unfinished uploads, per file and in total.

    ``update(files)`` takes the rows of ``megafs status`` (``path``, ``state``, ``size``,
    ``progress``); ``draw()`` shows them.  A file that leaves the list counts as uploaded."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None,
                 max_files: int = 10) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.max_files = max_files
        self.start = time.monotonic()
        self.last_plain = 0.0
        self.drawn = 0                               # lines of the block on screen
        self.files: dict[str, dict[str, Any]] = {}   # path -> state, size, done, since
        self.finished = 0                            # bytes of files that left the list
        self.finished_files = 0
        self.base: int | None = None                 # bytes already sent at the first update

    # --- figures ----------------------------------------------------------------------------
    def update(self, rows: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        current: dict[str, dict[str, Any]] = {}
        for row in rows:
            if row.get("state") not in ("pending", "uploading"):
                continue
            path = str(row.get("path"))
            old = self.files.get(path)
            started = old is not None and old["state"] == "uploading"
            done = int(row.get("progress") or 0)
            # "base": bytes already sent when this watch first saw the upload running, so
            # that rates count only what was sent while watching (issue 24: a watch started
            # late showed an ETA as if everything sent before had taken no time)
            current[path] = {"state": row["state"], "size": int(row.get("size") or 0),
                             "done": done,
                             "since": old["since"] if old is not None and started else now,
                             "base": old["base"] if old is not None and started else done,
                             "error": row.get("error"), "attempts": row.get("attempts"),
                             "next_try": row.get("next_try")}
        for path, old in self.files.items():
            if path not in current:
                self.finished += old["size"]
                self.finished_files += 1
        self.files = current
        if self.base is None:
            self.base = sum(f["done"] for f in current.values())

    @property
    def remaining(self) -> int:
        return sum(max(0, f["size"] - f["done"]) for f in self.files.values())

    def lines(self, width: int | None = None) -> list[str]:
        width = width or (shutil.get_terminal_size((100, 20)).columns - 1 if self.tty else 0)
        now = time.monotonic()
        out = []
        shown = sorted(self.files.items(), key=lambda kv: (kv[1]["state"] != "uploading",
                                                           kv[0]))
        for path, f in shown[:self.max_files]:
            label = printable(path)
            label = label if len(label) <= 40 else "..." + label[-37:]
            if f["state"] == "uploading":
                out.append(_meter(f["done"], f["size"], now - f["since"], "  " + label,
                                  _rate(f["done"] - f["base"], now - f["since"]), width))
            else:
                reason = why(f)
                tail = " (%s)" % reason if reason else ""
                out.append("  %s: pending, %s%s" % (label, _size(f["size"]), tail))
        if len(shown) > self.max_files:
            out.append("  ... and %d more file(s)" % (len(shown) - self.max_files))
        done = self.finished + sum(f["done"] for f in self.files.values())
        total = done + self.remaining
        prefix = "total: %d file(s) left, %d uploaded" % (len(self.files), self.finished_files)
        out.append(_meter(done, max(total, 1), now - self.start, prefix,
                          _rate(done - (self.base or 0), now - self.start), width))
        return out

    # --- output -----------------------------------------------------------------------------
    def draw(self, force: bool = False) -> None:
        if self.tty:
            lines = self.lines()
            text = ""
            if self.drawn:
                text += "\033[%dF" % self.drawn              # back to the block's first line
            text += "".join("\033[2K%s\n" % line for line in lines)
            if self.drawn > len(lines):
                text += "\033[J"                          # clear lines left below
            self.stream.write(text)
            self.stream.flush()
            self.drawn = len(lines)
            return
        now = time.monotonic()
        if not force and now - self.last_plain < PLAIN_EVERY:
            return
        self.last_plain = now
        self.stream.write("\n".join(self.lines()) + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Remove the block from a terminal (the caller prints its own summary)."""
        if self.tty and self.drawn:
            self.stream.write("\033[%dF\033[J" % self.drawn)
            self.stream.flush()
            self.drawn = 0

    def summary(self) -> str:
        elapsed = time.monotonic() - self.start
        return "%d file(s), %s uploaded in %.0f s" % (self.finished_files,
                                                      _size(self.finished), elapsed)


def _size(n: int) -> str:
    from ..config import format_size
    return format_size(n)


def why(row: dict[str, Any], *, mounted: bool = True, now: float | None = None) -> str:
    """Why a ``megafs status`` row waits, for people (issue 24), or "" if nothing went wrong:
    ``attempt 3 failed: <error>; next try in 4 s``, ``failed after 2 attempts: <error>; ...``.
    ``row`` has ``state``, ``error``, ``attempts`` and ``next_try`` (wall clock seconds or
    None); ``mounted`` False: a queue read from its file, tried again at the next mount."""
    from ..api.xferquota import wait_text

    error, attempts = row.get("error"), int(row.get("attempts") or 0)
    if not error:
        return ""
    if row.get("state") == "failed":
        head = "failed after %d attempt(s): %s" % (max(1, attempts), error)
    else:
        head = "attempt %d failed: %s" % (max(1, attempts), error)
    next_try = row.get("next_try")
    if not mounted:
        return head + "; tried again at the next mount"
    if row.get("state") == "uploading":
        return head + "; trying again now"
    if isinstance(next_try, (int, float)) and next_try:
        left = next_try - (time.time() if now is None else now)
        tail = "next try in %s" % wait_text(left) if left > 0 else "trying again now"
        if row.get("state") == "failed":
            tail += " (or now: `megafs retry`)"
        return "%s; %s" % (head, tail)
    return head


class ProofOfWorkLine:
    """The terminal line of a proof of work in progress (``megafs.api.hashcash.Progress``):
    "MEGA asks this computer for a proof of work (easiness 100): about 3 min on 2 cores,
    40 %", redrawn in place on stderr, and its last state kept on a line of its own.  Only
    when stderr is a terminal (checked at every report: a daemonized mount's stderr becomes its
    log file, which has the same words at INFO).  Call it with each report, from any thread;
    ``with ProofOfWorkLine.installed():`` shows every solve of this process."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.lock = threading.Lock()
        self.shown = False

    def __call__(self, report: Any) -> None:
        stream = self.stream or sys.stderr
        try:
            if not stream.isatty():
                return
        except (AttributeError, ValueError):
            return
        width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
        line = report.describe()[:width]
        with self.lock:
            if report.state == "solving":
                stream.write("\r\x1b[K" + line)
                self.shown = True
            else:
                stream.write(("\r\x1b[K" if self.shown else "") + line + "\n")
                self.shown = False
            stream.flush()

    @classmethod
    def installed(cls) -> Any:
        """A context manager: the line observes every solve of this process meanwhile."""
        from contextlib import contextmanager

        from ..api import hashcash

        @contextmanager
        def scope() -> Any:
            line = cls()
            hashcash.add_observer(line)
            try:
                yield line
            finally:
                hashcash.remove_observer(line)
        return scope()
