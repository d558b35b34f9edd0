"""``MegaClient``: the one facade the commands and the filesystem use to talk to MEGA.

It binds a Transport (command batches, sc polling) to a Session (ephemeral account, the only
holder of secrets) and strings together the command builders and reply parsers of
``commands``, the ``Uploader`` and the ``Downloader``.  It adds no protocol knowledge of its
own: what a command sends and what its reply must be live in ``commands``; retries live in the
transport and the transfer engines.  Every error is a ``MegafsError`` (``MegaError`` for API
codes).  ``api.interface.MegaApi`` describes, with shapes, units and errors, the part of it the
mount uses.

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
from typing import Any, Callable

from .. import crypto
from ..crypto import FileKey
from ..errors import ApiCode, LinkError, MegaError, MegafsError, ProtocolError, SessionError
from ..retry import RetryPolicy
from . import commands, links, sharekeys
from .commands import DownloadInfo, FetchResult, PutItem
from .download import Downloader
from .session import (Reauth, Session, SessionManager, open_account_session, open_session,
                      peek_api)
from .transport import Transport
from .upload import PremadeMacs, Uploaded, Uploader
from .xferquota import QuotaGate, TransferQuotaExceeded

log = logging.getLogger(__name__)

__all__ = ["MegaClient", "Uploaded", "PutItem", "FetchResult", "DownloadInfo"]

_REQUEST_ID_ALPHABET = string.ascii_letters + string.digits


class MegaClient:
    def __init__(self, transport: Transport, session: Session | None, *,
                 connections: int = 4, reauth: Reauth | None = None) -> None:
        self.transport = transport
        self.session = session  # None for a public (anonymous) client: public downloads only
        self.api = transport.api
        self.connections = connections
        self.request_id = "".join(secrets.choice(_REQUEST_ID_ALPHABET) for _ in range(10))
        self._manager = SessionManager(session, transport, reauth) if session is not None \
            else None
        self.uploader = Uploader(transport, connections=connections)
        # when downloads may ask again after MEGA's transfer quota refused one (xferquota)
        self.transfer_quota = QuotaGate()
        self.downloader = Downloader(transport.pool, retry=transport.retry,
                                     connections=connections, quota=self.transfer_quota)

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def open(cls, api: str | None = None, state_dir: str | None = None,
             session_file: str | None = None, connections: int = 4, *,
             new_session: bool = False, retry: RetryPolicy | None = None,
             https_transfers: bool | None = None, account: str | None = None,
             reauth: Reauth | None = None) -> "MegaClient":
        """Resume this API's session (or the named file's), creating the account if needed.

        With ``session_file`` and no ``api``/``$MEGAFS_API``, the API URL recorded in that file
        is used.  ``https_transfers``: see ``Transport`` (default: when the API is https).
        ``account`` (an email) resumes that logged-in account instead of the anonymous one and
        never creates anything: no session is a SessionError; ``reauth`` renews it when the
        server ended it (else that is a SessionError too).
        """
        if api is None and session_file and not os.environ.get("MEGAFS_API"):
            api = peek_api(session_file)
        transport = Transport(api, retry=retry, https_transfers=https_transfers)
        try:
            if account is not None:
                session = open_account_session(transport, account, state_dir=state_dir,
                                               session_file=session_file)
            else:
                session = open_session(transport, state_dir=state_dir,
                                       session_file=session_file, new=new_session)
        except BaseException:
            transport.close()
            raise
        return cls(transport, session, connections=connections, reauth=reauth)

    @classmethod
    def public(cls, api: str | None = None, connections: int = 4,
               retry: RetryPolicy | None = None, *,
               https_transfers: bool | None = None) -> "MegaClient":
        """A client without an account: enough for ``open_download(public=...)``/``download``."""
        return cls(Transport(api, retry=retry, https_transfers=https_transfers), None,
                   connections=connections)

    def close(self) -> None:
        self.transfer_quota.close()
        self.transport.close()

    def __enter__(self) -> "MegaClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _need_session(self) -> Session:
        if self.session is None:
            raise SessionError("this operation needs a session (public client)")
        return self.session

    def _call(self, command: dict[str, Any]) -> Any:
        self._need_session()
        return self.transport.call(command)

    # --- listing -----------------------------------------------------------------------------
    def fetch(self) -> FetchResult:
        """The whole tree (``f``): raw nodes, the sn to poll from, and public handles."""
        return commands.parse_fetch(self._call(commands.fetch()))

    def poll(self, sn: str, timeout: float) -> tuple[list[dict[str, Any]], str]:
        """Action packets after ``sn`` (sc long-poll), at most ``timeout`` seconds of waiting."""
        self._need_session()
        return self.transport.poll(sn, timeout)

    # --- keys ---------------------------------------------------------------------------------
    def node_key(self, raw: dict[str, Any]) -> bytes:
        """The node's key (16 bytes folder, 32 bytes file), unwrapped with our master key."""
        session = self._need_session()
        return commands.unwrap_node_key(raw, session.user_handle, session.master_key)

    def file_key(self, raw: dict[str, Any]) -> FileKey:
        key = self.node_key(raw)
        if len(key) != 32:
            raise ProtocolError("not a file key")
        return FileKey.unpack(key)

    # --- uploads and nodes ----------------------------------------------------------------------
    def upload(self, path: str, *, progress: Callable[[int], None] | None = None,
               cancel: threading.Event | None = None, premac: PremadeMacs | None = None,
               url: tuple[str, int] | None = None) -> Uploaded:
        """Encrypt and upload a file's contents; no node is created (see ``put_files``).
        ``premac``: (key, chunk MACs) made while the file was written; ``url``: (upload URL,
        size) from ``upload_urls`` (``Uploader.upload``)."""
        self._need_session()
        return self.uploader.upload(path, progress=progress, cancel=cancel, premac=premac,
                                    url=url)

    def upload_urls(self, sizes: list[int], cancel: threading.Event | None = None
                    ) -> list[str | Exception]:
        """Upload URLs for many files in one batch of ``u`` (``Uploader.upload_urls``)."""
        self._need_session()
        return self.uploader.upload_urls(sizes, cancel) if sizes else []

    def round_trip(self) -> float | None:
        """The API's round trip as the last requests took (``Transport.round_trip``)."""
        return self.transport.round_trip()

    def preconnect_uploads(self, count: int) -> int:
        """Open up to ``count`` upload connections ahead (``Uploader.preconnect``); returns
        how many it started, 0 before this client's first ``u``."""
        return self.uploader.preconnect(count)

    def put_files(self, items: list[PutItem], cr_for: sharekeys.CrFor | None = None
                  ) -> list[dict[str, Any] | Exception]:
        """Create file nodes for finished uploads: one batch, one ``p`` per file, so a
        refusal of one command fails only its file (MEGA answers per command; the SDK sends
        one ``p`` of one node per finished upload: meganz/sdk src/file.cpp
        ``File::sendPutnodesOfUpload``, ``vector<NewNode> newnodes(1)``).
        ``cr_for(parent, node keys in order)``: the ``p``'s ``cr`` (``sharekeys.cr_for_put``)
        or None."""
        if not items:
            return []
        session = self._need_session()
        batch = []
        for item in items:
            node = commands.file_node(item.uploaded, item.attrs, session.master_key)
            cr = cr_for(item.parent, [item.uploaded.key.pack()]) if cr_for is not None \
                else None
            batch.append(commands.put_nodes(item.parent, [node], self.request_id, cr))
        results: list[dict[str, Any] | Exception] = [ProtocolError("p: no reply")] * len(items)
        for index, reply in enumerate(self.transport.batch(batch)):
            results[index] = commands.parse_put(reply, 1)[0]
        return results

    def mkdir(self, parent: str, name: str, attrs: dict[str, Any] | None = None,
              cr_for: sharekeys.CrFor | None = None) -> dict[str, Any]:
        """A new folder (``p``); ``cr_for`` as for ``put_files``."""
        session = self._need_session()
        merged = dict(attrs or {})
        merged["n"] = name
        key = crypto.random_key(16)
        node = commands.folder_node(merged, session.master_key, key)
        cr = cr_for(parent, [key]) if cr_for is not None else None
        reply = self._call(commands.put_nodes(parent, [node], self.request_id, cr))
        result = commands.parse_put(reply, 1)[0]
        if isinstance(result, Exception):
            raise result
        return result

    def set_attrs(self, handle: str, node_key: bytes, attrs: dict[str, Any]) -> None:
        """Replace all attributes of a node (``a``); ``attrs`` must include ``n``."""
        reply = self._call(commands.set_attrs(handle, node_key, attrs, self.request_id))
        commands.check_done(reply, "a")

    def move(self, handle: str, new_parent: str, cr: list[Any] | None = None) -> None:
        """``m``; ``cr``: the moved subtree's keys under the share keys of the shared folders
        ``new_parent`` is in (``sharekeys.cr_for_move``), None outside any."""
        commands.check_done(self._call(commands.move(handle, new_parent, self.request_id, cr)),
                            "m")

    def delete(self, handle: str) -> None:
        commands.check_done(self._call(commands.delete(handle, self.request_id)), "d")

    def quota(self) -> tuple[int, int]:
        """(used, total) storage bytes from ``uq``."""
        return commands.parse_quota(self._call(commands.quota()))

    # --- links ----------------------------------------------------------------------------------
    def export(self, handles: list[str]) -> list[str | Exception]:
        """Public handles for nodes (one batch of ``l``); the same handle on repeated calls."""
        if not handles:
            return []
        self._need_session()
        replies = self.transport.batch([commands.export(h, self.request_id) for h in handles])
        return [commands.parse_export(reply) for reply in replies]

    def unexport(self, handle: str) -> None:
        """Remove the node's public link (``l`` with ``d:1``); its old link stops working."""
        commands.check_done(self._call(commands.unexport(handle, self.request_id)), "l")

    def share_folder(self, handle: str, share_key: bytes, cr: list[Any] | None = None
                     ) -> bytes | None:
        """Share folder ``handle`` with ``EXP`` (what a folder link needs) under ``share_key``
        (``s2``, ``sharekeys.share_command``).  None when done; the other share key when the
        folder is already shared under one (nothing changed: send again with that key)."""
        session = self._need_session()
        reply = self._call(sharekeys.share_command(handle, share_key, session.master_key,
                                                   self.request_id, cr))
        if not isinstance(reply, dict):
            raise ProtocolError("s2: expected an object, got %s" % type(reply).__name__)
        if "ok" in reply:
            other = sharekeys.clash_key(reply, session.master_key)
            if other is None or other == share_key:
                raise ProtocolError("s2: the server's share key is malformed")
            return other
        return None

    def unshare_folder(self, handle: str) -> None:
        """Remove folder ``handle``'s link (``l`` ``d:1``) and then its ``EXP`` share (``s2``
        without ``r``: "need to first remove the link and then the share", meganz/sdk
        ``MegaClient::exportnode``); either already gone (``-9``) is fine."""
        for command in (commands.unexport(handle, self.request_id),
                        sharekeys.unshare_command(handle, self.request_id)):
            try:
                self._call(command)
            except MegaError as exc:
                if exc.code != ApiCode.ENOENT:
                    raise

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
        """``g`` for a node handle or a public handle; attrs decrypted when ``key`` is given.
        Past the transfer quota (``-17``) it waits at ``transfer_quota`` and asks again."""
        command = commands.download(handle=handle, public=public,
                                    https=self.transport.https_transfers)
        if handle is not None:
            self._need_session()
        while True:
            self.transfer_quota.wait()
            reply = self.transport.batch([command], anonymous=self.session is None)[0]
            try:
                return commands.parse_g_reply(reply, key)
            except TransferQuotaExceeded as exc:
                self.transfer_quota.refused(exc)          # raises unless it waits

    def open_downloads(self, handles: list[str]) -> list[DownloadInfo | Exception]:
        """``g`` for many nodes in one request (a batch of ``g`` only is lockless:
        ``Transport.batch``): a ``DownloadInfo`` or the error per handle, in order.  Never
        waits for the transfer quota: a ``-17`` is that slot's ``TransferQuotaExceeded``."""
        self._need_session()
        commands_ = [commands.download(handle=h, https=self.transport.https_transfers)
                     for h in handles]
        out: list[DownloadInfo | Exception] = []
        for reply in self.transport.batch(commands_) if commands_ else []:
            try:
                out.append(commands.parse_g_reply(reply))
            except MegafsError as exc:     # MegaError, ProtocolError, the transfer quota
                out.append(exc)
        return out

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
        link = links.as_file_link(link_or_public)
        if info is None:
            info = self.open_download(public=link.handle, key=link.key)
        return self.downloader.download_file(
            info, FileKey.unpack(link.key), dest, progress=progress, cancel=cancel,
            refresh=lambda: self.open_download(public=link.handle, key=link.key))

    def download_info(self, link_or_public: str | links.FileLink) -> DownloadInfo:
        """``g`` for a link, with its attributes decrypted (name, mtime)."""
        link = links.as_file_link(link_or_public)
        return self.open_download(public=link.handle, key=link.key)
