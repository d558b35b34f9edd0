"""``MegaClient``: the one facade the commands and the filesystem use to talk to MEGA.

It binds a Transport (command batches, sc polling) to a Session (ephemeral account, the only
holder of secrets), and adds uploads, verified downloads, node creation (``p``), links
(``l``), folders, attribute updates, moves, deletes and quota.  Every reply is type-checked
before use; every error is a ``MegafsError`` (``MegaError`` for API codes).

Locking contract: every method may be called from any number of threads at once.  The client
keeps no mutable state of its own beyond what its parts guard: the Transport's sequence counter
and connection pool (their own locks), the Session's sid (``SessionManager._lock`` during a
re-login).  Concurrent calls are independent batches with no ordering guarantee between them;
callers that need an order (create, then move) must wait for the first call to return.
``upload`` and ``download`` each run their own pool of up to ``connections`` worker threads.
``close`` must not race with calls still in flight.
"""
from __future__ import annotations

import logging
import os
import secrets
import string
import threading
from dataclasses import dataclass
from typing import Any, Callable

from .. import crypto
from ..crypto import FileKey
from ..errors import LinkError, MegaError, ProtocolError, SessionError
from ..retry import RetryPolicy
from . import links
from .download import DownloadInfo, Downloader, parse_g_reply
from .session import Session, SessionManager, open_session, peek_api
from .transport import Transport
from .upload import Uploaded, Uploader

log = logging.getLogger(__name__)

__all__ = ["MegaClient", "Uploaded", "PutItem", "FetchResult", "DownloadInfo"]

_REQUEST_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass
class PutItem:
    """One finished upload to turn into a node under ``parent`` with plaintext ``attrs``."""

    parent: str
    uploaded: Uploaded
    attrs: dict[str, Any]
    replaces: str | None = None


@dataclass
class FetchResult:
    nodes: list[dict[str, Any]]
    sn: str
    public: dict[str, str]      # node handle -> public handle

    def roots(self) -> dict[int, str]:
        """Root handles by type: 2 Cloud Drive, 3 Inbox/Vault, 4 Rubbish bin."""
        return {n["t"]: n["h"] for n in self.nodes if n.get("t") in (2, 3, 4)}


