"""One locking API lane per session: at most one ``/cs`` request of a session in flight, and
what is submitted meanwhile combined into the next request.

Why: the real service answers a second overlapping request of one session that reads or
changes account state with a bare ``-3`` ("API lock", retry later), and both MEGA clients keep
one such request in flight per session:

* meganz/sdk ``RequestDispatcher`` (include/mega/request.h, src/request.cpp) holds one
  ``inflightreq`` and a deque ``nextreqs`` that collects every command added meanwhile; when
  the in-flight request is answered, the next one goes out with everything that waited, up to
  ``MAX_COMMANDS`` (10000) commands per request.  A request that failed (network error, ``-3``,
  ``-4``) is resent *exactly as it was* ("we keep inflightreq as it needs to be resent exactly
  as it was, for idempotence").  Commands marked lockless (``g`` with a download URL and
  ``g`` of a public link: ``mLockless`` in src/commands.cpp ``CommandGetFile``,
  ``CommandGetPH``, ``CommandDirectRead``) go through a second dispatcher ``mReqsLockless``
  with its own in-flight request (src/megaclient.cpp ``reqs`` / ``mReqsLockless``).
* meganz/webclient js/utils/api.js ``MEGAPIRequest`` keeps one ``inflight`` request per
  channel (0: the account, 1: a folder link, 4: the tree fetch, 6: chat keys); ``enqueue``
  adds to ``queue`` and ``flush`` sends the whole queue as one array once nothing is in
  flight, retrying the same request while the answer is ``EAGAIN`` (-3).  There ``g`` has no
  lane of its own: it goes on channel 0 (or 1 for a folder link) with the rest
  (js/utils ``megaUtilsGFSFetch``: ``M.req(req, pfid ? 1 : 0)``).

megafs follows the SDK: locking commands go through one ``Lane`` per Transport (one Transport
serves one session), batches made only of ``g`` are lockless and go straight out, in parallel
(``Transport.batch`` decides; see ``is_lockless``).

Contract of ``Lane.submit`` (a *combining* lane: no thread of its own):
* a caller queues its commands as one job and waits; when no request is in flight, the
  waiting caller that gets the lock first becomes the *sender*: it takes jobs from the head of
  the queue (in order, whole jobs, up to ``MAX_COMMANDS`` commands and ``MAX_BODY`` bytes; a
  single bigger job goes alone), sends them as one request through ``send`` (which retries it
  under the same sequence id with the same body), hands every job its own slice of the
  answer, and gives up the sender role.  One condition variable guards the queue and the
  "in flight" flag, so two senders can never overlap;
* each caller gets exactly its own results, in order; per-command results (a ``-3`` in a slot
  included) are the caller's to act on (``Transport.batch`` resends its own transient slots
  through the lane again, in a new request); a batch-level error raised by ``send`` is raised
  to every caller of that request;
* a caller whose ``cancel`` event is set stops waiting and gets ``Cancelled``: a job not sent
  yet is taken off the queue, a job in flight is left to its request (its commands may still
  be applied).  The request's own retries stop only once every caller in it has cancelled.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import Cancelled, TransportError
from ..retry import Backoff, RetryPolicy

log = logging.getLogger(__name__)

# Caps of one combined request.  The SDK caps a request at 10000 commands and has no byte cap
# (meganz/sdk include/mega/request.h ``MAX_COMMANDS``); the web client has neither.  megafs
# keeps a request much smaller, so one batch-level error, one slow reply or one resend of the
# whole body stays cheap: 500 commands / 1 MiB (the local server accepts 64 MiB,
# megafs/server/web/ep_api.py ``CS_BODY_LIMIT``).  In practice a mount never comes near them.
# Measured (2026-12-07, 2 cores) with 100 x 4 KiB files copied into a mount by one ``cp``,
# counting the server's ``/cs`` requests until every link was readable (3 runs each; the
# workload of tests/mount/test_api_lane_mount.py ``test_requests_per_small_file``):
#   local server as is (~1 ms a request): 2.32-2.66 requests per file before the lane,
#     1.98-2.11 with it (each file needs a ``u``, a ``p`` and an ``l``; the committer already
#     batched ``p``/``l``);
#   50 ms added to every request (fault ``{"where": "cs", "delay": 0.05}``): 1.28-1.30 before,
#     0.53-0.54 with it, but 1.7-1.9 s -> 2.9-3.0 s to the last link: with one request in
#     flight an upload worker's ``u`` waits for the request before it (as in the SDK).
MAX_COMMANDS = 500
MAX_BODY = 1 << 20

# A waiting caller with a cancel event looks at it this often (seconds).
CANCEL_POLL = 0.1

# Commands that may use the lockless lane when a batch holds nothing else (meganz/sdk
# src/commands.cpp: ``CommandGetFile`` sets ``mLockless`` for ``g``, not for ``gd``).
LOCKLESS_COMMANDS = frozenset({"g"})

Send = Callable[[list[dict[str, Any]], Backoff], list[Any]]


def is_lockless(commands: list[dict[str, Any]]) -> bool:
    """True when every command of the batch is lockless (``g``): such a batch neither reads
    nor changes account state under the session's API lock and is never refused with -3."""
    return bool(commands) and all(c.get("a") in LOCKLESS_COMMANDS for c in commands)


