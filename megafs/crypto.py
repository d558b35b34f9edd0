"""Pure MEGA cryptographic primitives.

Owns: base64url and a32 codecs, key wrapping, node-attribute encryption, AES-CTR at any offset,
chunk MACs and the meta-MAC, file-key packing, password keys (v1 and v2), the ephemeral-session
tsid check and hashcash.  Everything here is a pure function over bytes: no I/O, no logging, no
randomness except where a caller asks for fresh keys (``secrets`` only).  Every bulk operation is
a single pycryptodome call over the whole buffer; nothing loops per 16-byte block in Python.

Client and server both import this module: it is pinned by third-party known-answer vectors
(``tests/unit/data/mega-vectors.json``), not by round trips alone.

Speed: the chunk CBC-MAC is the bottleneck of every transfer (CBC is serial within a chunk:
pycryptodome ~830 MiB/s against ~3,500 MiB/s for its AES-CTR here), so it runs through
OpenSSL (``cryptography``, ~1,450 MiB/s on the same core) where that package is installed,
else pycryptodome; both release the GIL.  Chunk MACs are independent of each other, so
``megafs.sealing`` spreads the chunks of a span over every core.
"""
from __future__ import annotations

import base64
import hashlib
import json
import mmap
import secrets
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Union

from Crypto.Cipher import AES
from Crypto.Util.strxor import strxor

from . import chunks

_OsslCipher: Any = None
try:   # OpenSSL's AES-NI CBC: ~1.75x pycryptodome's per core (see the module docstring)
    from cryptography.hazmat.primitives.ciphers import Cipher as _OsslCipher
    from cryptography.hazmat.primitives.ciphers import algorithms as _ossl_alg
    from cryptography.hazmat.primitives.ciphers import modes as _ossl_modes
except ImportError:    # pragma: no cover - pycryptodome alone is correct, only slower
    pass

__all__ = [
    "b64encode", "b64decode", "a32_to_bytes", "bytes_to_a32", "wrap_key", "unwrap_key",
    "encrypt_attr", "decrypt_attr", "AttributeError_", "ctr_crypt", "chunk_mac", "condense_macs",
    "meta_mac", "FileKey", "new_file_key", "MacAccumulator", "prepare_key_v1", "stringhash",
    "derive_key_v2", "make_ts", "check_tsid", "hashcash_threshold", "hashcash_check",
    "hashcash_solve", "hashcash_body", "hashcash_value", "random_key", "upload_checksum",
]

ZERO_IV = bytes(16)
WritableBuffer = Union[bytearray, memoryview, mmap.mmap]   # scratch space for bulk helpers


