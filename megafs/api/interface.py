"""What the mount needs from a MEGA client, as a ``typing.Protocol``: ``MegaApi``.

The filesystem core, the node tree, the change poller and the write-back queue are typed
against ``MegaApi`` instead of ``MegaClient`` (or ``Any``), so a type checker follows the data
path, and tests can hand them a stand-in with the same shape.  ``MegaClient`` satisfies it
(``tests/unit/test_api_interface.py`` checks that, statically and at run time, and that the
core names no other client type); ``MegaClientFactory`` describes its two constructors.

Conventions for every method below:

* handles are MEGA's base64url strings: node handles 8 characters, public handles 8, user
  handles 11; a *raw node* is the JSON object of ``f`` and ``t`` packets (``h``, ``p``, ``u``,
  ``t`` type 0 file / 1 folder / 2-4 roots, ``a`` encrypted attributes, ``k`` key, ``s`` size
  in bytes, ``ts`` creation time in Unix seconds);
* *attrs* are plaintext attribute objects, at least ``{"n": name}``; ``t`` is an mtime in Unix
  seconds, ``c`` the fingerprint (``api.fingerprint``);
* sizes and offsets are bytes, times seconds;
* every error is a ``megafs.errors.MegafsError``: ``MegaError`` (``.code``, an ``ApiCode``)
  for what the API answered, ``TransportError`` when the server stayed unreachable for the
  whole retry time (``$MEGAFS_RETRY_SECONDS``), ``ProtocolError`` for a reply that does not fit
  the protocol, ``SessionError`` for a client without an account, ``IntegrityError`` for data
  that fails its MAC.  Transient errors were already retried by the client: a caller that gets
  one should not loop on it again, except where a method says so (``read_range`` and ``-8``).
  ``megafs.errors.classify`` tells what an ``ApiCode`` means for a caller.

Thread-safety: every method may be called from any number of threads at once.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..crypto import FileKey
    from ..retry import RetryPolicy
    from .commands import DownloadInfo, FetchResult, PutItem
    from .links import FileLink
    from .sharekeys import CrFor
    from .session import Reauth, Session
    from .upload import PremadeMacs, Uploaded
    from .xferquota import QuotaGate


@runtime_checkable
class MegaApi(Protocol):
    """The client operations the mount uses (``MegaClient`` implements them)."""

    api: str
    """The normalised API base URL (ends with ``/``)."""
    session: "Session | None"
    """The account (``user_handle``, ``master_key``...), None for a public client."""
    request_id: str
    """This client's 10-character ``i``: action packets carrying it are our own changes."""
    transfer_quota: "QuotaGate"
    """When downloads may ask again after the transfer quota refused one: ``.left()``
    seconds, ``.close()`` ends every wait (``api.xferquota``)."""

    def close(self) -> None:
        """Close the connection pools; calls in flight must have returned."""

    def fetch(self) -> "FetchResult":
        """The whole tree (``f``): ``.nodes`` (raw nodes, parents first), ``.sn`` (where to
        poll from) and ``.public`` (node handle -> public handle)."""

    def poll(self, sn: str, timeout: float) -> tuple[list[dict[str, Any]], str]:
        """Action packets after ``sn`` and the new sn, waiting at most ``timeout`` seconds;
        ``([], sn)`` when nothing happened.  MegaError ``-6`` (ETOOMANY): fell behind, reload
        with ``fetch``.  Failing wait URLs are backed off inside (no request storm)."""

    def upload(self, path: str, *, progress: Callable[[int], None] | None = None,
               cancel: threading.Event | None = None,
               premac: "PremadeMacs | None" = None,
               url: tuple[str, int] | None = None) -> "Uploaded":
        """Encrypt and upload a file's contents (no node yet): ``Uploaded(token, key, size)``.

        ``premac``: (file key, {chunk offset: chunk MAC}) made while the file was written
        (``writeback.premac``); the first attempt uses that key and only encrypts those chunks.

        ``progress(bytes_stored)`` is called from worker threads.  ``UploadCancelled`` when
        ``cancel`` is set; ``UploadFailed`` after repeated restarts or an unreadable file;
        MegaError ``-17`` (EOVERQUOTA) when the account is full.  ``url``: (upload URL, the
        size it was asked for) from ``upload_urls``, used by the first attempt if the size
        still matches.
        """

    def upload_urls(self, sizes: list[int], cancel: threading.Event | None = None
                    ) -> list[str | Exception]:
        """Upload URLs for files of ``sizes`` bytes, one ``u`` each in one batch; per size
        the URL or that command's error.  Raises what fails the whole batch."""

    def round_trip(self) -> float | None:
        """Seconds the shortest of the last API requests took (None before the first)."""

    def preconnect_uploads(self, count: int) -> int:
        """Open up to ``count`` connections in the background to the host of the last
        upload URL, so that uploads about to start skip the handshakes; returns how many it
        started (0 before the first ``u``).  Never blocks, never raises."""

    def put_files(self, items: "list[PutItem]", cr_for: "CrFor | None" = None
                  ) -> list[dict[str, Any] | Exception]:
        """Create file nodes from finished uploads, one batch; per item the new raw node or
        its error (``-9`` parent gone, ``-17`` over quota, ``-14`` a shared folder's keys
        missing, ``ProtocolError``).  ``cr_for(parent, node keys)`` gives each ``p`` its
        ``cr`` (``api.sharekeys``): the keys the folder's sharees and links read them with."""

    def mkdir(self, parent: str, name: str,
              attrs: dict[str, Any] | None = None,
              cr_for: "CrFor | None" = None) -> dict[str, Any]:
        """Create a folder under ``parent``; returns its raw node.  ``attrs`` may add ``t``;
        ``cr_for`` as for ``put_files``."""

    def set_attrs(self, handle: str, node_key: bytes, attrs: dict[str, Any]) -> None:
        """Replace all attributes of a node (rename, mtime); ``attrs`` must include ``n``;
        ``node_key`` is its 16- or 32-byte key."""

    def move(self, handle: str, new_parent: str, cr: list[Any] | None = None) -> None:
        """Move a node under ``new_parent``; ``-10`` (ECIRCULAR) into its own subtree.
        ``cr``: the moved subtree's keys for the shared folders ``new_parent`` is in
        (``api.sharekeys.cr_for_move``); ``-14`` when one is needed and missing."""

    def delete(self, handle: str) -> None:
        """Delete a node and its whole subtree for good; ``-9`` if it is gone."""

    def quota(self) -> tuple[int, int]:
        """(used, total) storage in bytes."""

    def export(self, handles: list[str]) -> list[str | Exception]:
        """Public handles for nodes, one batch; the same handle on every call for a node;
        per node the handle or its error (``-9``, ``-11`` EACCESS)."""

    def unexport(self, handle: str) -> None:
        """Remove a node's public link; its old link stops working.  ``-9`` if the node is
        gone or has no link."""

    def share_folder(self, handle: str, share_key: bytes, cr: list[Any] | None = None
                     ) -> bytes | None:
        """Share folder ``handle`` with ``EXP``, the public pseudo-user of folder links
        (``s2`` with ``ok``/``ha`` and ``cr``, the keys of the nodes inside under the 16-byte
        ``share_key``).  None when done, else the share key the folder already has (nothing
        changed).  ``-14`` when ``cr`` lacks a node's key."""

    def unshare_folder(self, handle: str) -> None:
        """Remove folder ``handle``'s link and its ``EXP`` share; already gone is fine."""

    def open_download(self, handle: str | None = None, public: str | None = None,
                      key: bytes | None = None) -> "DownloadInfo":
        """``g`` for a node or a public handle (exactly one): ``.url``, ``.size`` and, when
        ``key`` is given, the decrypted ``.attrs``.  ``-9`` gone, ``-16`` taken down; past the
        transfer quota (``-17``) it waits at ``transfer_quota`` and asks again (or raises
        ``TransferQuotaExceeded`` when that gate does not wait)."""

    def open_downloads(self, handles: list[str]) -> "list[DownloadInfo | Exception]":
        """``g`` for many nodes in one request: a ``DownloadInfo`` or the error per handle,
        in order; never waits for the transfer quota (``-17`` is that slot's
        ``TransferQuotaExceeded``).  The files ahead of a reader are asked with it
        (``vfs.ahead.FilesAhead``)."""

    def read_range(self, url: str, key: "FileKey", offset: int, length: int) -> bytes:
        """Decrypted bytes [offset, offset+length) from a download URL; the caller keeps the
        range within the file.  MegaError ``-8`` (EEXPIRED) when the URL is dead: call
        ``open_download`` again and retry once; every other error is final.  HTTP 509 (the
        transfer quota) waits at ``transfer_quota`` and asks again."""

    def download(self, link_or_public: "str | FileLink", dest: str,
                 progress: Callable[[int], None] | None = None,
                 cancel: threading.Event | None = None,
                 info: "DownloadInfo | None" = None) -> str:
        """Download a public file link into ``dest`` and check its MAC; returns the path.  On
        any error nothing is left at ``dest``.  ``LinkError`` for a link that is not a file
        link."""

    def download_info(self, link_or_public: "str | FileLink") -> "DownloadInfo":
        """``g`` for a public link, attributes decrypted with the link's key."""


