"""Local links open in a browser (issue 13 item 8): a `--local` mount prints
`http://127.0.0.1:PORT/file/H#K`; headless Chromium (Debian's chromium + chromium-driver,
driven over the W3C WebDriver protocol) opens it, the page decrypts and MAC-checks the file
with WebCrypto and offers it for download; the saved file has the same bytes.  A wrong key, a
damaged key and a key whose MAC does not match each give a clear message and no download."""
from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import subprocess
import time

import pytest
import requests

from helpers.mount import force_unmount, megafs, wait_for

pytestmark = pytest.mark.fuse

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
         "--disable-component-update", "--disable-sync", "--window-size=1000,800"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """A chromedriver process and one headless Chromium session (plain WebDriver calls)."""

    def __init__(self, downloads: str) -> None:
        port = _free_port()
        self.base = "http://127.0.0.1:%d" % port
        self.proc = subprocess.Popen([DRIVER, "--port=%d" % port], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(lambda: requests.get(self.base + "/status", timeout=2).json()["value"]
                 ["ready"], timeout=30, what="chromedriver")
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": CHROMIUM, "args": FLAGS,
            "prefs": {"download.default_directory": downloads,
                      "download.prompt_for_download": False}}}}}
        reply = requests.post(self.base + "/session", json=caps, timeout=60).json()["value"]
        self.session = self.base + "/session/" + reply["sessionId"]
        self.call("POST", "/goog/cdp/execute", {"cmd": "Browser.setDownloadBehavior", "params": {
            "behavior": "allow", "downloadPath": downloads}})

    def call(self, method: str, path: str, payload: dict | None = None):
        resp = requests.request(method, self.session + path, json=payload or {}, timeout=60)
        value = resp.json()["value"]
        if resp.status_code != 200:
            raise AssertionError("WebDriver %s: %r" % (path, value))
        return value

    def script(self, code: str):
        return self.call("POST", "/execute/sync", {"script": code, "args": []})

    def open(self, url: str) -> tuple[str, str]:
        """Load ``url``; (data-state, status text) once the page is done."""
        # links differing only after the # would be a same-page navigation: start afresh
        self.call("POST", "/url", {"url": "about:blank"})
        self.call("POST", "/url", {"url": url})
        state = wait_for(lambda: (self.script("return document.body.dataset.state")
                                  in ("ready", "error")) and
                         self.script("return document.body.dataset.state"), timeout=60,
                         what="the link page")
        return state, self.script("return document.getElementById('status').textContent")

    def close(self) -> None:
        try:
            requests.delete(self.session, timeout=30)
        except (requests.RequestException, AttributeError):
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


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
