"""Public file links: formatting and parsing of every MEGA file-link form.

Produces ``https://mega.nz/file/HANDLE#KEY``; parses that, the legacy ``https://mega.nz/#!H!K``,
their ``mega.co.nz`` / ``mega.app`` variants and ``www.`` hosts.  Folder links and anything else
raise ``LinkError`` with a reason.  Pure string work, no I/O; never logs a link (its fragment is
the file key).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .. import crypto
from ..errors import LinkError

LINK_HOST = "mega.nz"
_HOSTS = r"(?:www\.)?(?:mega\.nz|mega\.co\.nz|mega\.app)"
_B64 = r"[A-Za-z0-9_-]"
_CURRENT = re.compile(r"^https?://%s/file/(%s{8})#(%s{43})$" % (_HOSTS, _B64, _B64))
_LEGACY = re.compile(r"^https?://%s/#!(%s{8})!(%s{43})$" % (_HOSTS, _B64, _B64))
_FOLDER = re.compile(r"^https?://%s/(?:folder/|#F!)" % _HOSTS)


@dataclass(frozen=True)
class FileLink:
    handle: str       # public handle, 8 b64 chars
    key: bytes        # 32-byte packed file key

    @property
    def key_b64(self) -> str:
        return crypto.b64encode(self.key)

    def url(self) -> str:
        return format_link(self.handle, self.key)

    def __repr__(self) -> str:  # never show the key
        return "FileLink(handle=%r)" % self.handle


def format_link(public_handle: str, file_key: bytes) -> str:
    if len(file_key) != 32:
        raise ValueError("a file link needs the 32-byte file key")
    return "https://%s/file/%s#%s" % (LINK_HOST, public_handle, crypto.b64encode(file_key))


def format_legacy_link(public_handle: str, file_key: bytes) -> str:
    return "https://%s/#!%s!%s" % (LINK_HOST, public_handle, crypto.b64encode(file_key))


def parse_link(text: str) -> FileLink:
    """Parse a MEGA file link in any of its forms; raise LinkError otherwise."""
    if not isinstance(text, str):
        raise LinkError("not a MEGA link: expected text")
    link = text.strip()
    if _FOLDER.match(link):
        raise LinkError("folder links are not supported; give a file link")
    match = _CURRENT.match(link) or _LEGACY.match(link)
    if not match:
        raise LinkError("not a MEGA file link (expected https://mega.nz/file/HANDLE#KEY)")
    key = crypto.b64decode(match.group(2))
    if len(key) != 32:
        raise LinkError("the link's key is not a 32-byte file key")
    return FileLink(match.group(1), key)
