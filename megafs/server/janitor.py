"""Housekeeping of the local MEGA server: start-up recovery and the periodic sweep that keeps
disk use bounded by the live data.

What goes, and when (TTLs are policies; the real service's are not published, see DESIGN.md):

* the part file of an upload with no POST for ``upload_idle`` seconds (abandoned); the URL
  answers ``-8`` from then on, and is forgotten (404) ``upload_idle`` seconds after expiring;
* the part file of an upload expired by a fault rule: at once (``Uploads.expire``);
* the blob of a completion token not used by a ``p`` within ``completion_ttl`` (an upload
  superseded by another one, or whose client gave up); the token then answers ``-2`` in ``p``;
* the blob of a deleted node: right after the deleting commit (``Tx.delete_nodes``);
* replay-cache entries after an hour, tombstones of deleted folders after a week, and action
  packets beyond ``packet_log`` per account (``State.prune_packets``).

``recover()`` runs once at start-up, before any request: it finishes a blob rename that a crash
interrupted and deletes every file nothing references.  The sweep runs on its own thread, every
quarter of the shortest TTL (at most a minute), and never touches an upload with a write in
flight (``Uploads.expire`` checks under the upload's lock).
"""
from __future__ import annotations

import logging
import os
import threading

from .config import Policy
from .db import BLOB_ID_RE, now
from .stats import Stats
from .store import State
from .uploads import Uploads

log = logging.getLogger(__name__)

REPLAY_SECONDS = 3600            # clients retry within seconds or minutes
TOMBSTONE_SECONDS = 7 * 86400    # how long a deleted folder's handle is remembered (a guess)
MAX_INTERVAL = 60.0
MIN_INTERVAL = 0.2


def recover(state: State, policy: Policy) -> None:
    """Finish what a crash interrupted and delete files nothing references (start-up)."""
    with state.lock:
        db = state.db
        finished = removed = 0
        for row in db.execute("SELECT token, blob FROM uploads "
                              "WHERE blob IS NOT NULL").fetchall():
            part, blob = state.part_path(row["token"]), state.blob_path(row["blob"])
            if part.exists() and not blob.exists():
                os.replace(part, blob)
                finished += 1
        live_uploads = {r["token"] for r in db.execute(
            "SELECT token FROM uploads WHERE blob IS NULL AND expired=0").fetchall()}
        for path in state.upload_dir.iterdir():
            if not (path.name.endswith(".part") and path.name[:-5] in live_uploads):
                path.unlink()
                removed += 1
        for path in state.blob_dir.iterdir():
            if not BLOB_ID_RE.match(path.name) or not state.blob_referenced(path.name):
                path.unlink()
                removed += 1
        if finished or removed:
            log.info("recovery: finished %d upload(s), removed %d unreferenced file(s)",
                     finished, removed)


class Janitor:
    def __init__(self, state: State, uploads: Uploads, policy: Policy, stats: Stats) -> None:
        self.state = state
        self.uploads = uploads
        self.policy = policy
        self.stats = stats
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def interval(self) -> float:
        shortest = min(self.policy.upload_idle, self.policy.completion_ttl)
        return max(MIN_INTERVAL, min(MAX_INTERVAL, shortest / 4))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="megafs-janitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval()):
            try:
                self.sweep()
            except Exception:      # keep sweeping later; a failure here must not go unseen
                log.exception("housekeeping sweep failed")

    def sweep(self) -> dict[str, int]:
        """One pass; returns what it removed (also added to the stats counters)."""
        done = {"uploads_expired": self._expire_idle_uploads(),
                "completions_dropped": self._drop_stale_completions()}
        done.update(self._forget_old_rows())
        for key, n in done.items():
            if n:
                self.stats.bump("housekeeping_" + key, n)
        if any(done.values()):
            log.info("housekeeping: %s", ", ".join("%s %d" % kv for kv in done.items() if kv[1]))
        return done

    def _expire_idle_uploads(self) -> int:
        idle = self.policy.upload_idle
        with self.state.lock:
            tokens = [r["token"] for r in self.state.db.execute(
                "SELECT token FROM uploads WHERE blob IS NULL AND expired=0").fetchall()]
        return sum(1 for token in tokens if self.uploads.expire(token, idle=idle))

    def _drop_stale_completions(self) -> int:
        cutoff = now() - self.policy.completion_ttl
        with self.state.transaction() as tx:
            rows = tx.execute("SELECT token, blob FROM completions WHERE node IS NULL AND "
                              "created<?", (cutoff,)).fetchall()
            tx.execute("DELETE FROM completions WHERE created<?", (cutoff,))
            tx.execute("DELETE FROM uploads WHERE blob IS NOT NULL AND created<?", (cutoff,))
        for row in rows:
            self.state.collect_blob(row["blob"])
        return len(rows)

    def _forget_old_rows(self) -> dict[str, int]:
        stamp = now()
        with self.state.transaction() as tx:
            expired = tx.execute("SELECT token FROM uploads WHERE expired>0 AND expired<?",
                                 (stamp - self.policy.upload_idle,)).fetchall()
            for row in expired:
                tx.execute("DELETE FROM uploads WHERE token=?", (row["token"],))
            replays = tx.execute("DELETE FROM replay WHERE created<?",
                                 (stamp - REPLAY_SECONDS,)).rowcount
            tombstones = tx.execute("DELETE FROM deleted WHERE ts<?",
                                    (stamp - TOMBSTONE_SECONDS,)).rowcount
        for row in expired:
            self.state.remove_part(row["token"])
            self.uploads.forget(row["token"])
        return {"uploads_forgotten": len(expired), "replays_dropped": replays,
                "tombstones_dropped": tombstones}