# --------------------------------------------------------------------------------------------
# Encodings
def b64encode(data: bytes) -> str:
    """base64url without '=' padding, as MEGA puts it on the wire."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str | bytes) -> bytes:
    """Decode base64url, tolerating missing padding, commas, and the standard alphabet.

    Raises ValueError on input that is not base64 (including a length of 1 mod 4).
    """
    if isinstance(text, bytes):
        text = text.decode("ascii", "strict")
    cleaned = text.replace(",", "").replace("+", "-").replace("/", "_").rstrip("=")
    if len(cleaned) % 4 == 1:
        raise ValueError("invalid base64url length")
    try:
        return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
        raise ValueError("invalid base64url data") from exc


def bytes_to_a32(data: bytes) -> list[int]:
    """Big-endian 32-bit words; the tail is zero-padded to a multiple of 4 bytes."""
    padded = data + bytes(-len(data) % 4)
    return list(struct.unpack(">%dI" % (len(padded) // 4), padded))


def a32_to_bytes(words: Iterable[int]) -> bytes:
    words = list(words)
    return struct.pack(">%dI" % len(words), *(w & 0xFFFFFFFF for w in words))


def random_key(size: int = 16) -> bytes:
    """Fresh key material from the OS CSPRNG."""
    return secrets.token_bytes(size)


# --------------------------------------------------------------------------------------------
# Key wrapping: each 16-byte block encrypted on its own (AES-128-ECB).
def wrap_key(key: bytes, wrapping_key: bytes) -> bytes:
    if len(key) % 16:
        raise ValueError("key length must be a multiple of 16")
    return AES.new(wrapping_key, AES.MODE_ECB).encrypt(key)


def unwrap_key(wrapped: bytes, wrapping_key: bytes) -> bytes:
    if len(wrapped) % 16:
        raise ValueError("wrapped key length must be a multiple of 16")
    return AES.new(wrapping_key, AES.MODE_ECB).decrypt(wrapped)


# --------------------------------------------------------------------------------------------
# Node attributes: "MEGA" + JSON, zero-padded, AES-CBC with a zero IV.
class AttributeError_(ValueError):
    """Attributes that do not decrypt to a MEGA attribute object (wrong key or garbage)."""


def attr_key(node_key: bytes) -> bytes:
    """The 16-byte AES key of a node: folders use theirs as is, files fold 32 bytes by XOR."""
    if len(node_key) == 16:
        return node_key
    if len(node_key) == 32:
        return bytes(a ^ b for a, b in zip(node_key[:16], node_key[16:]))
    raise ValueError("node key must be 16 or 32 bytes")


def encrypt_attr(attrs: dict[str, Any], node_key: bytes) -> bytes:
    text = json.dumps(attrs, separators=(",", ":"), ensure_ascii=False)
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: only JSON's \u escapes can carry them
        body = json.dumps(attrs, separators=(",", ":")).encode("ascii")
    plain = b"MEGA" + body
    plain += bytes(-len(plain) % 16)
    return AES.new(attr_key(node_key), AES.MODE_CBC, iv=ZERO_IV).encrypt(plain)


def decrypt_attr(blob: bytes, node_key: bytes) -> dict[str, Any]:
    """Decrypt an attribute blob; raise AttributeError_ if it is not a MEGA attribute object."""
    if not blob or len(blob) % 16:
        raise AttributeError_("attribute blob length %d is not a positive multiple of 16"
                              % len(blob))
    plain = AES.new(attr_key(node_key), AES.MODE_CBC, iv=ZERO_IV).decrypt(blob)
    if not plain.startswith(b'MEGA{"'):
        raise AttributeError_("attributes do not start with MEGA{\" (wrong key?)")
    text = plain[4:].rstrip(b"\0")
    try:
        value = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise AttributeError_("attributes are not valid UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise AttributeError_("attributes are not a JSON object")
    return value


# --------------------------------------------------------------------------------------------
# File contents: AES-128-CTR with counter = nonce(8) || big-endian 64-bit block index.
def ctr_crypt(key: bytes, nonce: bytes, offset: int, data: bytes | memoryview,
              output: bytearray | memoryview | None = None) -> bytes | None:
    """Encrypt or decrypt ``data`` that starts at byte ``offset`` of the file (any offset).

    With ``output`` (a writable buffer of the same length, which may be ``data`` itself) the
    result is written there and None is returned: no allocation, no copy.
    """
    skip = offset % 16
    cipher = AES.new(key, AES.MODE_CTR, nonce=nonce, initial_value=offset // 16)
    if skip:
        cipher.encrypt(bytes(skip))  # advance the keystream to the right byte
    if output is None:
        return cipher.encrypt(data)
    cipher.encrypt(data, output=output)
    return None


def chunk_mac(key: bytes, nonce: bytes, plaintext: bytes | memoryview,
              scratch: "WritableBuffer | None" = None) -> bytes:
    """CBC-MAC of one MAC chunk (IV nonce||nonce, last block zero-padded).

    ``scratch`` (a writable buffer of at least 16 bytes) receives the CBC output piece by piece
    instead of a new buffer as large as the chunk (the cipher object chains the pieces).
    """
    pad = -len(plaintext) % 16
    if pad:
        plaintext = bytes(plaintext) + bytes(pad)
    if not plaintext:
        # An empty chunk never occurs in a non-empty file; keep the definition total anyway.
        return nonce + nonce
    if _OsslCipher is not None:
        return _chunk_mac_openssl(key, nonce + nonce, memoryview(plaintext).cast("B"), scratch)
    cipher = AES.new(key, AES.MODE_CBC, iv=nonce + nonce)
    if scratch is None:
        return cipher.encrypt(plaintext)[-16:]
    out = memoryview(scratch).cast("B")
    step = len(out) - len(out) % 16
    if step < 16:
        raise ValueError("scratch must hold at least 16 bytes")
    view = memoryview(plaintext).cast("B")
    end = 0
    for pos in range(0, len(view), step):
        piece = view[pos:pos + step]
        end = len(piece)
        cipher.encrypt(piece, output=out[:end])
    return bytes(out[end - 16:end])


MAC_STEP = 256 * 1024           # CBC output buffer when the caller gives no scratch


def _chunk_mac_openssl(key: bytes, iv: bytes, view: memoryview,
                       scratch: "WritableBuffer | None") -> bytes:
    """``chunk_mac`` through OpenSSL: the CBC output goes into ``scratch`` (or a buffer of at
    most 256 KiB) in pieces; ``update_into`` wants 15 spare bytes after each piece."""
    enc = _OsslCipher(_ossl_alg.AES(key), _ossl_modes.CBC(iv)).encryptor()
    out = memoryview(scratch).cast("B") if scratch is not None else None
    if out is None or len(out) < 32:
        if out is not None and len(out) < 16:
            raise ValueError("scratch must hold at least 16 bytes")
        out = memoryview(bytearray(min(len(view), MAC_STEP) + 16))
    step = (len(out) - 15) // 16 * 16
    end = 0
    for pos in range(0, len(view), step):
        piece = view[pos:pos + step]
        end = enc.update_into(piece, out)
    return bytes(out[end - 16:end])


def condense_macs(key: bytes, macs: Iterable[bytes]) -> bytes:
    """Fold the chunk MACs (in offset order) into one 16-byte MAC; 16 zero bytes if none."""
    joined = b"".join(macs)
    if not joined:
        return bytes(16)
    return AES.new(key, AES.MODE_CBC, iv=ZERO_IV).encrypt(joined)[-16:]


def meta_mac(condensed: bytes) -> bytes:
    """The 8-byte meta-MAC (m0, m1) stored in words 6-7 of a file key."""
    m = struct.unpack(">4I", condensed)
    return struct.pack(">2I", m[0] ^ m[1], m[2] ^ m[3])


def encrypt_chunk(key: bytes, nonce: bytes, offset: int,
                  plaintext: bytes | memoryview) -> tuple[bytes, bytes]:
    """Encrypt one MAC chunk starting at ``offset``; return (ciphertext, chunk MAC)."""
    ciphertext = ctr_crypt(key, nonce, offset, plaintext)
    assert ciphertext is not None
    return ciphertext, chunk_mac(key, nonce, plaintext)


@dataclass(frozen=True)
class FileKey:
    """The parts of a 32-byte MEGA file key."""

    aes_key: bytes   # 16 bytes
    nonce: bytes     # 8 bytes (words 4-5)
    mac: bytes       # 8 bytes meta-MAC (words 6-7)

    def pack(self) -> bytes:
        """w0..w3 = aes ^ (w4..w7); w4..w5 = nonce; w6..w7 = meta-MAC."""
        tail = self.nonce + self.mac
        return bytes(a ^ b for a, b in zip(self.aes_key, tail)) + tail

    @classmethod
    def unpack(cls, packed: bytes) -> "FileKey":
        if len(packed) != 32:
            raise ValueError("file key must be 32 bytes, got %d" % len(packed))
        tail = packed[16:]
        return cls(bytes(a ^ b for a, b in zip(packed[:16], tail)), tail[:8], tail[8:])

    def with_mac(self, mac: bytes) -> "FileKey":
        return FileKey(self.aes_key, self.nonce, mac)


def new_file_key() -> FileKey:
    """Random AES key and nonce for a new upload; the MAC is filled in once the data is known."""
    return FileKey(secrets.token_bytes(16), secrets.token_bytes(8), bytes(8))


class MacAccumulator:
    """Collects chunk MACs by offset (in any order) and yields the meta-MAC of a whole file.

    Uploads finish chunks out of order; condensing must happen in offset order, so the MACs are
    kept keyed by chunk offset until the end.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._macs: dict[int, bytes] = {}

    def add(self, offset: int, mac: bytes) -> None:
        self._macs[offset] = mac

    def __contains__(self, offset: int) -> bool:
        return offset in self._macs

    def meta_mac(self, size: int) -> bytes:
        expected = [off for off, length in chunks.spans(size) if length]
        missing = [off for off in expected if off not in self._macs]
        if missing:
            raise ValueError("missing MACs for %d chunk(s), first at offset %d"
                             % (len(missing), missing[0]))
        return meta_mac(condense_macs(self._key, (self._macs[off] for off in expected)))