@dataclass(eq=False)
class _Job:
    commands: list[dict[str, Any]]
    size: int                                   # bytes of the commands as JSON
    cancel: threading.Event | None
    results: list[Any] | None = None
    error: BaseException | None = None
    done: bool = False
    abandoned: bool = False

    def cancelled(self) -> bool:
        return self.abandoned or (self.cancel is not None and self.cancel.is_set())


class _AllCancelled(threading.Event):
    """The cancel event of one combined request: set once every job in it is cancelled, so one
    caller giving up never stops the retries the others wait for."""

    def __init__(self, jobs: list[_Job]) -> None:
        super().__init__()
        self._jobs = jobs

    def is_set(self) -> bool:
        return all(job.cancelled() for job in self._jobs)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = CANCEL_POLL if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(CANCEL_POLL, left))
        return True


@dataclass(eq=False)
class LaneStats:
    """Counts of one lane: combined requests sent, caller batches they carried, and the most
    commands one request held."""

    requests: int = 0
    jobs: int = 0
    largest: int = 0


class Lane:
    """The locking lane of one session (see the module docstring for the contract).

    ``send(commands, backoff)`` posts one request and returns its per-command results (a list
    as long as ``commands``) or raises for the whole batch; it must resend the identical body
    under the same sequence id on its own retries.  ``retry()`` gives the back-off policy of each
    combined request; it is asked per request, so a policy changed on the transport applies at
    once.  Thread-safe; ``stats`` counts requests and jobs (for tests and logs).
    """

    def __init__(self, send: Send, retry: Callable[[], RetryPolicy], *,
                 max_commands: int = MAX_COMMANDS,
                 max_body: int = MAX_BODY) -> None:
        self._send = send
        self._retry = retry
        self.max_commands = max_commands
        self.max_body = max_body
        self._cond = threading.Condition()
        self._queue: list[_Job] = []
        self._busy = False
        self.stats = LaneStats()

    def submit(self, commands: list[dict[str, Any]],
               cancel: threading.Event | None = None) -> list[Any]:
        """Send ``commands`` in the session's next request; return their results in order.

        Raises what the request raised as a whole (MegaError, TransportError, ProtocolError)
        and ``Cancelled`` once ``cancel`` is set while waiting.
        """
        size = len(json.dumps(commands, separators=(",", ":")))
        job = _Job(list(commands), size, cancel)
        with self._cond:
            self._queue.append(job)
        while True:
            with self._cond:
                while True:
                    if job.done:
                        return self._outcome(job)
                    if not self._busy:      # then ``job`` is still queued: send the head
                        batch = self._take()
                        self._busy = True
                        break
                    if cancel is not None and cancel.is_set():
                        self._give_up(job)
                    self._cond.wait(CANCEL_POLL if cancel is not None else None)
            self._run(batch)

    # --- under self._cond ------------------------------------------------------------------
    def _take(self) -> list[_Job]:
        """Whole jobs from the head of the queue, within the caps (at least one)."""
        batch: list[_Job] = []
        count = size = 0
        while self._queue:
            job = self._queue[0]
            if batch and (count + len(job.commands) > self.max_commands
                          or size + job.size + 1 > self.max_body):
                break
            batch.append(self._queue.pop(0))
            count += len(job.commands)
            size += job.size + 1
        return batch

    def _give_up(self, job: _Job) -> None:
        if job in self._queue:
            self._queue.remove(job)
            raise Cancelled("command batch cancelled before it was sent")
        job.abandoned = True
        raise Cancelled("command batch cancelled while in flight (it may still be applied)")

    @staticmethod
    def _outcome(job: _Job) -> list[Any]:
        if job.error is not None:
            raise job.error
        assert job.results is not None
        return job.results

    # --- the sender ------------------------------------------------------------------------
    def _run(self, batch: list[_Job]) -> None:
        """Send ``batch`` as one request and settle every job in it; always gives up the
        sender role, whatever happens."""
        commands = [c for job in batch for c in job.commands]
        if len(batch) > 1:
            log.debug("lane: %d caller batch(es), %d command(s) in one request",
                      len(batch), len(commands))
        try:
            answer = self._send(commands, Backoff(self._retry(), "command batch",
                                                  _AllCancelled(batch)))
            offset = 0
            for job in batch:
                job.results = answer[offset:offset + len(job.commands)]
                offset += len(job.commands)
        except Exception as exc:    # a batch-level error is every caller's error
            for job in batch:
                job.error = exc
        except BaseException:       # KeyboardInterrupt, SystemExit: this thread's own
            for job in batch:
                job.error = TransportError("command batch interrupted")
            raise
        finally:
            with self._cond:
                for job in batch:
                    job.done = True
                self._busy = False
                self.stats.requests += 1
                self.stats.jobs += len(batch)
                self.stats.largest = max(self.stats.largest, len(commands))
                self._cond.notify_all()
