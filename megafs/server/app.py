"""The server application object: what one ``megafs serve`` process holds.

``App`` ties together the configuration and run-time policy, the state, the fault rules, the
counters, the hashcash gate, uploads, the transfer meter and the janitor, plus the base URLs of
the listeners once they are bound (``web/listeners.py`` binds them, ``cli.py`` builds the App).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .apilock import ApiLocks
from .config import Config
from .datadir import new_token
from .faults import Faults
from .hashcash import Hashcash
from .janitor import Janitor, recover
from .stats import Stats
from .store import State
from .transfer_quota import TransferMeter
from .uploads import Uploads
from .useradmin import account_admin, all_mail

log = logging.getLogger(__name__)


@dataclass
class Urls:
    """Base URLs ("scheme://host:port/") of the listeners; empty until bound."""

    api: str = ""
    wait: str = ""             # the change feed's wait URLs (their own port, as in reality)
    secure_transfers: str = ""  # https transfers (``--tls``), for `u`/`g` with `ssl`
    ca_file: str = ""           # the CA that signed the TLS certificate
    proxy: str = ""             # the CONNECT proxy to the API (``--proxy-port``)


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.policy = config.policy
        self.state = State(config.data_dir, config.quota, config.policy.packet_log)
        recover(self.state, self.policy)
        self.faults = Faults(config.faults)
        self.stats = Stats()
        self.hashcash = Hashcash(self.policy)
        self.api_locks = ApiLocks()           # sessions with a locking /cs request running
        self.uploads = Uploads(self.state, self.policy)
        self.meter = TransferMeter(self.policy)
        self.janitor = Janitor(self.state, self.uploads, self.policy, self.stats)
        self.urls = Urls()
        self.control_token = new_token(config.data_dir)   # asked for by web/ep_control.py
        self.closing = False        # set by stop(): requests still arriving are dropped

    @property
    def base_url(self) -> str:
        return self.urls.api

    def start(self) -> None:
        self.janitor.start()

    def set_quota(self, nbytes: int, user: str | None = None) -> bool:
        with self.state.transaction() as tx:
            if user is not None:
                if tx.account(user) is None:
                    return False
                tx.execute("UPDATE accounts SET quota=? WHERE uh=?", (nbytes, user))
            else:
                self.state.default_quota = nbytes
                tx.execute("UPDATE accounts SET quota=NULL")
        log.info("quota set to %d bytes for %s", nbytes, user or "every account")
        return True

    def set_options(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change policies (ValueError for a bad one, nothing changed then)."""
        snapshot = self.policy.update(changes)
        self.state.packet_log = self.policy.packet_log
        log.info("options changed: %s", ", ".join("%s=%r" % kv for kv in changes.items()))
        return snapshot

    def mail(self) -> list[dict[str, Any]]:
        """The confirmation mail the real service would have sent (loopback clients only)."""
        return all_mail(self.state)

    def account_admin(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Block/unblock a full account or import a v1 one (ValueError for a bad request)."""
        return account_admin(self.state, payload)

    def info(self) -> dict[str, Any]:
        return {"api": self.urls.api, "wait": self.urls.wait,
                "secure_transfers": self.urls.secure_transfers or None,
                "ca_file": self.urls.ca_file or None, "proxy": self.urls.proxy or None,
                "data": str(self.config.data_dir)}

    def stats_snapshot(self) -> dict[str, Any]:
        out = self.stats.snapshot()
        out["faults"] = self.faults.snapshot()
        out["uploads_completed"] = self.uploads.completed
        out["upload_bytes"] = self.uploads.bytes_received
        out["hashcash_pending"] = self.hashcash.pending()
        out["state"] = self.state.counts()
        return out

    def stop(self) -> None:
        self.closing = True
        self.state.stop_waiters()
        self.janitor.stop()

    def close(self) -> None:
        self.state.close()