def empty_file_macs(key: bytes, nonce: bytes) -> tuple[bytes, ...]:
    """The meta-MACs of no data: (0, 0) of the web client, SDK and megafs; one chunk MAC
    nonce||nonce of megajs (shared/vectors); one zero chunk MAC of go-mega (rclone 1.75.2)."""
    return tuple(meta_mac(condense_macs(key, m)) for m in ([], [nonce + nonce], [bytes(16)]))


def file_meta_mac(key: bytes, nonce: bytes, plaintext: bytes) -> bytes:
    """Meta-MAC of a whole in-memory plaintext (tests and small files)."""
    macs = (chunk_mac(key, nonce, memoryview(plaintext)[off:off + length])
            for off, length in chunks.spans(len(plaintext)) if length)
    return meta_mac(condense_macs(key, macs))


# --------------------------------------------------------------------------------------------
# Password keys
_PW_START = bytes.fromhex("93c467e37db0c7a4d1be3f810152cb56")


def _aes_chain(key: bytes, block: bytes, rounds: int) -> bytes:
    """block = E_key(block), ``rounds`` times, in one C call.

    CBC over zero plaintext blocks computes exactly that chain: c_i = E(c_{i-1} ^ 0).
    """
    return AES.new(key, AES.MODE_CBC, iv=block).encrypt(bytes(16 * rounds))[-16:]


