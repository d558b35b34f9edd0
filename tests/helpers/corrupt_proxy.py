"""A tiny HTTP stand-in in front of the real local server that corrupts chosen replies.

``CorruptProxy(upstream_url).start()`` listens on 127.0.0.1 (``.url``) and forwards every
request unchanged (method, path, query, body, headers) to the real ``megafs serve``; replies
come back unchanged unless a rule matches.  ``proxy.corrupt(kind, command, body=...)`` replaces
the reply body of ``/cs`` batches holding ``command`` (or of ``/sc`` polls with kind "sc");
``rewrite=callable`` instead edits the parsed JSON reply.  ``count`` limits how many replies
are hit (None: all until ``clear()``).  ``hits`` counts replies corrupted.

Used by the hostile-input tests (issue 6 item 5: malformed JSON, wrong types, bare ints from
the server) and the https test (a ``g`` reply pointing at a self-signed https server).  Upload
and download URLs point at the real server directly, so transfers are not proxied.
"""
from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable

import requests

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
       "proxy-authenticate", "proxy-authorization", "te", "trailers", "upgrade"}


@dataclass
class Rule:
    kind: str                      # "cs" | "sc"
    command: str | None
    body: bytes | None = None
    rewrite: Callable[[Any], Any] | None = None
    count: int | None = None


class CorruptProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: list[Rule] = []
        self.hits = 0
        self.lock = threading.Lock()
        self.http = threading.local()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._forward(self, "GET")

            def do_POST(self) -> None:
                proxy._forward(self, "POST")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       kwargs={"poll_interval": 0.1})

    def start(self) -> "CorruptProxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def __enter__(self) -> "CorruptProxy":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def corrupt(self, kind: str, command: str | None = None, *, body: bytes | None = None,
                rewrite: Callable[[Any], Any] | None = None, count: int | None = None) -> None:
        with self.lock:
            self.rules.append(Rule(kind, command, body, rewrite, count))

    def clear(self) -> None:
        with self.lock:
            self.rules = []

    def _session(self) -> requests.Session:
        sess = getattr(self.http, "session", None)
        if sess is None:
            sess = self.http.session = requests.Session()
        return sess

    def _pick(self, kind: str, body: bytes) -> Rule | None:
        names: set[str] = set()
        if kind == "cs":
            try:
                batch = json.loads(body)
                names = {c.get("a") for c in batch if isinstance(c, dict)}
            except ValueError:
                pass
        with self.lock:
            for rule in self.rules:
                if rule.kind != kind or (rule.command is not None and rule.command not in names):
                    continue
                if rule.count is not None:
                    if rule.count <= 0:
                        continue
                    rule.count -= 1
                self.hits += 1
                return rule
        return None

    def _forward(self, handler: http.server.BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = urllib.parse.urlsplit(handler.path)
        kind = path.path.strip("/").split("/", 1)[0]
        headers = {k: v for k, v in handler.headers.items()
                   if k.lower() not in HOP and k.lower() != "host"}
        try:
            resp = self._session().request(method, self.upstream + handler.path, data=body,
                                           headers=headers, timeout=200)
            status, content = resp.status_code, resp.content
            out_headers = [(k, v) for k, v in resp.headers.items() if k.lower() not in HOP]
        except requests.RequestException:
            status, content, out_headers = 502, b"", []
        rule = self._pick(kind, body) if status == 200 else None
        if rule is not None:
            if rule.rewrite is not None:
                content = json.dumps(rule.rewrite(json.loads(content))).encode()
            else:
                content = rule.body or b""
        handler.send_response(status)
        for k, v in out_headers:
            handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        handler.wfile.write(content)
