"""The page behind a local server's file link, ``GET /file/HANDLE`` (``megafs mount --local``
prints links of the form ``http://127.0.0.1:PORT/file/HANDLE#KEY``).

The page is static: the key stays in the URL's fragment, which browsers never send.  Its
script asks this server's API for the file (``g`` with the public handle, exactly what any MEGA
client sends), decrypts the name (AES-CBC) and the contents (AES-CTR) with WebCrypto, checks
MEGA's MAC (chunk CBC-MACs folded into the meta-MAC held by the key) and only then offers the
file for download as a blob.  A wrong key, a damaged link, a deleted file or a MAC mismatch is
one clear message and no download.  The answer forbids every other origin and script source
(``Content-Security-Policy``) and sends no referrer.  Nothing here reads a key or a session.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .endpoint import Endpoint, Prepared, StreamEffect

if TYPE_CHECKING:
    from ..app import App
    from .request import Request

HTML_TYPE = "text/html; charset=utf-8"
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                               "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>megafs: shared file</title>
<style>
body { font: 16px/1.5 system-ui, sans-serif; max-width: 40em; margin: 3em auto; padding: 0 1em; }
#status.error { color: #b00020; }
#save { display: inline-block; margin-top: 1em; padding: .5em 1em; border: 1px solid #333;
        border-radius: .3em; text-decoration: none; color: inherit; }
#save[hidden] { display: none; }
small { color: #555; }
</style></head>
<body data-state="loading">
<h1>Shared file</h1>
<p id="status">Fetching and decrypting in this browser&hellip;</p>
<p><a id="save" hidden>Save</a></p>
<p><small>Served by a megafs local server. The key after the # never leaves this browser:
the file is decrypted and its MAC checked here.</small></p>
<script>
"use strict";
const statusLine = document.getElementById("status");
function show(text, state) {
  statusLine.textContent = text;
  statusLine.className = state === "error" ? "error" : "";
  document.body.dataset.state = state;
}
function b64(text) {
  const s = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "==".slice(0, (4 - text.length % 4) % 4));
  return Uint8Array.from(s, c => c.charCodeAt(0));
}
function size(n) {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}
// MEGA MAC chunks: 128 KiB, 256 KiB, ... 1 MiB, then 1 MiB each.
function* chunks(total) {
  let start = 0, i = 1;
  while (start < total) {
    const len = Math.min(Math.min(i, 8) * 131072, total - start);
    yield [start, len];
    start += len; i++;
  }
}
async function cbcLastBlock(key, iv, data) {
  // AES-CBC over data (a multiple of 16 bytes); WebCrypto adds a padding block after it.
  const out = new Uint8Array(await crypto.subtle.encrypt({name: "AES-CBC", iv}, key, data));
  return out.slice(data.length - 16, data.length);
}
async function decryptCbcNoPadding(key, data) {
  // WebCrypto wants PKCS#7 padding: append the block that decrypts to one full padding block.
  const last = data.slice(data.length - 16);
  const pad = new Uint8Array(await crypto.subtle.encrypt({name: "AES-CBC", iv: last}, key,
                                                         new Uint8Array(0)));
  const joined = new Uint8Array(data.length + 16);
  joined.set(data); joined.set(pad, data.length);
  return new Uint8Array(await crypto.subtle.decrypt({name: "AES-CBC", iv: new Uint8Array(16)},
                                                    key, joined));
}
const API_ERRORS = {"-9": "There is no file behind this link: it was deleted, or the link is wrong.",
                    "-11": "Access to this file was refused.",
                    "-17": "The server's transfer quota is used up; try again later.",
                    "-16": "This file is no longer available."};
async function main() {
  if (!window.crypto || !crypto.subtle) {
    return show("This browser cannot decrypt here (no WebCrypto); use `megafs get` with this link.", "error");
  }
  const handle = location.pathname.split("/").filter(Boolean).pop();
  const fragment = decodeURIComponent(location.hash.slice(1));
  if (!/^[A-Za-z0-9_-]{43}$/.test(fragment)) {
    return show("This link has no key or a damaged one (43 characters are expected after the #). Was it cut off?", "error");
  }
  const key = b64(fragment);
  const raw = new Uint8Array(16);
  for (let i = 0; i < 16; i++) raw[i] = key[i] ^ key[i + 16];
  const nonce = key.slice(16, 24), expected = key.slice(24, 32);
  const cbc = await crypto.subtle.importKey("raw", raw, "AES-CBC", false, ["encrypt", "decrypt"]);
  const ctr = await crypto.subtle.importKey("raw", raw, "AES-CTR", false, ["decrypt"]);
  // Only the public handle is sent: the same `g` request any MEGA client makes.
  const reply = await (await fetch("../cs?id=" + Date.now(), {method: "POST",
      headers: {"Content-Type": "text/plain"},
      body: JSON.stringify([{a: "g", p: handle, g: 1, ssl: 0}])})).json();
  const info = Array.isArray(reply) ? reply[0] : reply;
  if (typeof info === "number") {
    return show(API_ERRORS[String(info)] || ("The server answered error " + info + "."), "error");
  }
  if (info.e) return show(API_ERRORS[String(info.e)] || ("The server answered error " + info.e + "."), "error");
  let name;
  try {
    const plain = await decryptCbcNoPadding(cbc, b64(info.at));
    const text = new TextDecoder("utf-8", {fatal: true}).decode(plain);
    if (!text.startsWith('MEGA{"')) throw new Error("not MEGA attributes");
    name = JSON.parse(text.slice(4).replace(/\0+$/, "")).n;
  } catch (err) {
    return show("Wrong key: this link's key does not open the file (was the link changed or cut?). Nothing was downloaded.", "error");
  }
  show("Downloading " + name + " (" + size(info.s) + ") and decrypting it here\u2026", "loading");
  const body = await fetch(info.g);
  if (!body.ok) return show("The download failed (HTTP " + body.status + "); try again later.", "error");
  const cipher = new Uint8Array(await body.arrayBuffer());
  if (cipher.length !== info.s) return show("The download was cut short; try again.", "error");
  const counter = new Uint8Array(16); counter.set(nonce);
  const plain = new Uint8Array(await crypto.subtle.decrypt({name: "AES-CTR", counter, length: 64},
                                                          ctr, cipher));
  // MAC check: CBC-MAC of every chunk (IV nonce||nonce), folded with AES-CBC (zero IV).
  const iv = new Uint8Array(16); iv.set(nonce); iv.set(nonce, 8);
  const macs = [];
  for (const [start, len] of chunks(plain.length)) {
    const block = new Uint8Array(Math.ceil(len / 16) * 16);
    block.set(plain.subarray(start, start + len));
    macs.push(await cbcLastBlock(cbc, iv, block));
  }
  let ok;
  if (macs.length) {
    const joined = new Uint8Array(macs.length * 16);
    macs.forEach((m, i) => joined.set(m, i * 16));
    const mac = await cbcLastBlock(cbc, new Uint8Array(16), joined);
    const meta = new Uint8Array(8);
    for (let i = 0; i < 4; i++) { meta[i] = mac[i] ^ mac[i + 4]; meta[i + 4] = mac[i + 8] ^ mac[i + 12]; }
    ok = meta.every((b, i) => b === expected[i]);
  } else {
    ok = true;                      // an empty file has no chunk to check
  }
  if (!ok) return show("The file does not match its key (MAC check failed): it was damaged or the key is wrong. Nothing was saved.", "error");
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", plain));
  const save = document.getElementById("save");
  save.href = URL.createObjectURL(new Blob([plain]));
  save.download = name;
  save.textContent = "Save " + name + " (" + size(plain.length) + ")";
  save.hidden = false;
  document.body.dataset.sha256 = Array.from(digest, b => b.toString(16).padStart(2, "0")).join("");
  show("Decrypted and verified in this browser: " + name + ", " + size(plain.length) + ".", "ready");
}
main().catch(err => show("Something went wrong: " + err + ". Nothing was downloaded.", "error"));
</script>
</body></html>
"""


class LinkPageEndpoint(Endpoint):
    """``GET /file/HANDLE``: the page above (the handle is read by the page itself)."""

    kind = "linkpage"

    def prepare(self, app: "App", req: "Request") -> Prepared | None:
        req.discard_body()
        return Prepared()

    def serve(self, app: "App", req: "Request", prep: Prepared,
              effect: StreamEffect | None) -> None:
        req.reply(200, PAGE.encode("utf-8"), HTML_TYPE, headers=HEADERS)