def _is_handle(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64


class MegaClient:
    def __init__(self, transport: Transport, session: Session | None, *,
                 connections: int = 4) -> None:
        self.transport = transport
        self.session = session  # None for a public (anonymous) client: public downloads only
        self.api = transport.api
        self.connections = connections
        self.request_id = "".join(secrets.choice(_REQUEST_ID_ALPHABET) for _ in range(10))
        self._manager = SessionManager(session, transport) if session is not None else None
        self.uploader = Uploader(transport, connections=connections)
        self.downloader = Downloader(transport.pool, retry=transport.retry,
                                     connections=connections)

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def open(cls, api: str | None = None, state_dir: str | None = None,
             session_file: str | None = None, connections: int = 4, *,
             new_session: bool = False, retry: RetryPolicy | None = None) -> "MegaClient":
        """Resume this API's session (or the named file's), creating the account if needed.

        With ``session_file`` and no ``api``/``$MEGAFS_API``, the API URL recorded in that file
        is used.
        """
        if api is None and session_file and not os.environ.get("MEGAFS_API"):
            api = peek_api(session_file)
        transport = Transport(api, retry=retry)
        try:
            session = open_session(transport, state_dir=state_dir, session_file=session_file,
                                   new=new_session)
        except BaseException:
            transport.close()
            raise
        return cls(transport, session, connections=connections)

    @classmethod
    def public(cls, api: str | None = None, connections: int = 4,
               retry: RetryPolicy | None = None) -> "MegaClient":
        """A client without an account: enough for ``open_download(public=...)``/``download``."""
        return cls(Transport(api, retry=retry), None, connections=connections)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> "MegaClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _need_session(self) -> Session:
        if self.session is None:
            raise SessionError("this operation needs a session (public client)")
        return self.session

    # --- listing -----------------------------------------------------------------------------
    def fetch(self) -> FetchResult:
        """The whole tree (``f``): raw nodes, the sn to poll from, and public handles."""
        self._need_session()
        reply = self.transport.call({"a": "f", "c": 1, "r": 1})
        if not isinstance(reply, dict):
            raise ProtocolError("f: expected an object, got %s" % type(reply).__name__)
        nodes, sn = reply.get("f"), reply.get("sn")
        if not isinstance(nodes, list) or not all(isinstance(n, dict) for n in nodes):
            raise ProtocolError("f: node list missing or malformed")
        if not isinstance(sn, str) or not sn:
            raise ProtocolError("f: missing sn")
        public: dict[str, str] = {}
        for entry in reply.get("ph") or []:
            if isinstance(entry, dict) and _is_handle(entry.get("h")) \
                    and _is_handle(entry.get("ph")):
                public[entry["h"]] = entry["ph"]
        return FetchResult(nodes, sn, public)

    def poll(self, sn: str, timeout: float) -> tuple[list[dict[str, Any]], str]:
        """Action packets after ``sn`` (sc long-poll), at most ``timeout`` seconds of waiting."""
        self._need_session()
        return self.transport.poll(sn, timeout)

    # --- keys ---------------------------------------------------------------------------------
    def node_key(self, raw: dict[str, Any]) -> bytes:
        """The node's key (16 bytes folder, 32 bytes file), unwrapped with our master key."""
        session = self._need_session()
        value = raw.get("k") if isinstance(raw, dict) else None
        if not isinstance(value, str) or not value:
            raise ProtocolError("node has no key")
        wrapped = None
        for part in value.split("/"):
            owner, sep, blob = part.partition(":")
            if not sep:
                owner, blob = session.user_handle, owner
            if owner == session.user_handle:
                wrapped = blob
                break
        if wrapped is None:
            raise MegaError(-14, "node key is not for this account")
        try:
            data = crypto.b64decode(wrapped)
        except ValueError:
            raise ProtocolError("node key is not base64url") from None
        if len(data) not in (16, 32):
            raise ProtocolError("node key has %d bytes, not 16 or 32" % len(data))
        return crypto.unwrap_key(data, session.master_key)

    def file_key(self, raw: dict[str, Any]) -> FileKey:
        key = self.node_key(raw)
        if len(key) != 32:
            raise ProtocolError("not a file key")
        return FileKey.unpack(key)

    # --- uploads and nodes ----------------------------------------------------------------------
    def upload(self, path: str, *, progress: Callable[[int], None] | None = None,
               cancel: threading.Event | None = None) -> Uploaded:
        """Encrypt and upload a file's contents; no node is created (see ``put_files``)."""
        self._need_session()
        return self.uploader.upload(path, progress=progress, cancel=cancel)

    def _new_node(self, uploaded: Uploaded, attrs: dict[str, Any]) -> dict[str, Any]:
        session = self._need_session()
        packed = uploaded.key.pack()
        return {"h": uploaded.token, "t": 0,
                "a": crypto.b64encode(crypto.encrypt_attr(attrs, packed)),
                "k": crypto.b64encode(crypto.wrap_key(packed, session.master_key))}

    def put_files(self, items: list[PutItem]) -> list[dict[str, Any] | MegaError]:
        """Create file nodes for finished uploads: one batch, one ``p`` per parent."""
        if not items:
            return []
        by_parent: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            by_parent.setdefault(item.parent, []).append(index)
        commands = [{"a": "p", "t": parent, "i": self.request_id,
                     "n": [self._new_node(items[i].uploaded, items[i].attrs) for i in indexes]}
                    for parent, indexes in by_parent.items()]
        results: list[dict[str, Any] | MegaError] = [MegaError(-1)] * len(items)
        replies = self.transport.batch(commands)
        for (parent, indexes), reply in zip(by_parent.items(), replies):
            nodes = self._nodes_of(reply, "p", len(indexes))
            for index, node in zip(indexes, nodes):
                results[index] = node
        return results

    @staticmethod
    def _nodes_of(reply: Any, name: str, count: int) -> list[Any]:
        """The ``count`` new nodes of a ``p`` reply, or the error repeated for each slot."""
        if isinstance(reply, MegaError):
            return [reply] * count
        nodes = reply.get("f") if isinstance(reply, dict) else None
        if not isinstance(nodes, list) or len(nodes) != count \
                or not all(isinstance(n, dict) and _is_handle(n.get("h")) for n in nodes):
            error = ProtocolError("%s: expected %d new node(s) in the reply" % (name, count))
            return [error] * count
        return nodes

    def mkdir(self, parent: str, name: str, attrs: dict[str, Any] | None = None
              ) -> dict[str, Any]:
        session = self._need_session()
        key = crypto.random_key(16)
        merged = dict(attrs or {})
        merged["n"] = name
        node = {"h": "xxxxxxxx", "t": 1,
                "a": crypto.b64encode(crypto.encrypt_attr(merged, key)),
                "k": crypto.b64encode(crypto.wrap_key(key, session.master_key))}
        reply = self.transport.call({"a": "p", "t": parent, "i": self.request_id, "n": [node]})
        result = self._nodes_of(reply, "p", 1)[0]
        if isinstance(result, Exception):
            raise result
        return result

    def set_attrs(self, handle: str, node_key: bytes, attrs: dict[str, Any]) -> None:
        """Replace all attributes of a node (``a``); ``attrs`` must include ``n``."""
        at = crypto.b64encode(crypto.encrypt_attr(attrs, node_key))
        self._simple({"a": "a", "n": handle, "at": at, "i": self.request_id})

    def move(self, handle: str, new_parent: str) -> None:
        self._simple({"a": "m", "n": handle, "t": new_parent, "i": self.request_id})

    def delete(self, handle: str) -> None:
        self._simple({"a": "d", "n": handle, "i": self.request_id})

    def _simple(self, command: dict[str, Any]) -> None:
        self._need_session()
        self.transport.call(command)  # 0, or a v3 seqtag; errors raise

    def quota(self) -> tuple[int, int]:
        """(used, total) storage bytes from ``uq``."""
        self._need_session()
        reply = self.transport.call({"a": "uq", "strg": 1, "xfer": 1})
        if not isinstance(reply, dict):
            raise ProtocolError("uq: expected an object")
        used, total = reply.get("cstrg"), reply.get("mstrg")
        if not isinstance(used, int) or not isinstance(total, int):
            raise ProtocolError("uq: cstrg/mstrg missing")
        return used, total

    # --- links ----------------------------------------------------------------------------------
    def export(self, handles: list[str]) -> list[str | MegaError]:
        """Public handles for nodes (one batch of ``l``); the same handle on repeated calls."""
        if not handles:
            return []
        self._need_session()
        replies = self.transport.batch([{"a": "l", "n": h, "i": self.request_id}
                                        for h in handles])
        out: list[str | MegaError] = []
        for reply in replies:
            if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[1], str):
                reply = reply[1]  # v3 form [st, ph]
            if isinstance(reply, MegaError):
                out.append(reply)
            elif _is_handle(reply):
                out.append(reply)
            else:
                out.append(ProtocolError("l: expected a public handle"))  # type: ignore[arg-type]
        return out

    def link_for(self, node: dict[str, Any], ph: str) -> str:
        """``https://mega.nz/file/PH#KEY`` for a file node and its public handle."""
        if node.get("t") != 0:
            raise LinkError("only files get links; folder links are not supported")
        key = self.node_key(node)
        if len(key) != 32:
            raise ProtocolError("file node has a %d-byte key" % len(key))
        return links.format_link(ph, key)

    # --- downloads ------------------------------------------------------------------------------
    def open_download(self, handle: str | None = None, public: str | None = None,
                      key: bytes | None = None) -> DownloadInfo:
        """``g`` for a node handle or a public handle; attrs decrypted when ``key`` is given."""
        if (handle is None) == (public is None):
            raise ValueError("give exactly one of handle and public")
        command: dict[str, Any] = {"a": "g", "g": 1}
        if handle is not None:
            self._need_session()
            command["n"] = handle
        else:
            command["p"] = public
        if self.api.startswith("https://"):
            command["ssl"] = 2
        reply = self.transport.batch([command], anonymous=self.session is None)[0]
        if isinstance(reply, MegaError):
            raise reply
        return parse_g_reply(reply, key)

    def read_range(self, url: str, key: FileKey, offset: int, length: int) -> bytes:
        """Decrypted bytes [offset, offset+length) of a file; the caller clamps to its size.

        Raises MegaError(-8) when the URL expired: call ``open_download`` again.
        """
        return self.downloader.read_range(url, key, offset, length)

    def download(self, link_or_public: str | links.FileLink, dest: str,
                 progress: Callable[[int], None] | None = None,
                 cancel: threading.Event | None = None,
                 info: DownloadInfo | None = None) -> str:
        """Download a public file link to ``dest``, verifying its MAC; return the path written.

        On any error no file is left at ``dest`` (an existing one is left untouched).  ``info``
        re-uses a ``download_info`` answer instead of asking ``g`` again.
        """
        link = link_or_public if isinstance(link_or_public, links.FileLink) \
            else links.parse_link(link_or_public)
        key = FileKey.unpack(link.key)
        if info is None:
            info = self.open_download(public=link.handle, key=link.key)
        return self.downloader.download_file(
            info, key, dest, progress=progress, cancel=cancel,
            refresh=lambda: self.open_download(public=link.handle, key=link.key))

    def download_info(self, link_or_public: str | links.FileLink) -> DownloadInfo:
        """``g`` for a link, with its attributes decrypted (name, mtime)."""
        link = link_or_public if isinstance(link_or_public, links.FileLink) \
            else links.parse_link(link_or_public)
        return self.open_download(public=link.handle, key=link.key)
