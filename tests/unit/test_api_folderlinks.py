"""Folder links and share keys, pure parts (issue 25): the URL forms ``parse_folder_link``
accepts (and the damaged ones it refuses with a reason), and ``sharekeys``: ``ha``, ``ok``,
``cr`` in the SDK's layout, enclosing shares of a tree with a cycle, and ``ok`` entries whose
authenticator does not match."""
from __future__ import annotations

import pytest
from Crypto.Cipher import AES

from megafs import crypto
from megafs.api import sharekeys
from megafs.api.folderlink import format_folder_link, is_folder_link, parse_folder_link
from megafs.errors import LinkError

H = "Ab-d_F12"
SUB = "Zz09-_xy"
KEY = bytes(range(16))
K = crypto.b64encode(KEY)             # 22 characters


@pytest.mark.parametrize("text, item", [
    ("https://mega.nz/folder/%s#%s" % (H, K), (None, None)),
    ("https://mega.nz/folder/%s#%s/file/%s" % (H, K, SUB), (SUB, None)),
    ("https://mega.nz/folder/%s#%s/folder/%s" % (H, K, SUB), (None, SUB)),
    ("https://mega.nz/#F!%s!%s" % (H, K), (None, None)),
    ("https://mega.co.nz/#F!%s!%s!%s" % (H, K, SUB), (None, SUB)),
    ("https://www.mega.app/folder/%s?fbclid=x#%s" % (H, K), (None, None)),
    ("<https://mega.nz/folder/%s#%s>." % (H, K), (None, None)),
    ("https://mega.nz/folder/%s%%23%s" % (H, K), (None, None)),
    ("mega://#F!%s!%s" % (H, K), (None, None)),
])
def test_every_form_gives_the_handle_key_and_item(text, item):
    link = parse_folder_link(text)
    assert (link.handle, link.key, link.file, link.folder, link.api) == (H, KEY) + item + (None,)
    assert is_folder_link(text)
    assert K not in repr(link)


def test_a_local_servers_link_names_its_api():
    link = parse_folder_link("http://127.0.0.1:8733/folder/%s#%s" % (H, K))
    assert link.api == "http://127.0.0.1:8733/"
    assert link.url() == "http://127.0.0.1:8733/folder/%s#%s" % (H, K)
    assert format_folder_link(H, KEY) == "https://mega.nz/folder/%s#%s" % (H, K)


@pytest.mark.parametrize("text, reason", [
    ("https://mega.nz/folder/%s#%s" % (H, K[:-1]), "no key or a damaged one"),
    ("https://mega.nz/folder/%s" % H, "no key or a damaged one"),
    ("https://mega.nz/folder/%s#%sXYZ" % (H, K), "damaged"),
    ("https://mega.nz/file/%s#%s" % (H, K), "not a MEGA folder link"),
    ("https://example.com/folder/%s#%s" % (H, K), "not a MEGA folder link"),
    ("https://mega.nz/#F!%s!%s/evil" % (H, K), "damaged"),
    ("https://mega.nz/folder/%s#%s/file/short" % (H, K), "damaged"),
])
def test_damaged_links_are_refused_with_a_reason(text, reason):
    with pytest.raises(LinkError, match=reason):
        parse_folder_link(text)


# --- sharekeys ----------------------------------------------------------------------------------
MK = bytes(range(100, 116))
SK = bytes(range(200, 216))


def ecb(key: bytes, data: bytes) -> bytes:
    return AES.new(key, AES.MODE_ECB).encrypt(data)


def test_ha_and_ok_as_the_sdk_and_webclient_compute_them():
    # meganz/sdk handleauth: the 8 handle characters twice, encrypted with the master key
    assert sharekeys.handle_auth(H, MK) == ecb(MK, (H + H).encode())
    assert sharekeys.owner_key(SK, MK) == ecb(MK, SK)
    with pytest.raises(ValueError):
        sharekeys.handle_auth("short", MK)


def test_cr_has_the_sdk_layout():
    k1, k2 = bytes(32), bytes(range(16))
    cr = sharekeys.make_cr(["R0000000"], {"R0000000": SK}, [k1, k2], ["A0000000", "B0000000"])
    assert cr == [["R0000000"], ["A0000000", "B0000000"],
                  [0, 0, crypto.b64encode(ecb(SK, k1)), 0, 1, crypto.b64encode(ecb(SK, k2))]]
    # p: no item handles, item index = place in n; every enclosing share, nearest first
    parents = {"F0000000": "S0000000", "S0000000": "R0000000", "R0000000": "ROOTxxxx"}
    keys = {"R0000000": SK, "S0000000": MK}
    put = sharekeys.cr_for_put(parents, keys, "F0000000", [k2])
    assert put == [["S0000000", "R0000000"], [],
                   [0, 0, crypto.b64encode(ecb(MK, k2)), 1, 0, crypto.b64encode(ecb(SK, k2))]]
    assert sharekeys.cr_for_put(parents, {}, "F0000000", [k2]) is None
    with pytest.raises(ValueError):
        sharekeys.make_cr(["R0000000"], {"R0000000": SK}, [bytes(24)])


def test_enclosing_shares_end_on_a_cycle():
    parents = {"A0000000": "B0000000", "B0000000": "A0000000"}
    assert sharekeys.enclosing_shares(parents, {"B0000000": SK}, "A0000000") == ["B0000000"]


def test_ok_entries_need_their_authenticator():
    good = {"h": H, "k": crypto.b64encode(ecb(MK, SK)),
            "ha": crypto.b64encode(sharekeys.handle_auth(H, MK))}
    swapped = dict(good, h=SUB)          # a server moving a key to another folder
    junk = [{"h": 5}, "x", {"h": H, "k": "!!", "ha": "??"}, dict(good, k="AAAA")]
    assert sharekeys.share_keys_from([good, swapped] + junk, MK) == {H: SK}
    assert sharekeys.share_keys_from(None, MK) == {}
