"""Test support: headless Chromium driven over the W3C WebDriver protocol (Debian's chromium +
chromium-driver; ``scripts/test`` installs them).  ``Browser(downloads)`` starts chromedriver
and one session; ``open(url)`` waits for a page that sets ``document.body.dataset.state`` to
"ready" or "error" (the ``/file/H`` link page does); ``script(code)`` runs JavaScript."""
from __future__ import annotations

import shutil
import socket
import subprocess

import requests

from .mount import wait_for

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
