"""Drive the independent third-party MEGA client ``async-mega-py`` (PyPI, pinned 2.5.0) against
a MEGA API URL.  Runs inside ``.venv-thirdparty`` (``$MEGAFS_THIRDPARTY_PYTHON``), never imports
megafs, and uses only the library's public client API:

    python driver.py API_URL WORKDIR FILE [FILE...]

For each FILE: anonymous login (``up`` + ``us``, solving an X-Hashcash challenge if the server
sends one), upload into the Cloud Drive, export a public link, then, with a second, logged-out
client, download that link into WORKDIR/<index>/ with the library's own meta-MAC check.
Prints one JSON object: {"files": [{"name", "link", "handle", "downloaded"}...]}; exits non-zero
with the error on stderr if anything fails.

    python driver.py --folder API_URL WORKDIR FOLDERLINK

downloads every file of a folder link into WORKDIR (paths inside the folder kept) and prints
{"downloaded": [relative paths]}.

    python driver.py --account API_URL WORKDIR EMAIL [FILE...]

logs in to a full account with EMAIL and the password in ``$DRIVER_PASSWORD`` (the library's
``login(email, password)``: ``us0``, v2 key derivation, ``us``, the RSA ``csid``), downloads
every file of its Cloud Drive into WORKDIR/<name> with the library's MAC check, then uploads
each FILE, and prints {"user", "listed": [names before the uploads], "downloaded": {name:
path}, "uploaded": [names]}.

Pointing the library at our server: MegaAPI has no constructor option for the API host; its
entry point is the class attribute ``MegaAPI._entrypoint`` (``https://g.api.mega.co.nz/cs``),
so we set that one attribute and nothing else.  Upload and download URLs come from the server's
``u`` and ``g`` answers, as with the real service.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import yarl
from mega.api import MegaAPI
from mega.client import MegaNzClient


async def run(api_url: str, workdir: Path, files: list[Path]) -> dict:
    MegaAPI._entrypoint = yarl.URL(api_url.rstrip("/") + "/cs")
    results = []
    async with MegaNzClient() as uploader:
        await uploader.login()  # no email/password: anonymous ephemeral account
        for path in files:
            node = await uploader.upload(path)
            link = await uploader.export(node)
            results.append({"name": path.name, "handle": node.id, "link": link})
        listing = await uploader.get_filesystem(force=True)
        names = sorted(n.attributes.name for n in listing if n.is_file)
    async with MegaNzClient() as downloader:   # not logged in: a stranger with the link
        for index, item in enumerate(results):
            target = workdir / str(index)
            target.mkdir(parents=True, exist_ok=True)
            outcome = await downloader.download_url(item["link"], target)
            if outcome.fails:
                error = next(iter(outcome.fails.values()))
                raise RuntimeError("download of %s failed: %r" % (item["name"], error))
            item["downloaded"] = str(next(iter(outcome.success.values())))
    return {"files": results, "listed": names}


async def run_account(api_url: str, workdir: Path, email: str, files: list[Path]) -> dict:
    MegaAPI._entrypoint = yarl.URL(api_url.rstrip("/") + "/cs")
    async with MegaNzClient() as client:
        await client.login(email, os.environ["DRIVER_PASSWORD"])
        user = await client.get_user()
        listing = await client.get_filesystem(force=True)
        nodes = [n for n in listing if n.is_file]
        downloaded = {}
        for node in nodes:
            target = workdir / node.attributes.name
            target.mkdir(parents=True, exist_ok=True)
            downloaded[node.attributes.name] = str(await client.download(node, target))
        for path in files:
            await client.upload(path)
    return {"user": user.get("u"), "listed": sorted(n.attributes.name for n in nodes),
            "downloaded": downloaded, "uploaded": [p.name for p in files]}


async def run_folder(api_url: str, workdir: Path, link: str) -> dict:
    """A stranger downloads a whole folder link (the library's ``download_url``: ``f`` and
    ``g`` in an ``n=`` session, its own key handling and meta-MAC check)."""
    MegaAPI._entrypoint = yarl.URL(api_url.rstrip("/") + "/cs")
    async with MegaNzClient() as client:
        outcome = await client.download_url(link, workdir)
    if outcome.fails:
        error = next(iter(outcome.fails.values()))
        raise RuntimeError("folder download failed: %r" % (error,))
    return {"downloaded": sorted(str(Path(p).relative_to(workdir))
                                 for p in outcome.success.values())}


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--folder":
        result = asyncio.run(run_folder(sys.argv[2], Path(sys.argv[3]), sys.argv[4]))
        print(json.dumps(result))
        return 0
    if len(sys.argv) >= 5 and sys.argv[1] == "--account":
        result = asyncio.run(run_account(sys.argv[2], Path(sys.argv[3]), sys.argv[4],
                                         [Path(p) for p in sys.argv[5:]]))
        print(json.dumps(result))
        return 0
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    api_url, workdir = sys.argv[1], Path(sys.argv[2])
    files = [Path(p) for p in sys.argv[3:]]
    result = asyncio.run(run(api_url, workdir, files))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
