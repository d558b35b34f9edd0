"""Every known-answer vector in tests/unit/data/mega-vectors.json, computed by independent MEGA
implementations, checked against megafs.crypto / chunks / links."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from megafs import chunks, crypto, sealing
from megafs.api import hashcash, links
from megafs.errors import LinkError

VECTORS = json.loads((Path(__file__).parent / "data" / "mega-vectors.json").read_text())
GROUPS = VECTORS["groups"]


def vectors(group):
    items = GROUPS[group]["vectors"]
    return pytest.mark.parametrize("v", items, ids=[item["id"] for item in items])


def test_every_group_is_covered():
    covered = {"1_base64url_a32", "2_key_wrapping", "3_node_attributes", "4_file_encryption",
               "5_public_links", "6_password_keys", "7_ephemeral_session", "8_hashcash"}
    assert set(GROUPS) == covered


def plaintext(n: int) -> bytes:
    return bytes((i * 7 + 3) % 251 for i in range(n))


@vectors("1_base64url_a32")
def test_base64url_a32(v):
    raw = bytes.fromhex(v["bytes_hex"])
    assert crypto.b64encode(raw) == v["b64"]
    assert crypto.b64decode(v["b64"]) == raw
    words = crypto.bytes_to_a32(raw)
    assert ["%08x" % w for w in words] == v["a32_words_hex"]
    back = crypto.a32_to_bytes(words)
    assert back.hex() == v["a32_bytes_hex"]
    assert crypto.b64encode(back) == v["a32_b64"]


@vectors("2_key_wrapping")
def test_key_wrapping(v):
    mk = bytes.fromhex(v["master_key_hex"])
    key = bytes.fromhex(v["key_hex"])
    wrapped = crypto.wrap_key(key, mk)
    assert wrapped.hex() == v["wrapped_hex"]
    assert crypto.b64encode(wrapped) == v["wrapped_b64"]
    assert crypto.unwrap_key(crypto.b64decode(v["wrapped_b64"]), mk).hex() == v["unwrapped_hex"]


@vectors("3_node_attributes")
def test_node_attributes(v):
    if "key_hex" in v:
        key = bytes.fromhex(v["key_hex"])
    else:  # attr-file-node-key: the attribute key is the XOR-fold of the 32-byte node key
        key = bytes.fromhex(v["node_key_hex"])
        assert crypto.attr_key(key).hex() == v["attribute_key_hex"]
    blob = crypto.b64decode(v["ciphertext_b64"])
    assert crypto.decrypt_attr(blob, key) == v["decrypts_to"]
    if "ciphertext_hex" in v:  # our own serialisation is compact JSON, like megajs and the SDK
        assert crypto.encrypt_attr(v["attributes"], key).hex() == v["ciphertext_hex"]
        assert v["plaintext_padded_hex"].startswith(v["plaintext_utf8"].encode().hex())


def test_attributes_reject_wrong_key_and_garbage():
    v = GROUPS["3_node_attributes"]["vectors"][0]
    blob = crypto.b64decode(v["ciphertext_b64"])
    with pytest.raises(crypto.AttributeError_):
        crypto.decrypt_attr(blob, bytes(16))
    with pytest.raises(crypto.AttributeError_):
        crypto.decrypt_attr(blob[:-1], bytes.fromhex(v["key_hex"]))
    with pytest.raises(crypto.AttributeError_):
        crypto.decrypt_attr(b"", bytes.fromhex(v["key_hex"]))


@vectors("4_file_encryption")
def test_file_encryption(v):
    key = bytes.fromhex(v["aes_key_hex"])
    nonce = bytes.fromhex(v["nonce_hex"])
    data = plaintext(v["size"])
    if v["id"].startswith("ctr-slice"):
        start, end = v["offset_start"], v["offset_end_exclusive"]
        assert data[start:end].hex() == v["plaintext_slice_hex"]
        assert crypto.ctr_crypt(key, nonce, start, data[start:end]).hex() == \
            v["ciphertext_slice_hex"]
        # decrypting from an unaligned offset inside the slice gives the same bytes
        mid = start + 5
        ct = bytes.fromhex(v["ciphertext_slice_hex"])
        assert crypto.ctr_crypt(key, nonce, mid, ct[5:]) == data[mid:end]
        assert start // 16 == v["first_block_index"]
        return
    assert hashlib.sha256(data).hexdigest() == v["plaintext_sha256"]
    spans = list(chunks.spans(v["size"]))
    assert [{"offset": o, "size": n} for o, n in spans] == v["chunks"]
    assert [o for o, _ in spans] == v["chunk_offsets"]
    ciphertext = crypto.ctr_crypt(key, nonce, 0, data)
    assert len(ciphertext) == v["ciphertext_len"]
    assert hashlib.sha256(ciphertext).hexdigest() == v["ciphertext_sha256"]
    assert ciphertext[:32].hex() == v["ciphertext_first32_hex"]
    # chunk by chunk, as the uploader does it
    acc = crypto.MacAccumulator(key)
    macs = []
    pieces = []
    for off, n in reversed(spans):  # out of order on purpose
        ct, mac = crypto.encrypt_chunk(key, nonce, off, data[off:off + n])
        pieces.append((off, ct))
        if n:
            acc.add(off, mac)
            macs.append((off, mac))
    assert b"".join(ct for _, ct in sorted(pieces)) == ciphertext
    ordered = [mac for _, mac in sorted(macs)]
    if v.get("chunk_macs_hex") is not None and "chunk_macs_hex" in v:
        assert [m.hex() for m in ordered] == v["chunk_macs_hex"]
    if v["condensed_mac_hex"] is not None:
        assert crypto.condense_macs(key, ordered).hex() == v["condensed_mac_hex"]
    mm = acc.meta_mac(v["size"])
    assert mm.hex() == v["meta_mac"]["m0_hex"] + v["meta_mac"]["m1_hex"]
    assert crypto.file_meta_mac(key, nonce, data) == mm
    fk = crypto.FileKey(key, nonce, mm)
    packed = fk.pack()
    assert packed.hex() == v["node_key_hex"]
    assert ["%08x" % w for w in crypto.bytes_to_a32(packed)] == v["node_key_words_hex"]
    assert crypto.b64encode(packed) == v["node_key_b64"]
    assert crypto.FileKey.unpack(packed) == fk
    mk = bytes.fromhex(VECTORS["fixed_inputs"]["master_key"]["hex"])
    assert crypto.b64encode(crypto.wrap_key(packed, mk)) == \
        v["node_key_wrapped_under_master_key_b64"]


@vectors("5_public_links")
def test_public_links(v):
    key = crypto.b64decode(v["node_key_b64"])
    assert key.hex() == v["node_key_hex"]
    assert links.format_link(v["public_handle"], key) == v["link_current"]
    assert links.format_legacy_link(v["public_handle"], key) == v["link_legacy"]
    for form in (v["link_current"], v["link_legacy"],
                 v["link_current"].replace("mega.nz", "mega.co.nz"),
                 v["link_legacy"].replace("mega.nz", "mega.co.nz")):
        parsed = links.parse_link(form)
        assert parsed.handle == v["parses_to"]["handle"]
        assert parsed.key_b64 == v["parses_to"]["key_b64"]


@pytest.mark.parametrize("bad", [
    "", "hello", "https://mega.nz/folder/AbCdEfGh#AAAAAAAAAAAAAAAAAAAAAA",
    "https://mega.nz/#F!AbCdEfGh!AAAAAAAAAAAAAAAAAAAAAA", "https://example.com/file/AbCdEfGh#"
    + "A" * 43, "https://mega.nz/file/AbCdEfGh#tooshort", "https://mega.nz/file/AbCdEfGh",
])
def test_bad_links_are_refused(bad):
    with pytest.raises(LinkError):
        links.parse_link(bad)


@vectors("6_password_keys")
def test_password_keys(v):
    pw = bytes.fromhex(v["password_bytes_hex"])
    email = v["email_input"].lower().encode()
    if v["kind"] == "v1":
        pk = crypto.prepare_key_v1(pw)
        assert pk.hex() == v["password_key_hex"]
        assert crypto.b64encode(pk) == v["password_key_b64"]
        assert crypto.stringhash(email, pk) == v["uh"]
        assert v["us_request"]["uh"] == v["uh"]
        if "uh_if_email_were_not_lowercased" in v:
            assert crypto.stringhash(v["email_input"].encode(), pk) == \
                v["uh_if_email_were_not_lowercased"]
    else:
        salt = crypto.b64decode(v["salt_b64"])
        assert salt.hex() == v["salt_hex"]
        pk, auth = crypto.derive_key_v2(pw, salt)
        assert (pk + auth).hex() == v["derived_hex"]
        assert pk.hex() == v["password_key_hex"]
        assert auth.hex() == v["auth_key_hex"]
        assert crypto.b64encode(auth) == v["uh"]


def test_v1_password_longer_than_one_block():
    # Several key blocks take the interleaved path; it must agree with a plain reference loop.
    from Crypto.Cipher import AES
    pw = b"a password that is longer than sixteen bytes"
    padded = pw + bytes(-len(pw) % 16)
    keys = [AES.new(padded[i:i + 16], AES.MODE_ECB) for i in range(0, len(padded), 16)]
    block = bytes.fromhex("93c467e37db0c7a4d1be3f810152cb56")
    for _ in range(0x10000):
        for k in keys:
            block = k.encrypt(block)
    assert crypto.prepare_key_v1(pw) == block


@vectors("7_ephemeral_session")
def test_ephemeral_session(v):
    mk = bytes.fromhex(v["master_key_hex"])
    pk = bytes.fromhex(v["password_key_hex"])
    ssc = bytes.fromhex(v["ssc_hex"])
    assert crypto.b64encode(crypto.wrap_key(mk, pk)) == v["up_request"]["k"]
    ts = crypto.make_ts(mk, ssc)
    assert ts.hex() == v["ts_hex"]
    assert crypto.b64encode(ts) == v["up_request"]["ts"]
    uh = v["up_response_user_handle"]
    tsid = crypto.b64decode(v["us_response"]["tsid"])
    assert tsid == ts[:16] + uh.encode() + ts[16:]
    assert len(tsid) == v["tsid_len"]
    recovered = crypto.unwrap_key(crypto.b64decode(v["us_response"]["k"]), pk)
    assert recovered.hex() == v["master_key_recovered_hex"]
    assert crypto.check_tsid(tsid, recovered, uh) is v["client_check_accepts"]
    assert v["sid_after_login"] == v["us_response"]["tsid"]
    for bad in v["tampered_tsids"]:
        assert crypto.check_tsid(crypto.b64decode(bad["tsid_b64"]), recovered, uh) is \
            bad["accepted"]
    assert not crypto.check_tsid(tsid, recovered, "XXXXXXXXXXX")


@vectors("8_hashcash")
def test_hashcash(v):
    easiness, token_b64, token = crypto.parse_hashcash_challenge(v["challenge_header"])
    assert easiness == v["easiness"]
    assert token.hex() == v["token_hex"]
    assert crypto.hashcash_solve(v["challenge_header"]) == v["solution_header"]
    for workers in (1, 2, 3):   # the parallel solver finds the same, smallest answer
        assert hashcash.solve(v["challenge_header"], workers=workers)[0] == v["solution_header"]
    answer_token, prefix = crypto.parse_hashcash_answer(v["solution_header"])
    assert answer_token == v["token_b64"]
    assert prefix.hex() == v["prefix_hex"]
    assert crypto.hashcash_check(token, easiness, prefix) is v["valid"]
    for bad in v["invalid_prefixes"]:
        assert crypto.hashcash_check(token, easiness, bytes.fromhex(bad["prefix_hex"])) is \
            bad["valid"]


@pytest.fixture(params=["openssl", "pycryptodome"])
def mac_backend(request, monkeypatch):
    """Run a test with OpenSSL's CBC (when installed) and with pycryptodome's alone."""
    if request.param == "pycryptodome":
        monkeypatch.setattr(crypto, "_OsslCipher", None)
    elif crypto._OsslCipher is None:
        pytest.skip("cryptography (OpenSSL) is not installed")
    return request.param


@vectors("4_file_encryption")
@pytest.mark.parametrize("parallel", [True, False], ids=["every-core", "one-thread"])
def test_parallel_seal_and_macs_match_the_vectors(v, parallel, mac_backend):
    """seal_chunks / chunk_macs (the uploader's and the read path's forms, one span cut on
    chunk boundaries as the uploader and the read cache cut them) give the vectors' chunk
    MACs, meta-MAC and ciphertext, on every core and on one thread, with either backend."""
    if v["id"].startswith("ctr-slice"):
        return
    key = bytes.fromhex(v["aes_key_hex"])
    nonce = bytes.fromhex(v["nonce_hex"])
    data = plaintext(v["size"])
    for target in (chunks.MIB, 4 * chunks.MIB, 1 << 40):
        acc = crypto.MacAccumulator(key)
        sealed = bytearray(data)
        for off, n in chunks.groups(len(data), target) if data else []:
            plain = memoryview(data)[off:off + n]
            macs = sealing.chunk_macs(key, nonce, off, plain, parallel=parallel)
            view = memoryview(sealed)[off:off + n]
            assert sealing.seal_chunks(key, nonce, off, view, parallel=parallel) == macs
            assert [o for o, _ in macs] == [o for o, _ in chunks.spans(len(data))
                                            if off <= o < off + n]
            for o, mac in macs:
                acc.add(o, mac)
        assert hashlib.sha256(sealed).hexdigest() == v["ciphertext_sha256"]
        if data:
            assert acc.meta_mac(v["size"]).hex() == \
                v["meta_mac"]["m0_hex"] + v["meta_mac"]["m1_hex"]
        if v.get("chunk_macs_hex") is not None:
            assert [m.hex() for _o, m in sorted(acc._macs.items())] == v["chunk_macs_hex"]


def test_parallel_helpers_refuse_a_span_off_the_chunk_boundaries():
    with pytest.raises(ValueError):
        sealing.chunk_macs(bytes(16), bytes(8), 5, memoryview(bytes(32)))
    with pytest.raises(ValueError):
        sealing.seal_chunks(bytes(16), bytes(8), chunks.SEGMENT + 16, memoryview(bytearray(32)))


@pytest.mark.parametrize("size", [1, 15, 16, 17, 131072, 131073, 300000, 5 << 20])
def test_openssl_and_pycryptodome_chunk_macs_agree(size, monkeypatch):
    if crypto._OsslCipher is None:
        pytest.skip("cryptography (OpenSSL) is not installed")
    key, nonce = hashlib.sha256(b"k").digest()[:16], hashlib.sha256(b"n").digest()[:8]
    data = plaintext(size)
    fast = [crypto.chunk_mac(key, nonce, data, scratch) for scratch in
            (None, bytearray(16), bytearray(31), bytearray(32), bytearray(1000))]
    monkeypatch.setattr(crypto, "_OsslCipher", None)
    assert fast == [crypto.chunk_mac(key, nonce, data)] * len(fast)
