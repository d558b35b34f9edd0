"""A hostile MEGA-compatible API on 127.0.0.1 for ``megafs get`` (issue 20, items 2-8).

``HostileApi(plaintext, name=...)`` makes a real file key (AES key, nonce and the meta-MAC of
``plaintext``), answers ``/cs`` batches and serves the ciphertext on ``/dl/TOKEN/FIRST-LAST``
like a transfer server, so a well-behaved ``HostileApi`` is a server ``megafs get`` downloads
from and verifies.  Each part can then be made hostile:

* ``g``: a dict merged into the ``g`` answer (``{"s": 2**62}``, ``{"s": 0}``), or a callable
  ``g(command) -> value`` replacing it;
* ``body``: raw bytes answered to every ``/cs`` batch instead of JSON (deep nesting, junk), or
  ``padding`` spaces streamed before the JSON answer (a reply that is huge but valid JSON);
* ``attrs``: the attributes encrypted under the file key (the name ``get`` uses), or
  ``raw_attrs``: bytes after ``MEGA`` encrypted as they are (deeply nested JSON);
* ``delay``: seconds slept before each 64 KiB of transfer data (a slow download);
* ``transfer``: ``transfer(first, last, data) -> (status, headers, body)`` replacing the
  transfer server's answer (``body`` is sent as is; a ``Content-Length`` in ``headers`` may lie).

``link`` is ``https://mega.nz/file/HANDLE#KEY``; give ``--api api.url``.  ``requests`` counts the
batches answered.  Used by tests/client/test_client_hostile.py and scripts/fuzz-client.
"""
from __future__ import annotations

import http.server
import json
import os
import threading
import time
from typing import Any, Callable

from Crypto.Cipher import AES

from megafs import crypto
from megafs.api import links


def encrypt_raw_attrs(body: bytes, packed_key: bytes) -> str:
    """``MEGA`` + ``body`` zero-padded and encrypted as a node's ``at`` (base64url)."""
    plain = b"MEGA" + body
    plain += bytes(-len(plain) % 16)
    cipher = AES.new(crypto.attr_key(packed_key), AES.MODE_CBC, iv=bytes(16))
    return crypto.b64encode(cipher.encrypt(plain))


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass        # a client that hangs up on a hostile answer is what the tests provoke


class HostileApi:
    def __init__(self, plaintext: bytes = b"hello hostile world\n", *,
                 name: str = "file.bin", handle: str = "AbCdEf01") -> None:
        self.plaintext = plaintext
        key = crypto.new_file_key()
        self.key = key.with_mac(crypto.file_meta_mac(key.aes_key, key.nonce, plaintext))
        self.cipher = crypto.ctr_crypt(self.key.aes_key, self.key.nonce, 0, plaintext) or b""
        self.handle = handle
        self.attrs: dict[str, Any] = {"n": name}
        self.raw_attrs: bytes | None = None
        self.g: dict[str, Any] | Callable[[dict], Any] | None = None
        self.body: bytes | None = None
        self.padding = 0
        self.delay = 0.0
        self.transfer: Callable[[int, int, bytes], tuple[int, dict, bytes]] | None = None
        self.requests = 0
        self.transfers = 0
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                api._cs(self)

            def do_GET(self) -> None:
                api._transfer(self)

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       kwargs={"poll_interval": 0.1})

    @property
    def link(self) -> str:
        return links.format_link(self.handle, self.key.pack())

    def __enter__(self) -> "HostileApi":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    # --- the command channel --------------------------------------------------------------
    def at(self) -> str:
        if self.raw_attrs is not None:
            return encrypt_raw_attrs(self.raw_attrs, self.key.pack())
        return crypto.b64encode(crypto.encrypt_attr(self.attrs, self.key.pack()))

    def answer(self, command: Any) -> Any:
        if not isinstance(command, dict) or command.get("a") != "g":
            return -2
        if callable(self.g):
            return self.g(command)
        reply = {"g": self.url + "dl/tok" + "x" * 20, "s": len(self.plaintext),
                 "at": self.at()}
        reply.update(self.g or {})
        return reply

    def _cs(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length)
        self.requests += 1
        if self.body is not None:
            body = self.body
        else:
            try:
                batch = json.loads(raw)
            except ValueError:
                batch = []
            body = json.dumps([self.answer(c) for c in batch]).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(self.padding + len(body)))
        handler.end_headers()
        try:
            spaces = b" " * 65536
            left = self.padding
            while left > 0:
                handler.wfile.write(spaces[:left])
                left -= len(spaces)
            handler.wfile.write(body)
        except OSError:
            pass

    # --- the transfer server -----------------------------------------------------------------
    def _transfer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        self.transfers += 1
        try:
            first, last = (int(x) for x in handler.path.rsplit("/", 1)[1].split("-"))
        except ValueError:
            handler.send_response(404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        data = self.cipher[first:last + 1]
        if self.transfer is not None:
            status, headers, body = self.transfer(first, last, data)
            handler.send_response(status)
            if "Content-Length" not in headers:
                handler.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            try:
                handler.wfile.write(body)
            except OSError:
                pass
            handler.close_connection = True
            return
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        try:
            for pos in range(0, len(data), 65536):
                if self.delay:
                    time.sleep(self.delay)
                handler.wfile.write(data[pos:pos + 65536])
        except OSError:
            pass


def random_plaintext(size: int) -> bytes:
    return os.urandom(size)
