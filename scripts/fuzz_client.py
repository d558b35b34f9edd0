"""A bounded fuzz run of the megafs client against a hostile server (issue 20, Proof).

``megafs get`` runs in this process against a fake MEGA API on 127.0.0.1
(tests/helpers/hostile.py) whose ``g`` answers, whole ``/cs`` bodies and transfer answers are
mutated at random (sizes, URLs, attributes, names, nesting, encodings, statuses, bodies);
``megafs upload`` runs against the real local server behind the corrupting stand-in
(tests/helpers/corrupt_proxy.py) whose ``u``/``p``/``l``/``f`` answers are mutated the same way.
Loopback only; bounded by ``--cases`` and ``--seconds``; seeded (``--seed``) so a failure
can be replayed.

Every case must end as the project promises: exit 0 or 1, never a traceback or an exception
out of ``main``, never longer than ``--case-seconds``; on exit 1 the last stderr line starts
with ``megafs COMMAND:``; nothing on stderr holds raw control characters or bidi overrides; no
``.megafs-part`` file is left; ``get`` exits 0 only with the exact plaintext of the link's key
(else no output file), and ``upload`` prints only well-formed links.  Peak memory is reported.

Prints one line:  fuzz-client: cases=.. get=.. upload=.. requests=.. failures=.. seconds=..
and one line per failure (case number, kind, mutation).  Exit status 1 if any case failed.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers.corrupt_proxy import CorruptProxy  # noqa: E402
from helpers.hostile import HostileApi, encrypt_raw_attrs  # noqa: E402
from helpers.server import ServerProcess  # noqa: E402
from megafs import crypto  # noqa: E402
from megafs.cli.main import main  # noqa: E402

UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
LINK = re.compile(r"^https://mega\.nz/file/[A-Za-z0-9_-]{8}#[A-Za-z0-9_-]{43}$")


class Hang(Exception):
    pass


# --- mutations --------------------------------------------------------------------------------
def junk_value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON-able value a broken server might send."""
    pick = rng.randrange(14)
    if pick == 0:
        return rng.choice([-1, -3, -9, -15, -17, 0, 1, 2 ** 31, 2 ** 53, 2 ** 62, 10 ** 30])
    if pick == 1:
        return rng.choice([0.5, -0.0, 1e308])
    if pick == 2:
        return rng.choice([True, False, None])
    if pick == 3:
        return rng.choice(["", "x", "AAAAAAAA", "AAAA\nhttps://evil.example/", "\ud800",
                           "\x1b[2J", "\u202eevil", "http://127.0.0.1:1/", "javascript:x",
                           "A" * 100000])
    if pick == 4 and depth < 3:
        return [junk_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if pick == 5 and depth < 3:
        return {rng.choice(["g", "s", "at", "e", "err", "f", "h", "p", "ph", "d", "tl"]):
                junk_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    if pick == 6:
        return {"err": rng.choice([-1, -3, -9, -11, -14, -15, -16, -17, -18])}
    return rng.randrange(-30, 3)


def raw_body(rng: random.Random) -> bytes:
    """A whole reply body that is not a well-formed answer."""
    return rng.choice([
        b"", b"[", b"]", b"[[[[", b"[" * 100000, b"{" * 100000, b'"\\ud800"', b"\xff\xfe",
        b"\xef\xbb\xbf[]", b"-3", b"-15", b"[-9]", b"[{}]", b"[[],[]]", b"null", b"1e999999",
        b'[{"g":"http://127.0.0.1:1/x","s":' + b"9" * 5000 + b"}]",
        b'[' + b'{"a":' * 50000 + b'1' + b'}' * 50000 + b']',
        json.dumps([[junk_value(rng)]]).encode(), bytes(rng.randrange(256) for _ in range(64)),
    ])


def attr_mutation(rng: random.Random, api: HostileApi) -> str:
    pick = rng.randrange(8)
    if pick == 0:
        api.raw_attrs = rng.choice([b'{"n":' + b"[" * 100000, b'{"n":"\\ud800x"}', b'{"n":1}',
                                    b'{"n":"a"', b"{}", b'{"n":"' + b"\xff" * 8 + b'"}',
                                    b'{"n":"x"}' + b"\x01" * 40])
        return "raw attrs"
    if pick == 1:
        api.attrs = {"n": rng.choice([".bashrc", "..", ".", "/etc/passwd", "a/../../b",
                                      "\x1b]0;owned\x07", "rtlo\u202egpj.exe", "line\nbreak",
                                      "\x00nul", "x" * 400, "é" * 200, "\ud800", " ", "con"])}
        return "name %r" % api.attrs["n"]
    if pick == 2:
        api.g = {"at": rng.choice(["", "!!!", "AAAA", crypto.b64encode(os.urandom(48)),
                                   encrypt_raw_attrs(b'{"n":"x"}', bytes(32))])}
        return "at %r" % api.g["at"][:20]
    return "none"


def g_mutation(rng: random.Random, api: HostileApi) -> str:
    pick = rng.randrange(10)
    if pick < 4:
        field = rng.choice(["g", "s", "at", "e", "d", "tl", "fa", "msd"])
        value = junk_value(rng)
        api.g = {field: value}
        return "g.%s=%s" % (field, repr(value)[:40])
    if pick < 6:
        value = junk_value(rng)
        api.g = lambda command: value
        return "g reply=%s" % repr(value)[:40]
    if pick < 8:
        api.body = raw_body(rng)
        return "cs body=%r" % api.body[:40]
    if pick == 8:
        api.padding = rng.choice([1, 65 * 2 ** 20])
        return "padding %d" % api.padding
    api.g = {"s": rng.choice([0, 1, len(api.plaintext) - 1, len(api.plaintext) + 1,
                              2 ** 40, 2 ** 53 - 1])}
    return "size %d" % api.g["s"]


def transfer_mutation(rng: random.Random, api: HostileApi) -> str:
    pick = rng.randrange(9)
    if pick == 0:
        status = rng.choice([200, 206, 302, 400, 403, 404, 410, 429, 500, 503, 509])
        headers = {"X-MEGA-Time-Left": rng.choice(["", "5", "-1", "x" * 50])}
        api.transfer = lambda first, last, data: (status, headers, b"")
        return "transfer status %d" % status
    if pick == 1:
        spot = rng.randrange(max(1, len(api.plaintext)))

        def flip(first: int, last: int, data: bytes) -> tuple[int, dict, bytes]:
            body = bytearray(data)
            if first <= spot <= last:
                body[spot - first] ^= 1
            return 200, {}, bytes(body)
        api.transfer = flip
        return "flip byte %d" % spot
    if pick == 2:
        api.transfer = lambda first, last, data: (200, {}, data[:-1])
        return "short body"
    if pick == 3:
        api.transfer = lambda first, last, data: (200, {}, data + b"extra")
        return "long body"
    if pick == 4:
        api.transfer = lambda first, last, data: (
            200, {"Content-Length": str(len(data) + 100)}, data)
        return "lying length"
    if pick == 5:
        body = rng.choice([b"-3", b"-4", b"-8", b"-14", b"-17", b"-9999", b"-"])
        api.transfer = lambda first, last, data: (200, {}, body)
        return "error body %r" % body
    if pick == 6:
        api.transfer = lambda first, last, data: (200, {"Content-Length": "abc"}, data)
        return "bad length header"
    return "none"


# --- one case ---------------------------------------------------------------------------------
SHOW = False       # --only: print each case's stderr


def run_main(argv: list[str], seconds: float) -> tuple[int, str, str]:
    """``megafs ARGV`` in this process: (exit status, stdout, stderr); Hang after ``seconds``."""
    out, err = io.StringIO(), io.StringIO()

    def alarm(signum: int, frame: Any) -> None:
        raise Hang("more than %.0f s" % seconds)
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if SHOW:
            print("argv: %s\nstderr: %s" % (argv, err.getvalue()[-3000:]))
    return int(code), out.getvalue(), err.getvalue()


def check_output(command: str, code: int, out: str, err: str) -> list[str]:
    problems = []
    if code not in (0, 1):
        problems.append("exit %d" % code)
    if "Traceback" in err:
        problems.append("traceback")
    if UNSAFE.search(err.replace("\n", "")):
        problems.append("raw control characters on stderr")
    lines = err.strip().splitlines()
    if code == 1 and (not lines or not lines[-1].startswith("megafs %s: " % command)):
        problems.append("no one-line error")
    if command == "upload" and any(not LINK.match(line) for line in out.splitlines()):
        problems.append("printed something that is not a link: %r" % out[:80])
    return problems


def get_case(rng: random.Random, work: Path, seconds: float) -> tuple[list[str], str, int]:
    size = rng.choice([0, 1, 1000, 300000, 1048576 + 7])
    api = HostileApi(os.urandom(size))
    if size == 0:
        api.key = api.key.with_mac(bytes(8))
    what = [attr_mutation(rng, api)]
    for mutate in (g_mutation, transfer_mutation):
        if rng.random() < 0.6:
            what.append(mutate(rng, api))
    out_dir = work / "get"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir()
    os.chdir(out_dir)
    # (past the transfer quota `get` waits the time the server names, up to hours, by design)
    argv = ["get", api.link, "--api", api.url, "--no-wait-quota"]
    target = None
    if rng.random() < 0.5:
        target = out_dir / "out.bin"
        argv += ["-o", str(target)]
    if rng.random() < 0.2:
        argv.append("--force")
    with api:
        try:
            code, out, err = run_main(argv, seconds)
        except Hang as exc:
            return ["hang (%s)" % exc], "; ".join(what), api.requests + api.transfers
        except BaseException as exc:  # noqa: B902 - what the fuzzer looks for
            return ["exception %s: %s" % (type(exc).__name__, str(exc)[:100])], \
                "; ".join(what), api.requests + api.transfers
    problems = check_output("get", code, out, err)
    left = sorted(p.name for p in out_dir.iterdir())
    if any(name.endswith(".megafs-part") for name in left):
        problems.append("part file left")
    if code == 0:
        written = [p for p in out_dir.iterdir() if not p.name.endswith(".megafs-part")]
        if len(written) != 1 or written[0].read_bytes() != api.plaintext:
            problems.append("exit 0 without the exact plaintext")
    elif left:
        problems.append("files left after a failure: %s" % left[:3])
    return problems, "; ".join(what), api.requests + api.transfers


def upload_mutation(rng: random.Random) -> tuple[str, str, Callable[[Any], Any] | None,
                                                 bytes | None]:
    command = rng.choice(["u", "p", "l", "f"])
    if rng.random() < 0.4:
        body = raw_body(rng)
        return command, "%s body=%r" % (command, body[:40]), None, body
    value = junk_value(rng)

    def rewrite(batch: Any) -> Any:
        if not isinstance(batch, list):
            return batch
        return [value if rng.random() < 0.7 else item for item in batch]
    return command, "%s reply=%s" % (command, repr(value)[:40]), rewrite, None


def upload_case(rng: random.Random, work: Path, proxy: CorruptProxy, state: Path,
                seconds: float) -> tuple[list[str], str]:
    command, what, rewrite, body = upload_mutation(rng)
    src = work / "up.bin"
    src.write_bytes(os.urandom(rng.choice([0, 10, 200000])))
    proxy.clear()
    proxy.corrupt("cs", command, rewrite=rewrite, body=body, count=rng.choice([1, 3, None]))
    os.chdir(work)
    try:
        code, out, err = run_main(["upload", str(src), "--api", proxy.url, "--state-dir",
                                   str(state)], seconds)
    except Hang as exc:
        return ["hang (%s)" % exc], what
    except BaseException as exc:  # noqa: B902
        return ["exception %s: %s" % (type(exc).__name__, str(exc)[:100])], what
    finally:
        proxy.clear()
    return check_output("upload", code, out, err), what


# --- the run ----------------------------------------------------------------------------------
def main_fuzz(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=400, help="most cases to run (400)")
    parser.add_argument("--seconds", type=float, default=300.0, help="time budget (300 s)")
    parser.add_argument("--case-seconds", type=float, default=30.0,
                        help="longest a case may take (30 s)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--upload-share", type=float, default=0.25,
                        help="part of the cases that fuzz upload (0.25)")
    parser.add_argument("--only", type=int, default=None,
                        help="replay this one case (with --seed) and show its stderr")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    global SHOW
    SHOW = args.only is not None
    os.environ["MEGAFS_RETRY_SECONDS"] = "2"
    work = Path(tempfile.mkdtemp(prefix="megafs-fuzz-client."))
    started = time.monotonic()
    counts = {"get": 0, "upload": 0, "requests": 0}
    failures: list[str] = []
    server = ServerProcess(work / "server-data").start()
    here = os.getcwd()
    try:
        with CorruptProxy(server.url) as proxy:
            setattr(proxy.server, "handle_error", lambda *a: None)   # clients hang up on it
            state = work / "state"
            cases = range(args.cases) if args.only is None else [args.only]
            for case in cases:
                if time.monotonic() - started > args.seconds:
                    break
                rng = random.Random("%d-%d" % (seed, case))
                if rng.random() < args.upload_share:
                    before = proxy.hits
                    problems, what = upload_case(rng, work, proxy, state, args.case_seconds)
                    counts["upload"] += 1
                    counts["requests"] += max(1, proxy.hits - before)
                    kind = "upload"
                else:
                    problems, what, requests = get_case(rng, work, args.case_seconds)
                    counts["get"] += 1
                    counts["requests"] += requests
                    kind = "get"
                if problems:
                    failures.append("case %d (%s; seed %d): %s [%s]"
                                    % (case, kind, seed, ", ".join(problems), what))
    finally:
        os.chdir(here)
        server.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    for line in failures:
        print(line)
    print("fuzz-client: cases=%d get=%d upload=%d requests=%d failures=%d peak-rss=%dMiB "
          "seed=%d seconds=%.0f" % (counts["get"] + counts["upload"], counts["get"],
                                    counts["upload"], counts["requests"], len(failures), peak,
                                    seed, time.monotonic() - started))
    if not failures:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("fuzz-client: work dir (server log) kept in %s" % work)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main_fuzz())