class NodeReader(Protocol):
    """What the read cache (``vfs.readcache``) needs: the two download calls of ``MegaApi``,
    with the same meaning.  ``MegaApi`` has them; a folder-link mount's reader
    (``vfs.linkfs.LinkReader``) answers them in the link's session.  A ``transfer_quota``
    gate (see ``MegaApi``) is closed with the cache when the reader has one."""

    def open_download(self, handle: str | None = None) -> "DownloadInfo":
        """``g`` for node ``handle``: ``.url`` and ``.size`` (see ``MegaApi``)."""

    def read_range(self, url: str, key: "FileKey", offset: int, length: int) -> bytes:
        """Decrypted bytes [offset, offset+length) from a download URL (see ``MegaApi``)."""


class MegaClientFactory(Protocol):
    """How a ``MegaApi`` is made (``MegaClient.open`` / ``MegaClient.public``)."""

    def open(self, api: str | None = None, state_dir: str | None = None,
             session_file: str | None = None, connections: int = 4, *,
             new_session: bool = False, retry: "RetryPolicy | None" = None,
             https_transfers: bool | None = None, account: str | None = None,
             reauth: "Reauth | None" = None) -> MegaApi:
        """Resume the API's session from the state dir (creating the account if needed);
        ``SessionError`` for a session file that is corrupt, insecure or for another API.
        ``https_transfers`` asks for https upload/download URLs (default: when the API URL is
        https); ``connections`` parallel connections per transfer.  ``account`` (an email)
        resumes that full account's session (``megafs login``) and creates nothing: without
        one it is a ``SessionError``; ``reauth(old session) -> new session`` renews it when the
        server has ended it (``-15``), else that is a ``SessionError`` too."""

    def public(self, api: str | None = None, connections: int = 4,
               retry: "RetryPolicy | None" = None, *,
               https_transfers: bool | None = None) -> MegaApi:
        """A client without an account: public downloads only."""
