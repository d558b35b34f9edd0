"""Reading a folder link without an account (issue 25): the ``n=`` public-folder session, its
``f`` listing checked and decrypted, and MAC-checked downloads of the files inside.

A folder-link session is the command channel with ``&n=PUBLIC_HANDLE`` in the query and no
``sid`` (meganz/sdk src/megaclient.cpp ``getAuthURI``; meganz/webclient js/utils/api.js
``setFolderSID``).  Its ``f`` answers the exported folder and everything below it; each node's
``k`` has an entry ``ROOT:KEY`` keyed by the folder's node handle and encrypted with the link's
share key (meganz/sdk src/node.cpp ``applykey``: in a folder link ``me`` is the root handle).
``g`` with ``n`` gives a file's download URL; ``sc`` with ``n=`` the owner's changes inside
the folder.  A link that was revoked answers ``-9``.

Everything the server sends is hostile until checked (issue 20): the listing may hold at most
``max_nodes`` nodes, every handle must be one, every size storable, every node must hang off
the one root at a depth of at most ``MAX_DEPTH`` (a cycle or a stray node is a
``ProtocolError``), every key entry must have its type's length.  A node whose key entry is
missing or does not decrypt its attributes is kept with ``ok=False`` and no name (what MEGA's
apps show as NO_KEY, rclone/rclone#4108); a root that does not decrypt means a wrong link key
(``IntegrityError``).  A name that is no file name (empty, ``.``, ``..``, with ``/`` or NUL)
counts as undecryptable.  Downloads go through ``Downloader.download_file`` (meta-MAC check, no
unverified bytes at the destination).  Never logs a key, a link or a download URL.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .. import chunks, crypto
from ..crypto import FileKey
from ..errors import IntegrityError, LinkError, ProtocolError
from ..retry import RetryPolicy
from . import commands
from .client import MegaClient
from .commands import DownloadInfo, is_handle
from .folderlink import FolderLink, parse_folder_link
from .transport import Transport
from .xferquota import TransferQuotaExceeded

log = logging.getLogger(__name__)

MAX_NODES = 2_000_000       # a listing of more is refused (MAX_LISTING_REPLY bounds bytes too)
MAX_DEPTH = 1024            # folders below the root; Linux paths end at 4096 bytes anyway
FILE, FOLDER = 0, 1


class FolderTransport(Transport):
    """The command channel of one folder-link session: ``/cs?id=..&n=HANDLE``, no sid."""

    def __init__(self, api: str | None, folder: str, **kwargs: Any) -> None:
        if not is_handle(folder):
            raise LinkError("a folder link's handle is 8 base64url characters")
        super().__init__(api, **kwargs)
        self.folder = folder

    def _cs_url(self, seq: int, sid: str | None) -> str:
        return super()._cs_url(seq, None) + "&n=" + self.folder

    def _sc_url(self, sn: str, sid: str | None) -> str:
        return super()._sc_url(sn, None) + "&n=" + self.folder


@dataclass(slots=True)
class Entry:
    """One node of a folder link."""

    handle: str
    parent: str
    type: int                  # 0 file, 1 folder
    name: str | None           # None: no key for it, or a key that does not decrypt it
    size: int = 0
    ts: int = 0
    key: bytes | None = None   # 32 bytes (file) or 16 (folder), decrypted
    attrs: dict[str, Any] = field(default_factory=dict)
    ok: bool = True


@dataclass
class Listing:
    """A checked folder-link listing: the root folder, every entry, children by parent."""

    root: str
    entries: dict[str, Entry]
    children: dict[str, list[str]]
    sn: str

    def walk(self, top: str | None = None) -> Iterator[tuple[str, Entry]]:
        """(path relative to ``top``, entry) for every readable entry below ``top`` (default
        the root), parents first; entries without a name and what is below them are left
        out."""
        stack = [(self.root if top is None else top, "")]
        while stack:
            handle, path = stack.pop()
            for kid in reversed(self.children.get(handle, [])):
                entry = self.entries[kid]
                if entry.name is None:
                    continue
                sub = path + "/" + entry.name if path else entry.name
                yield sub, entry
                if entry.type == FOLDER:
                    stack.append((kid, sub))


def _bad_name(name: Any) -> bool:
    return not isinstance(name, str) or name in ("", ".", "..") or "/" in name \
        or "\0" in name


def _node_key(k: Any, root: str, share_key: bytes, ntype: int, handle: str) -> bytes | None:
    """The node key from ``k``'s entry for ``root`` (None without one); ProtocolError for an
    entry of the wrong length."""
    if not isinstance(k, str):
        return None
    for part in k.split("/"):
        owner, sep, blob = part.partition(":")
        if sep and owner != root:
            continue
        try:
            wrapped = crypto.b64decode(blob if sep else owner)
        except ValueError:
            raise ProtocolError("node %s has a key that is not base64url" % handle) from None
        want = 32 if ntype == FILE else 16
        if len(wrapped) != want:
            raise ProtocolError("node %s has a %d-byte key, not %d" % (handle, len(wrapped), want))
        return crypto.unwrap_key(wrapped, share_key)
    return None


def parse_listing(reply: Any, share_key: bytes, max_nodes: int = MAX_NODES) -> Listing:
    """Check and decrypt the ``f`` reply of a folder-link session (see the module docstring).

    Raises ProtocolError for a malformed or hostile listing, IntegrityError for a share key
    that does not decrypt the root folder."""
    raw = commands.parse_fetch(reply)
    if len(raw.nodes) > max_nodes:
        raise ProtocolError("the folder link's listing has %d nodes, more than %d: refused"
                            % (len(raw.nodes), max_nodes))
    entries: dict[str, Entry] = {}
    for node in raw.nodes:
        h, p, t = node.get("h"), node.get("p"), node.get("t")
        if not isinstance(h, str) or not is_handle(h) or h in entries:
            raise ProtocolError("the folder link's listing has a missing, bad or repeated "
                                "node handle")
        if t not in (FILE, FOLDER) or isinstance(t, bool):
            raise ProtocolError("node %s has type %r, not a file or folder" % (h, t))
        size = node.get("s", 0) if t == FILE else 0
        if not chunks.storable(size) or isinstance(size, bool):
            raise ProtocolError("node %s claims a size MEGA cannot store" % h)
        ts = node.get("ts")
        entries[h] = Entry(h, p if isinstance(p, str) else "", t, None, size=size,
                           ts=ts if isinstance(ts, int) and not isinstance(ts, bool) else 0)
    roots = [e.handle for e in entries.values() if e.parent not in entries]
    if len(roots) != 1 or entries[roots[0]].type != FOLDER:
        raise ProtocolError("the folder link's listing has %d top nodes, not one folder"
                            % len(roots))
    root = roots[0]
    children: dict[str, list[str]] = {}
    for e in entries.values():
        if e.handle != root:
            if entries[e.parent].type != FOLDER:
                raise ProtocolError("node %s is inside a file" % e.handle)
            children.setdefault(e.parent, []).append(e.handle)
    reached, frontier, depth = 1, [root], 0
    while frontier:
        depth += 1
        frontier = [kid for h in frontier for kid in children.get(h, [])]
        reached += len(frontier)
        if frontier and depth > MAX_DEPTH:
            raise ProtocolError("the folder link is nested deeper than %d folders" % MAX_DEPTH)
    if reached != len(entries):
        raise ProtocolError("%d nodes of the folder link form a cycle (a folder inside itself)"
                            % (len(entries) - reached))
    for node in raw.nodes:
        _decrypt(entries[node["h"]], node, root, share_key)
    if not entries[root].ok:
        raise IntegrityError("the link's key does not decrypt the folder (wrong or damaged "
                             "link key)")
    return Listing(root, entries, children, raw.sn)


def _decrypt(entry: Entry, node: dict[str, Any], root: str, share_key: bytes) -> None:
    key = _node_key(node.get("k"), root, share_key, entry.type, entry.handle)
    try:
        if key is None:
            raise ValueError("no key for the link")
        at = node.get("a")
        attrs = crypto.decrypt_attr(crypto.b64decode(at if isinstance(at, str) else ""), key)
        if _bad_name(attrs.get("n")):
            raise ValueError("no usable name")
    except (ValueError, crypto.AttributeError_) as exc:
        entry.ok = False
        log.warning("folder link: node %s cannot be read (%s)", entry.handle, exc)
        return
    entry.key, entry.attrs, entry.name = key, attrs, attrs["n"]


def check_packets(packets: Any, max_nodes: int = MAX_NODES) -> list[dict[str, Any]]:
    """The owner's changes from a folder link's ``sc`` as checked as its listing is: ``t``
    (new or moved nodes: a handle, a file or folder type, a parent handle, a storable size, a
    key field that is text), ``u`` (a node handle and its re-encrypted attributes as text)
    and ``d`` (a node handle) packets are kept; any other kind is left out quietly (the feed
    carries nothing else a link reader needs, e.g. ``s2`` or ``ph``), a malformed one is left
    out with one WARNING line naming what is wrong.  The keys and attributes themselves are
    decrypted where they are applied (``tree/packets.py`` with the share key and the root
    handle as the tree's key and user: a key entry is ``ROOT:KEY``, meganz/sdk
    src/node.cpp ``applykey``), which keeps a node it cannot decrypt as undecryptable.  Where
    a packet may put its nodes (an existing folder, no cycle) is the tree's to check
    (``tree/walks.py``)."""
    if not isinstance(packets, list):
        log.warning("folder link: the change feed sent %s, not a list of packets: ignored",
                    type(packets).__name__)
        return []
    out = []
    for packet in packets:
        kind = packet.get("a") if isinstance(packet, dict) else None
        if kind not in ("t", "u", "d"):
            continue
        problem = _packet_problem(packet, kind, max_nodes)
        if problem:
            log.warning("folder link: ignoring a '%s' packet of the change feed: %s", kind,
                        problem)
            continue
        out.append(packet)
    return out


def _packet_problem(packet: dict[str, Any], kind: str, max_nodes: int) -> str:
    if kind in ("u", "d"):
        if not is_handle(packet.get("n")):
            return "no node handle"
        if kind == "u" and not isinstance(packet.get("at"), str):
            return "no attributes"
        return ""
    body = packet.get("t")
    raws = body.get("f") if isinstance(body, dict) else None
    if not isinstance(raws, list) or not raws or len(raws) > max_nodes:
        return "no nodes, or too many"
    for node in raws:
        if not isinstance(node, dict) or not is_handle(node.get("h")) \
                or not is_handle(node.get("p")):
            return "a node without a good handle or parent"
        t, size = node.get("t"), node.get("s", 0)
        if t not in (FILE, FOLDER) or isinstance(t, bool):
            return "node %s has type %r, not a file or folder" % (node["h"], t)
        if t == FILE and (isinstance(size, bool) or not chunks.storable(size)):
            return "node %s claims a size MEGA cannot store" % node["h"]
        if not isinstance(node.get("k"), str) or not isinstance(node.get("a"), str):
            return "node %s has no key or attributes" % node["h"]
    return ""


def item_link(link: FolderLink, handle: str, folder: bool) -> str:
    """The link of one item inside a folder link: ``FOLDERLINK/file/H`` or ``/folder/H``
    (meganz/webclient's form; ``megafs get`` and the web client open it)."""
    return "%s/%s/%s" % (link.url(), "folder" if folder else "file", handle)


class PublicFolder:
    """A folder link opened without an account: ``listing()`` and ``download()``.

    Thread-safe as ``MegaClient`` is (downloads run on their own worker threads)."""

    def __init__(self, link: FolderLink | str, api: str | None = None, *, connections: int = 4,
                 retry: RetryPolicy | None = None, https_transfers: bool | None = None,
                 max_nodes: int = MAX_NODES) -> None:
        self.link = link if isinstance(link, FolderLink) else parse_folder_link(link)
        transport = FolderTransport(api or self.link.api, self.link.handle, retry=retry,
                                    https_transfers=https_transfers)
        self.client = MegaClient(transport, None, connections=connections)
        self.max_nodes = max_nodes

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "PublicFolder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def listing(self) -> Listing:
        """``f`` of the link, checked and decrypted.  MegaError(-9) for a link that is gone."""
        reply = self.client.transport.call(commands.fetch(), anonymous=True)
        return parse_listing(reply, self.link.key, self.max_nodes)

    def poll(self, sn: str, timeout: float, cancel: threading.Event | None = None
             ) -> tuple[list[dict[str, Any]], str]:
        """The owner's changes inside the folder after ``sn`` (the listing's ``sn`` first):
        (raw ``t``/``u``/``d`` packets, new sn), ``([], sn)`` after ``timeout`` seconds.  The
        packets are checked as the listing is (``check_packets``: what fails is left out and
        logged).  MegaError(-9) once the link is gone, (-6) when too far behind (list
        again)."""
        packets, new_sn = self.client.transport.poll(sn, timeout, cancel)
        return check_packets(packets, self.max_nodes), new_sn

    def open_download(self, entry: Entry) -> DownloadInfo:
        """``g`` of a file of the listing (its attributes checked against its key); waits at
        the transfer quota as ``MegaClient.open_download`` does."""
        if entry.type != FILE or entry.key is None:
            raise LinkError("node %s is not a readable file of the folder link" % entry.handle)
        command = commands.download(handle=entry.handle,
                                    https=self.client.transport.https_transfers)
        while True:
            self.client.transfer_quota.wait()
            reply = self.client.transport.batch([command], anonymous=True)[0]
            try:
                info = commands.parse_g_reply(reply, entry.key)
            except TransferQuotaExceeded as exc:
                self.client.transfer_quota.refused(exc)
                continue
            if info.size != entry.size:
                raise ProtocolError("g: the server gives node %s %d bytes, the listing %d"
                                    % (entry.handle, info.size, entry.size))
            return info

    def download(self, entry: Entry, dest: str, *,
                 progress: Callable[[int], None] | None = None,
                 cancel: threading.Event | None = None) -> str:
        """Download, decrypt and MAC-check one file to ``dest``; no file is left there on any
        error.  Returns the path written."""
        info = self.open_download(entry)
        assert entry.key is not None
        return self.client.downloader.download_file(
            info, FileKey.unpack(entry.key), dest, progress=progress, cancel=cancel,
            refresh=lambda: self.open_download(entry))
