"""MEGA file links as people paste them (megafs.api.links.parse_link): every accepted form gives
the same handle and key, folder links and damaged links are refused with a reason.  The
canonical and legacy forms are also pinned by third-party vectors in test_crypto_vectors.py."""
from __future__ import annotations

import pytest

from megafs import crypto
from megafs.api import links
from megafs.errors import LinkError

H = "Ab-d_F12"
KEY = bytes(range(32))
K = crypto.b64encode(KEY)             # 43 characters, no padding


@pytest.mark.parametrize("text", [
    # canonical and legacy, every host
    "https://mega.nz/file/%s#%s" % (H, K),
    "https://mega.nz/#!%s!%s" % (H, K),
    "https://mega.co.nz/#!%s!%s" % (H, K),
    "https://www.mega.nz/file/%s#%s" % (H, K),
    "https://mega.app/file/%s#%s" % (H, K),
    "http://mega.nz/file/%s#%s" % (H, K),
    "HTTPS://MEGA.NZ/file/%s#%s" % (H, K),
    # tracking parameters before the '#'
    "https://mega.nz/file/%s?fbclid=IwAR3xyz#%s" % (H, K),
    "https://mega.nz/file/%s?utm_source=share&utm_medium=x#%s" % (H, K),
    "https://mega.nz/?fbclid=abc#!%s!%s" % (H, K),
    # embed links
    "https://mega.nz/embed/%s#%s" % (H, K),
    "https://mega.nz/embed#!%s!%s" % (H, K),
    "https://mega.nz/#E!%s!%s" % (H, K),
    # the desktop apps' URL handler
    "mega://#!%s!%s" % (H, K),
    "mega:///file/%s#%s" % (H, K),
    "mega://file/%s#%s" % (H, K),
    # chat programs and mailers
    "https://mega.nz/file/%s#%s." % (H, K),
    "https://mega.nz/file/%s#%s)," % (H, K),
    "(https://mega.nz/file/%s#%s)" % (H, K),
    "<https://mega.nz/file/%s#%s>" % (H, K),
    "\"https://mega.nz/file/%s#%s\"" % (H, K),
    "*https://mega.nz/file/%s#%s*" % (H, K),
    "_https://mega.nz/file/%s#%s_" % (H, K),
    "  https://mega.nz/#!%s!%s!!\n" % (H, K),
    "https://mega.nz/file/%s#%s…" % (H, K),
    "https://mega.nz/file/%s%%23%s" % (H, K),
    "https://mega.nz/%%23!%s!%s" % (H, K),
    "https://mega.nz/file/%s/#%s" % (H, K),
], ids=lambda text: text[:48])
def test_link_forms_in_the_wild(text):
    parsed = links.parse_link(text)
    assert parsed.handle == H and parsed.key == KEY
    assert parsed.url() == "https://mega.nz/file/%s#%s" % (H, K)


@pytest.mark.parametrize("text", [
    "https://mega.nz/folder/%s#%s" % (H, K[:22]),
    "https://mega.nz/folder/%s#%s/file/ZZZZZZZZ" % (H, K[:22]),
    "https://mega.nz/#F!%s!%s" % (H, K[:22]),
    "https://mega.nz/folder/%s" % H,
    "mega://#F!%s!%s" % (H, K[:22]),
])
def test_folder_links_are_not_file_links(text):
    with pytest.raises(LinkError, match="not a file link.*folder link"):
        links.parse_link(text)


@pytest.mark.parametrize("text, reason", [
    ("https://mega.nz/#P!AgBmYWxzZQ", "password-protected"),
    ("https://mega.nz/file/%s#%s" % (H, K[:40]), "no file key or a damaged one"),
    ("https://mega.nz/file/%s#%sAB" % (H, K), "no file key or a damaged one"),
    ("https://mega.nz/file/%s#%s/x" % (H, K), "no file key or a damaged one"),
    ("https://mega.nz/file/%s" % H, "no file key or a damaged one"),
    ("https://mega.nz/file/ABC#%s" % K, "handle"),
    ("https://mega.nz.evil.example/file/%s#%s" % (H, K), "not a MEGA file link"),
    ("https://example.com/file/%s#%s" % (H, K), "not a MEGA file link"),
    ("see https://mega.nz/file/%s#%s" % (H, K), "not a MEGA file link"),
    ("https://mega.nz/chat/%s#%s" % (H, K), "not a MEGA file link"),
    ("", "not a MEGA file link"),
])
def test_bad_links_say_why(text, reason):
    with pytest.raises(LinkError, match=reason):
        links.parse_link(text)


def test_never_shows_the_key():
    parsed = links.parse_link("https://mega.nz/file/%s#%s" % (H, K))
    assert K not in repr(parsed)
    with pytest.raises(LinkError) as info:
        links.parse_link("https://mega.nz/file/%s#%sAB" % (H, K))
    assert K not in str(info.value)
