"""A deliberately small raw MEGA client for the server conformance tests.

Built only on ``requests`` and ``megafs.crypto`` (never on megafs' own client library), so the
server tests check the wire protocol itself: exact request bodies, exact response shapes.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import secrets
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import requests

from megafs import chunks, crypto

_ids = itertools.count(secrets.randbelow(1 << 30))


def plaintext(n: int, seed: int = 0) -> bytes:
    """Deterministic test data (an AES-CTR keystream)."""
    return crypto.ctr_crypt(bytes(16), seed.to_bytes(8, "big"), 0, bytes(n))


@dataclass
class Account:
    uh: str
    sid: str
    master_key: bytes
    password_key: bytes


@dataclass
class Encrypted:
    key: crypto.FileKey         # with the meta-MAC
    ciphertext: bytes
    plaintext: bytes


def encrypt_file(data: bytes) -> Encrypted:
    fk = crypto.new_file_key()
    cipher = crypto.ctr_crypt(fk.aes_key, fk.nonce, 0, data)
    mac = crypto.file_meta_mac(fk.aes_key, fk.nonce, data)
    return Encrypted(fk.with_mac(mac), cipher, data)


def decrypt_and_verify(key: crypto.FileKey, ciphertext: bytes) -> bytes:
    data = crypto.ctr_crypt(key.aes_key, key.nonce, 0, ciphertext)
    if crypto.file_meta_mac(key.aes_key, key.nonce, data) != key.mac:
        raise ValueError("meta-MAC mismatch")
    return data


def checksum_b64(body: bytes) -> str:
    return crypto.b64encode(crypto.upload_checksum(body))


def solve_hashcash(challenge: str, workers: int = 0) -> str:
    """Answer an ``X-Hashcash`` challenge on every core (hashlib releases the GIL for the 12 MiB
    hash), so the suite pays the default easiness once per login, not once per core.  Worker w
    tries the prefixes w, w + workers, ... (little-endian counters, as ``crypto.hashcash_solve``)
    and the smallest prefix found first wins; any valid prefix is a valid answer."""
    easiness, token_b64, token = crypto.parse_hashcash_challenge(challenge)
    threshold = crypto.hashcash_threshold(easiness)
    body = token * crypto.HASHCASH_REPEAT
    workers = workers or os.cpu_count() or 1
    found: list[bytes] = []
    stop = threading.Event()

    def search(start: int) -> None:
        counter = start
        while not stop.is_set():
            prefix = struct.pack("<I", counter)
            digest = hashlib.sha256(prefix)
            digest.update(body)
            if struct.unpack(">I", digest.digest()[:4])[0] <= threshold:
                found.append(prefix)
                stop.set()
            counter += workers

    threads = [threading.Thread(target=search, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return "1:%s:%s" % (token_b64, crypto.b64encode(found[0]))


class Api:
    def __init__(self, url: str, verify: str | None = None) -> None:
        """``verify``: a CA file to trust (a ``--tls`` server's); it then replaces the
        environment's REQUESTS_CA_BUNDLE, which requests would otherwise prefer."""
        self.url = url
        self.http = requests.Session()
        if verify is not None:
            self.http.verify = verify
            self.http.trust_env = False
        self.hashcash_solved = 0

    def close(self) -> None:
        self.http.close()

    # --- raw channel -----------------------------------------------------------------------
    def post_cs(self, body: bytes | str, *, sid: str | None = None, rid: object = "auto",
                headers: dict | None = None, params: str = "",
                solve: bool = True) -> requests.Response:
        """POST a batch; a 402 proof-of-work challenge is solved and the identical request
        sent again (``solve=False`` returns the 402 instead)."""
        query = []
        if rid == "auto":
            rid = next(_ids)
        if rid is not None:
            query.append("id=%s" % rid)
        if sid is not None:
            query.append("sid=%s" % sid)
        if params:
            query.append(params)
        if isinstance(body, str):
            body = body.encode()
        url = self.url + "cs?" + "&".join(query)
        resp = self.http.post(url, data=body, headers=headers or {}, timeout=30)
        if solve and resp.status_code == 402 and "X-Hashcash" in resp.headers:
            answer = solve_hashcash(resp.headers["X-Hashcash"])
            self.hashcash_solved += 1
            resp = self.http.post(url, data=body, timeout=30,
                                  headers=dict(headers or {}, **{"X-Hashcash": answer}))
        return resp

    def batch(self, commands: list, *, sid: str | None = None, rid: object = "auto"):
        resp = self.post_cs(json.dumps(commands), sid=sid, rid=rid)
        assert resp.status_code == 200, resp.status_code
        return resp.json()

    def call(self, command: dict, *, sid: str | None = None):
        result = self.batch([command], sid=sid)
        assert isinstance(result, list) and len(result) == 1, result
        return result[0]

    # --- accounts --------------------------------------------------------------------------
    def new_account(self) -> Account:
        mk, pk, ssc = (crypto.random_key() for _ in range(3))
        uh = self.call({"a": "up", "k": crypto.b64encode(crypto.wrap_key(mk, pk)),
                        "ts": crypto.b64encode(crypto.make_ts(mk, ssc))})
        assert isinstance(uh, str) and len(uh) == 11, uh
        res = self.call({"a": "us", "user": uh})
        assert crypto.unwrap_key(crypto.b64decode(res["k"]), pk) == mk
        tsid = crypto.b64decode(res["tsid"])
        assert crypto.check_tsid(tsid, mk, uh)
        return Account(uh, res["tsid"], mk, pk)

    def roots(self, acct: Account) -> dict[int, str]:
        listing = self.call({"a": "f", "c": 1, "r": 1}, sid=acct.sid)
        return {n["t"]: n["h"] for n in listing["f"] if n["t"] in (2, 3, 4)}

    # --- uploads ---------------------------------------------------------------------------
    def upload_url(self, acct: Account, size: int, v2: bool = False) -> str:
        cmd = {"a": "u", "s": size}
        if v2:
            cmd["v"] = 2
        res = self.call(cmd, sid=acct.sid)
        assert isinstance(res, dict) and res["p"].startswith(self.url), res
        return res["p"]

    def post_chunk(self, url: str, offset: int, body: bytes, checksum: str | None = None,
                   param: str = "c") -> requests.Response:
        target = "%s/%d" % (url, offset)
        if checksum is not None:
            target += "?%s=%s" % (param, checksum)
        return self.http.post(target, data=body, timeout=30)

    def upload_bytes(self, acct: Account, ciphertext: bytes, v2: bool = False) -> str:
        """Upload chunk by chunk in order; return the completion token as sent in ``p``."""
        url = self.upload_url(acct, len(ciphertext), v2)
        token = b""
        for offset, length in chunks.spans(len(ciphertext)):
            piece = ciphertext[offset:offset + length]
            resp = self.post_chunk(url, offset, piece, checksum_b64(piece))
            assert resp.status_code == 200
            token = resp.content
        assert len(token) == 36, token
        return crypto.b64encode(token) if v2 else token.decode("ascii")

    def put_file(self, acct: Account, parent: str, enc: Encrypted, name: str,
                 v2: bool = False, **extra) -> dict:
        token = self.upload_bytes(acct, enc.ciphertext, v2)
        res = self.call({"a": "p", "t": parent, "n": [self.file_item(acct, token, enc, name)],
                         **extra}, sid=acct.sid)
        assert isinstance(res, dict), res
        return res["f"][0]

    @staticmethod
    def file_item(acct: Account, token: str, enc: Encrypted, name: str) -> dict:
        packed = enc.key.pack()
        return {"h": token, "t": 0,
                "a": crypto.b64encode(crypto.encrypt_attr({"n": name}, packed)),
                "k": crypto.b64encode(crypto.wrap_key(packed, acct.master_key))}

    @staticmethod
    def folder_item(acct: Account, name: str, placeholder: str = "xxxxxxxx",
                    parent: str | None = None) -> dict:
        key = crypto.random_key()
        item = {"h": placeholder, "t": 1,
                "a": crypto.b64encode(crypto.encrypt_attr({"n": name}, key)),
                "k": crypto.b64encode(crypto.wrap_key(key, acct.master_key))}
        if parent is not None:
            item["p"] = parent
        return item

    def mkdir(self, acct: Account, parent: str, name: str) -> dict:
        res = self.call({"a": "p", "t": parent, "n": [self.folder_item(acct, name)]},
                        sid=acct.sid)
        return res["f"][0]

    def download(self, url: str) -> bytes:
        resp = self.http.get(url, timeout=30)
        assert resp.status_code == 200, resp.status_code
        return resp.content

    # --- node keys -------------------------------------------------------------------------
    @staticmethod
    def node_key(acct: Account, node: dict) -> bytes:
        owner, wrapped = node["k"].split(":", 1)
        assert owner == acct.uh
        return crypto.unwrap_key(crypto.b64decode(wrapped), acct.master_key)

    @classmethod
    def node_name(cls, acct: Account, node: dict) -> str:
        return crypto.decrypt_attr(crypto.b64decode(node["a"]), cls.node_key(acct, node))["n"]


def log_text(server) -> str:
    return Path(server.log_path).read_text(errors="replace")
