#!/usr/bin/env python3
"""A bounded fuzz run of the local server (issue 20): ``/cs`` batches, the ``sc`` poll and wait
URLs, upload and download URLs and the control endpoints, with valid, mutated and hostile
inputs (odd JSON, huge numbers, lone surrogates, foreign Host/Origin headers, bad ranges and
offsets, malformed HTTP on raw sockets).

It starts its own ``megafs serve`` on 127.0.0.1 (a fresh data dir in a temporary folder, proof
of work off), sends at most ``--requests`` requests for at most ``--seconds`` seconds, and
prints the counts: requests sent, answers per HTTP status, 5xx answers, connection errors, and
the ERROR/Traceback lines of the server's log.  Exit status 1 if any 5xx, server error line, or
a dead server at the end was seen.  Deterministic for a given ``--seed``.

    .venv/bin/python scripts/fuzz_server.py --requests 3000 --seconds 120 --seed 1
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from megafs import crypto  # noqa: E402
from megafs.server.datadir import TOKEN_HEADER, read_token  # noqa: E402

COMMANDS = ["up", "us", "ug", "uq", "f", "u", "p", "g", "l", "a", "m", "d", "sml", "us0",
            "uc2", "ud2", "mfas", "mfag", "zz", ""]
ODD = [None, True, False, 0, -1, 2 ** 63, 2 ** 64, -2 ** 63 - 1, 1e308, float("nan"), "",
       "A" * 8, "A" * 11, "A" * 5000, "\ud800", "\x00", "../../etc/passwd", [], {}, [[[[]]]],
       {"a": {"b": {}}}, "é" * 10, "AAAAAAAA:BBBBBBBB"]
RELOGIN_EVERY = 100
KEYS = ["a", "s", "n", "t", "k", "ts", "h", "p", "ph", "user", "uh", "c", "r", "i", "ssl",
        "v", "at", "attr", "e", "m", "mfa", "crv", "hak", "ud", "sn"]


class Fuzzer:
    def __init__(self, url: str, data: Path, rng: random.Random) -> None:
        self.url, self.data, self.rng = url, data, rng
        self.http = requests.Session()
        self.port = int(url.rstrip("/").rsplit(":", 1)[1])
        self.statuses: collections.Counter = collections.Counter()
        self.errors: collections.Counter = collections.Counter()
        self.sent = 0
        self.server_errors: list[str] = []
        self.sid, self.upload, self.token = "", "", ""

    # --- helpers -----------------------------------------------------------------------------
    def value(self, depth: int = 0):
        r = self.rng.random()
        if r < 0.5 or depth > 3:
            return self.rng.choice(ODD)
        if r < 0.7:
            return self.rng.randrange(-10 ** 6, 10 ** 12)
        if r < 0.85:
            return [self.value(depth + 1) for _ in range(self.rng.randrange(4))]
        return {self.rng.choice(KEYS): self.value(depth + 1) for _ in range(self.rng.randrange(4))}

    def command(self) -> dict:
        cmd = {"a": self.rng.choice(COMMANDS)}
        for _ in range(self.rng.randrange(5)):
            cmd[self.rng.choice(KEYS)] = self.value()
        return cmd

    def send(self, method: str, path: str, **kw) -> None:
        self.sent += 1
        kw.setdefault("timeout", 30)
        try:
            resp = self.http.request(method, self.url + path, **kw)
            self.statuses[resp.status_code] += 1
        except requests.RequestException as exc:
            self.errors[type(exc).__name__] += 1
            self.http.close()
            self.http = requests.Session()

    def raw(self, data: bytes) -> None:
        """Malformed HTTP on a raw socket; the first status line is counted."""
        self.sent += 1
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
                head = sock.recv(64)
            status = int(head.split()[1]) if head.startswith(b"HTTP/") else 0
            self.statuses[status] += 1
        except (OSError, ValueError, IndexError) as exc:
            self.errors[type(exc).__name__] += 1

    # --- set-up: one account, one upload URL, one blob -------------------------------------
    def setup(self) -> None:
        try:
            self.token = read_token(self.data)
        except OSError:           # a server from before the control token
            self.token = ""
        self.login()

    def login(self) -> None:
        """A fresh account and session (fuzzed commands such as `sml` end the old one)."""
        mk, pk, ssc = (crypto.random_key() for _ in range(3))
        uh = self.cs([{"a": "up", "k": crypto.b64encode(crypto.wrap_key(mk, pk)),
                       "ts": crypto.b64encode(crypto.make_ts(mk, ssc))}])[0]
        self.sid = self.cs([{"a": "us", "user": uh}])[0]["tsid"]
        self.upload = self.cs([{"a": "u", "s": 1000}], sid=self.sid)[0]["p"]
        done = self.cs([{"a": "u", "s": 16}], sid=self.sid)[0]["p"]
        body = os.urandom(16)
        self.http.post(done + "/0", data=body, timeout=30)
        files = self.cs([{"a": "f", "c": 1}], sid=self.sid)[0]["f"]
        self.root = [n["h"] for n in files if n["t"] == 2][0]

    def cs(self, batch, sid: str | None = None):
        q = "cs?id=%d" % self.rng.randrange(10 ** 9) + ("&sid=" + sid if sid else "")
        return self.http.post(self.url + q, data=json.dumps(batch), timeout=30).json()

    # --- one fuzz step -----------------------------------------------------------------------
    def step(self) -> None:
        r = self.rng.random()
        sid = self.rng.choice([self.sid, self.sid, "", "A" * 43, "\u00e9", self.sid + "x"])
        q = "?id=%d" % self.rng.randrange(10 ** 9) + ("&sid=" + sid if sid else "")
        if r < 0.35:
            batch = [self.command() for _ in range(self.rng.randrange(1, 6))]
            try:
                body = json.dumps(batch, allow_nan=True)
            except (ValueError, TypeError):
                body = "[]"
            if self.rng.random() < 0.1:
                body = body[:self.rng.randrange(len(body) + 1)]
            if self.rng.random() < 0.05:
                body = "[" * 5000 + "]" * 5000
            self.send("POST", "cs" + q, data=body.encode("utf-8", "surrogatepass"))
        elif r < 0.45:
            sn = self.rng.choice([crypto.b64encode(struct.pack(">Q", self.rng.choice(
                [0, 1, 2 ** 63, 2 ** 64 - 1, self.rng.randrange(2 ** 64)]))), "", "x" * 11,
                "AAAAAAAAAAA", "%00"])
            path = self.rng.choice(["sc", "wsc"])
            self.send(self.rng.choice(["GET", "POST"]), "%s?sn=%s&sid=%s" % (path, sn, sid))
        elif r < 0.6:
            token_url = self.rng.choice([self.upload, self.url + "ul/" + "A" * 40])
            offset = self.rng.choice(["0", "1", "131072", "-1", "x", "99999999999999999999",
                                      str(self.rng.randrange(2000))])
            body = os.urandom(self.rng.choice([0, 1, 16, 1000, 1001, 4096]))
            check = self.rng.choice(["", "?c=" + crypto.b64encode(os.urandom(12)), "?c=zz",
                                     "?d=" + crypto.b64encode(os.urandom(12))])
            self.sent += 1
            try:
                resp = self.http.post(token_url + "/" + offset + check, data=body, timeout=30)
                self.statuses[resp.status_code] += 1
            except requests.RequestException as exc:
                self.errors[type(exc).__name__] += 1
                self.http = requests.Session()
        elif r < 0.7:
            blob = self.rng.choice(["A" * 22, "x", "A" * 22 + "/0-", ""])
            rng = self.rng.choice(["", "/0-0", "/5-1", "/0-99999999999999999999", "/-1-2",
                                   "/a-b", "/9223372036854775808-"])
            headers = self.rng.choice([{}, {"Range": "bytes=0-"}, {"Range": "bytes=-5"},
                                       {"Range": "bytes=x"}, {"Range": "bytes=99999-1"}])
            self.send(self.rng.choice(["GET", "POST"]), "dl/" + blob + rng, headers=headers)
        elif r < 0.85:
            name = self.rng.choice(["faults", "options", "quota", "accounts", "stats", "info",
                                    "mail", "nope"])
            headers = {}
            if self.rng.random() < 0.7:
                headers[TOKEN_HEADER] = self.token
            if self.rng.random() < 0.8:
                headers["Content-Type"] = self.rng.choice(["application/json", "text/plain"])
            payload = self.value() if self.rng.random() < 0.5 else {
                self.rng.choice(["rules", "bytes", "user", "email", "blocked", "v", "k",
                                 "hashcash_easiness", "deleted_target", "packet_log"]):
                self.value()}
            if name == "faults" and isinstance(payload, dict) and "rules" in payload:
                payload = {"rules": []}          # keep the run itself fault-free
            if name == "options" and isinstance(payload, dict):
                payload.pop("hashcash_easiness", None)
            try:
                body = json.dumps(payload)
            except (ValueError, TypeError):
                body = "{}"
            self.send(self.rng.choice(["GET", "POST"]), "_megafs/" + name, data=body,
                      headers=headers)
        elif r < 0.93:
            host = self.rng.choice(["rebound.example", "localhost:1", "[::1]", "127.0.0.1:",
                                    "a" * 300, "", "evil.example:%d" % self.port])
            origin = self.rng.choice([None, "http://evil.example", "null",
                                      self.url.rstrip("/")])
            headers = {"Host": host}
            if origin:
                headers["Origin"] = origin
            path = self.rng.choice(["cs" + q, "_megafs/stats", "file/AAAAAAAA", "sc" + q])
            self.send(self.rng.choice(["GET", "POST"]), path, headers=headers, data=b"[]")
        else:
            self.raw(self.rng.choice([
                b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00\x00", b"GARBAGE\r\n\r\n",
                b"POST /cs HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                b"POST /cs HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                b"POST /cs HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
                b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",
                b"POST /ul/AAAA/0 HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n",
                b"GET /sc?sn=%ff%fe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-log", metavar="FILE", help="copy the server's log to FILE")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="megafs-fuzz-") as tmp:
        data, log_path = Path(tmp) / "data", Path(tmp) / "server.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "megafs", "serve", "--host",
                                     "127.0.0.1", "--port", "0", "--data", str(data),
                                     "--hashcash-easiness", "0", "--wait-timeout", "1", "-v"],
                                    stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().decode().strip()
            fuzz = Fuzzer(url, data, rng)
            fuzz.setup()
            started = time.monotonic()
            while fuzz.sent < args.requests and time.monotonic() - started < args.seconds:
                fuzz.step()
                if fuzz.sent % RELOGIN_EVERY == 0:
                    fuzz.login()
            elapsed = time.monotonic() - started
            alive = requests.get(url + "_megafs/stats", timeout=10).ok
        finally:
            proc.terminate()
            proc.wait(30)
        text = log_path.read_text(errors="replace")
        if args.keep_log:
            Path(args.keep_log).write_text(text)
    bad = [ln for ln in text.splitlines() if " ERROR " in ln or "Traceback" in ln]
    fives = sum(n for code, n in fuzz.statuses.items() if code >= 500)
    print("requests sent: %d in %.1f s (seed %d)" % (fuzz.sent, elapsed, args.seed))
    print("answers by status: %s" % dict(sorted(fuzz.statuses.items())))
    print("connection errors: %s" % dict(fuzz.errors))
    print("5xx answers: %d; server ERROR/Traceback lines: %d; alive at the end: %s"
          % (fives, len(bad), alive))
    for line in bad[:20]:
        print("  " + line[:200])
    return 0 if not fives and not bad and alive else 1


if __name__ == "__main__":
    sys.exit(main())
