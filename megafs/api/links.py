"""Public file links: formatting, and parsing of MEGA file links as people paste them.

Produces ``https://mega.nz/file/HANDLE#KEY``.  Parses (protocol reference §9):

* ``https://mega.nz/file/HANDLE#KEY`` and the legacy ``https://mega.nz/#!HANDLE!KEY``, on the
  hosts ``mega.nz``, ``mega.co.nz`` (2013) and ``mega.app`` (meganz/sdk ``publicLinkURL`` with
  the ``site`` flag), with or without ``www.``, over https or http;
* embed links: ``https://mega.nz/embed/HANDLE#KEY``, ``/embed#!HANDLE!KEY`` and ``#E!HANDLE!KEY``
  (meganz/webclient secureboot.js ``is_embed``);
* ``mega://`` links of the desktop apps' URL handler (``mega://#!HANDLE!KEY``,
  ``mega:///file/HANDLE#KEY``): the same forms without a host;
* what chat programs and mail add: tracking parameters between the path and the ``#``
  (``?fbclid=…``, ``?utm_source=…``), ``%23``/``%21`` for ``#``/``!``, enclosing ``<…>``,
  quotes, brackets or markdown emphasis, and trailing punctuation (``.``, ``,``, ``)``, ``!``,
  ``…``) after the key.  The key of a file link is exactly 43 base64url characters, so whatever
  follows it must be punctuation or spaces; anything else is refused.

Links of the bundled local server (``megafs mount --local``) have the same path on the server
itself: ``http://127.0.0.1:PORT/file/HANDLE#KEY`` (any loopback address or ``localhost``, http or
https); the server answers that URL with a page that decrypts the file in the browser, and
``FileLink.api`` is the server's API base URL, so ``megafs get`` needs no ``--api`` for them.

Folder links (``/folder/…``, ``#F!…``) get a clear "not a file link" error, so do
password-protected links (``#P!…``).  Pure string work, no I/O; never logs a link (its fragment
is the file key).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from .. import crypto
from ..errors import LinkError, ProtocolError

LINK_HOST = "mega.nz"
_B64 = "A-Za-z0-9_-"
_START = re.compile(r"(?:https?://(?:www\.)?(?:mega\.nz|mega\.co\.nz|mega\.app)(?=[/?#]|$)"
                    r"|mega:(?://)?"
                    r"|(?P<local>https?://(?:localhost|127(?:\.\d{1,3}){3}|\[::1\])"
                    r"(?::\d{1,5})?)(?=/(?:file|embed)/))", re.IGNORECASE)
_OPENERS = re.compile(r"^[\s<(\[{\"'*_~`‘“«]*$")
_TRAILING = re.compile(r"^[\s.,;:!?)\]}>\"'*_~`’”»…-]*$")
_HANDLE = re.compile(r"^[%s]{8}$" % _B64)
_KEY = re.compile(r"^([%s]{43})(.*)$" % _B64, re.DOTALL)
_FILE_PATH = re.compile(r"^/*(?:file|embed)/([%s]+)/*$" % _B64)
_LEGACY = re.compile(r"^E?!([%s]+)!(.*)$" % _B64, re.DOTALL)
_FORMS = "https://mega.nz/file/HANDLE#KEY or https://mega.nz/#!HANDLE!KEY"


@dataclass(frozen=True)
class FileLink:
    handle: str       # public handle, 8 b64 chars
    key: bytes        # 32-byte packed file key
    api: str | None = None    # a local server's link: its API base URL (None: MEGA's)

    @property
    def key_b64(self) -> str:
        return crypto.b64encode(self.key)

    def url(self) -> str:
        return format_link(self.handle, self.key, site=self.api)

    def __repr__(self) -> str:  # never show the key
        return "FileLink(handle=%r)" % self.handle


def format_link(public_handle: str, file_key: bytes, site: str | None = None) -> str:
    """``https://mega.nz/file/H#K``; with ``site`` (a local server's base URL, e.g.
    ``http://127.0.0.1:8733/``) ``SITE/file/H#K``, the page that server shows for it.

    ProtocolError if ``public_handle`` is not 8 base64url characters (a server's answer)."""
    if len(file_key) != 32:
        raise ValueError("a file link needs the 32-byte file key")
    if not isinstance(public_handle, str) or not _HANDLE.fullmatch(public_handle):
        # the one place links are made: a server's junk never becomes a printed URL
        raise ProtocolError("the server's public handle is not 8 base64url characters")
    base = site.rstrip("/") if site else "https://%s" % LINK_HOST
    return "%s/file/%s#%s" % (base, public_handle, crypto.b64encode(file_key))


def format_legacy_link(public_handle: str, file_key: bytes) -> str:
    return "https://%s/#!%s!%s" % (LINK_HOST, public_handle, crypto.b64encode(file_key))


def as_file_link(value: "str | FileLink") -> FileLink:
    """``value`` itself if it is a FileLink, else ``parse_link(value)``."""
    return value if isinstance(value, FileLink) else parse_link(value)


def parse_link(text: str) -> FileLink:
    """Parse a MEGA file link in any of its forms (see the module docstring).

    Raises LinkError with the reason: not a MEGA link, a folder link, no key or a damaged one.
    """
    if not isinstance(text, str):
        raise LinkError("not a MEGA link: expected text")
    if "%23" in text or "%21" in text:
        text = unquote(text)       # "#" and "!" escaped by a chat program or a mailer
    start = _START.search(text)
    if start is None or not _OPENERS.match(text[:start.start()]):
        raise LinkError("not a MEGA file link (expected %s)" % _FORMS)
    local = start.group("local")
    rest = text[start.end():].strip()
    path, _, fragment = rest.partition("#")
    path = path.split("?", 1)[0]         # tracking parameters before the '#'
    if path.rstrip("/").lower().endswith("/folder") or "/folder/" in path.lower() \
            or path.lower().startswith("folder/") or fragment.startswith("F!"):
        raise LinkError("not a file link: this is a MEGA folder link, and folder links are "
                        "not supported; give the link of a single file (%s)" % _FORMS)
    if fragment.startswith("P!"):
        raise LinkError("not a file link megafs can use: password-protected MEGA links are "
                        "not supported; open it in a browser to get the plain link")
    file_path = _FILE_PATH.match(path)
    if file_path:
        handle, key_text = file_path.group(1), fragment
    else:
        legacy = _LEGACY.match(fragment) if path.strip("/").lower() in ("", "embed") else None
        if legacy is None:
            raise LinkError("not a MEGA file link (expected %s)" % _FORMS)
        handle, key_text = legacy.group(1), legacy.group(2)
    if not _HANDLE.match(handle):
        raise LinkError("not a MEGA file link: its handle %r is not 8 base64url characters"
                        % handle[:20])
    key = _KEY.match(key_text)
    if key is None or not _TRAILING.match(key.group(2)):
        raise LinkError("the link has no file key or a damaged one (expected 43 base64url "
                        "characters after the '#'; was the link cut off?)")
    api = None
    if local:
        api = local.lower() + "/"
    return FileLink(handle, crypto.b64decode(key.group(1)), api)