def prepare_key_v1(password: bytes) -> bytes:
    """v1 password key from the password's bytes (the caller chooses the encoding)."""
    padded = password + bytes(-len(password) % 16) if password else bytes(16)
    keys = [padded[i:i + 16] for i in range(0, len(padded), 16)]
    if len(keys) == 1:
        return _aes_chain(keys[0], _PW_START, 0x10000)
    ciphers = [AES.new(k, AES.MODE_ECB) for k in keys]
    block = _PW_START
    # Several password blocks interleave per round, which no single C mode expresses; this runs
    # only at login for passwords longer than 16 bytes.
    for _ in range(0x10000):
        for cipher in ciphers:
            block = cipher.encrypt(block)
    return block


def stringhash(text: bytes, key: bytes) -> str:
    """v1 user hash of the (already lowercased) email under the password key, as b64."""
    words = bytes_to_a32(text)
    h = [0, 0, 0, 0]
    for i, w in enumerate(words):
        h[i % 4] ^= w
    block = _aes_chain(key, a32_to_bytes(h), 0x4000)
    return b64encode(block[0:4] + block[8:12])


def derive_key_v2(password: bytes, salt: bytes) -> tuple[bytes, bytes]:
    """v2: PBKDF2-HMAC-SHA512, 100000 rounds, 32 bytes -> (password key, auth key)."""
    derived = hashlib.pbkdf2_hmac("sha512", password, salt, 100000, 32)
    return derived[:16], derived[16:]


# --------------------------------------------------------------------------------------------
# Ephemeral sessions
def make_ts(master_key: bytes, ssc: bytes) -> bytes:
    """The 32-byte ``ts`` of ``up``: ssc || E_mk(ssc)."""
    return ssc + AES.new(master_key, AES.MODE_ECB).encrypt(ssc)


def check_tsid(tsid: bytes, master_key: bytes, user_handle: str | None = None) -> bool:
    """Accept a temporary session id iff E_mk(tsid[0:16]) == tsid[27:43] (and the handle fits)."""
    if len(tsid) != 43:
        return False
    if user_handle is not None and tsid[16:27] != user_handle.encode("ascii", "replace"):
        return False
    return secrets.compare_digest(AES.new(master_key, AES.MODE_ECB).encrypt(tsid[:16]),
                                  tsid[27:43])


# --------------------------------------------------------------------------------------------
# Hashcash (proof of work demanded with HTTP 402 + X-Hashcash)
HASHCASH_REPEAT = 262144


def hashcash_threshold(easiness: int) -> int:
    return (((easiness & 63) << 1) + 1) << ((easiness >> 6) * 7 + 3)


def hashcash_body(token: bytes) -> bytes:
    """The 12 MiB the proof of work hashes after its 4-byte prefix: the token repeated."""
    return token * HASHCASH_REPEAT


def hashcash_value(prefix: bytes, body: bytes) -> int:
    """The first 4 bytes of SHA-256(prefix || body), big-endian: a try is valid when this is
    at most ``hashcash_threshold(easiness)``.  hashlib releases the GIL while it hashes, so
    several threads can search at once (``megafs.api.hashcash``)."""
    digest = hashlib.sha256(prefix)
    digest.update(body)
    return struct.unpack(">I", digest.digest()[:4])[0]


def parse_hashcash_challenge(header: str) -> tuple[int, str, bytes]:
    """Parse ``1:<easiness>:<timestamp>:<token>``; return (easiness, token_b64, token)."""
    parts = header.strip().split(":")
    if len(parts) != 4 or parts[0] != "1":
        raise ValueError("unsupported X-Hashcash challenge")
    easiness = int(parts[1])
    if not 0 <= easiness <= 255:
        raise ValueError("hashcash easiness out of range")
    token = b64decode(parts[3])
    if len(token) != 48:
        raise ValueError("hashcash token must be 48 bytes")
    return easiness, parts[3], token


