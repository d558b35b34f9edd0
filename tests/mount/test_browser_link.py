"""Local links open in a browser (issue 13 item 8): a `--local` mount prints
`http://127.0.0.1:PORT/file/H#K`; headless Chromium (Debian's chromium + chromium-driver,
driven over the W3C WebDriver protocol) opens it, the page decrypts and MAC-checks the file
with WebCrypto and offers it for download; the saved file has the same bytes.  A wrong key, a
damaged key and a key whose MAC does not match each give a clear message and no download."""
from __future__ import annotations

import base64
import hashlib
import os
import time

import pytest

from helpers.browser import CHROMIUM, DRIVER, Browser
from helpers.mount import force_unmount, megafs, wait_for

pytestmark = pytest.mark.fuse


def _with_key(link: str, key: bytes) -> str:
    return link.split("#")[0] + "#" + base64.urlsafe_b64encode(key).decode().rstrip("=")


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs chromium and chromium-driver "
                    "(scripts/test installs them)")
def test_local_link_opens_decrypts_and_downloads_in_a_browser(tmp_path):
    state, mnt, downloads = tmp_path / "state", tmp_path / "mnt", tmp_path / "downloads"
    mnt.mkdir()
    downloads.mkdir()
    s = ["--state-dir", str(state)]
    files = {"photo.png": os.urandom(300000), "several chunks.bin": os.urandom(1500000)}
    megafs("mount", str(mnt), "--local", *s)
    browser = None
    try:
        for name, data in files.items():
            (mnt / name).write_bytes(data)
        links = {name: (mnt / (name + ".link")).read_text().strip() for name in files}
        port = int((state / "local-server.port").read_text())
        for link in links.values():
            assert link.startswith("http://127.0.0.1:%d/file/" % port)
        browser = Browser(str(downloads))
        for name, data in files.items():
            state_, text = browser.open(links[name])
            assert state_ == "ready", text
            assert "verified" in text and name in text
            assert browser.script("return document.body.dataset.sha256") == \
                hashlib.sha256(data).hexdigest()
            button = browser.call("POST", "/element",
                                  {"using": "css selector", "value": "#save"})
            browser.call("POST", "/element/%s/click" % next(iter(button.values())))
            saved = downloads / name
            wait_for(lambda: saved.exists() and saved.stat().st_size == len(data),
                     timeout=30, what="the downloaded file")
            assert saved.read_bytes() == data
        link = links["photo.png"]
        key = base64.urlsafe_b64decode(link.split("#")[1] + "=")
        # a wrong key (another AES key; flipping both halves alike would cancel out):
        # a clear message, nothing offered
        wrong = bytes(b ^ 0x55 for b in key[:16]) + key[16:]
        before = sorted(os.listdir(downloads))
        state_, text = browser.open(_with_key(link, wrong))
        assert state_ == "error" and text.startswith("Wrong key") and "Nothing" in text
        assert browser.script("return document.getElementById('save').hidden") is True
        # and not drawn: the button's own CSS once overrode `hidden` (issue 24)
        assert browser.script("return getComputedStyle(document.getElementById('save'))"
                              ".display") == "none"
        # the same AES key and nonce, another MAC: the MAC check refuses the file
        delta = bytes(8 * [0x01])
        other = key[:8] + bytes(a ^ b for a, b in zip(key[8:16], delta)) + key[16:24] + \
            bytes(a ^ b for a, b in zip(key[24:32], delta))
        state_, text = browser.open(_with_key(link, other))
        assert state_ == "error" and "MAC check failed" in text, text
        # a key cut short
        state_, text = browser.open(link[:-5])
        assert state_ == "error" and "damaged" in text
        # a handle with no file behind it
        state_, text = browser.open(link.replace("/file/", "/file/A").split("#")[0][:-1]
                                    + "#" + link.split("#")[1])
        assert state_ == "error" and "no file behind this link" in text
        time.sleep(1)
        assert sorted(os.listdir(downloads)) == before
    finally:
        if browser is not None:
            browser.close()
        megafs("umount", str(mnt), *s, check=False)
        force_unmount(mnt)