def hashcash_check(token: bytes, easiness: int, prefix: bytes) -> bool:
    if len(prefix) != 4:
        return False
    return hashcash_value(prefix, hashcash_body(token)) <= hashcash_threshold(easiness)


def hashcash_solve(challenge_header: str, max_tries: int = 1 << 24) -> str:
    """Answer a challenge header with ``1:<token>:<b64 prefix>``.

    Searches 4-byte prefixes as a little-endian counter from 0, like the reference clients, so
    the answer is the smallest valid prefix.  One thread: the reference for tests and the
    server; the client solves on every core with ``megafs.api.hashcash.solve`` (same answer).
    """
    easiness, token_b64, token = parse_hashcash_challenge(challenge_header)
    body = hashcash_body(token)  # 12 MiB, built once; each try hashes prefix + body
    threshold = hashcash_threshold(easiness)
    for counter in range(max_tries):
        prefix = struct.pack("<I", counter)
        if hashcash_value(prefix, body) <= threshold:
            return "1:%s:%s" % (token_b64, b64encode(prefix))
    raise ValueError("hashcash not solved within %d tries" % max_tries)


def parse_hashcash_answer(header: str) -> tuple[str, bytes]:
    """Parse ``1:<token b64>:<prefix b64>`` into (token_b64, prefix)."""
    parts = header.strip().split(":")
    if len(parts) != 3 or parts[0] != "1":
        raise ValueError("malformed X-Hashcash answer")
    return parts[1], b64decode(parts[2])


# --------------------------------------------------------------------------------------------
# Upload POST integrity checksum (``?c=`` / ``?d=``): byte j of the body is XORed into
# position j mod 12 of a 12-byte value.
def upload_checksum(data: bytes | bytearray | memoryview,
                    scratch: "WritableBuffer | None" = None) -> bytes:
    """The 12-byte ``c=`` checksum of an upload POST body: byte j XORed into position j mod 12.

    Folds the body in halves (each a whole number of 12-byte words; XOR is associative) with
    pycryptodome's C ``strxor`` on memoryviews (~8 GB/s), and the last 3 KiB with Python ints:
    a ``strxor`` call costs 10-25 us of wrapper however small its input, so the tail levels
    cost more than the data.  Against ~3 MB/s for a per-byte Python loop.  Shared by the
    uploader and the server.

    With ``scratch`` (a writable buffer of at least 24 bytes) the body is first XORed block by
    block into it (blocks a multiple of 12 long, so positions line up), and only that block is
    folded, in place: no allocation.  Without it, one buffer of half the body is allocated.
    """
    view = memoryview(data).cast("B")
    work = memoryview(scratch).cast("B") if scratch is not None else None
    if work is not None:
        block = len(work) // 12 * 12
        if block < 24:
            raise ValueError("scratch must hold at least 24 bytes")
        if len(view) >= 2 * block:
            whole = len(view) // block * block
            work = work[:block]
            strxor(view[:block], view[block:2 * block], output=work)
            for pos in range(2 * block, whole, block):
                strxor(work, view[pos:pos + block], output=work)
            rest = len(view) - whole
            if rest:
                strxor(work[:rest], view[whole:], output=work[:rest])
            view = work
    tail = len(view) % 12
    acc = int.from_bytes(view[len(view) - tail:], "little")   # tail byte i is at position i
    buf = view[:len(view) - tail]
    while len(buf) > _INT_FOLD:
        units = len(buf) // 12
        half = units // 2 * 12
        if units % 2:
            acc ^= int.from_bytes(buf[2 * half:], "little")
        if work is None:
            work = memoryview(bytearray(half))
        out = work[:half]           # may be buf[:half] itself: strxor works element-wise
        strxor(buf[:half], buf[half:2 * half], output=out)
        buf = out
    words, folded = len(buf) // 12, int.from_bytes(buf, "little")
    while words > 1:              # the same halving on an int: word w is bits 96w..96w+95
        half = words // 2
        bits = half * 96
        if words % 2:
            acc ^= folded >> (2 * bits)
            folded &= (1 << (2 * bits)) - 1
        folded = (folded >> bits) ^ (folded & ((1 << bits) - 1))
        words = half
    return (acc ^ folded).to_bytes(12, "little")


_INT_FOLD = 3072     # bytes below which the fold continues on Python ints
