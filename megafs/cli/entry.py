"""The ``megafs`` console entry point, kept tiny: Ctrl-C while Python is still importing the
command's modules (the first ~0.2 s) exits 130 with one line instead of a
``KeyboardInterrupt`` traceback (issue 24).  Once ``cli.main`` is imported, Python's normal
``KeyboardInterrupt`` is back and ``main`` turns it into its own one-line answer."""
from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_starting(signum: int, frame: object) -> None:
    os.write(2, b"\nmegafs: interrupted\n")
    os._exit(130)


# Set when this module is imported (only the console script and ``python -m megafs`` import
# it), not when main() is called: a signal between the two was still a traceback.
_QUIET = signal.getsignal(signal.SIGINT) is signal.default_int_handler
if _QUIET:
    signal.signal(signal.SIGINT, _interrupted_while_starting)


def main() -> None:
    """Run ``megafs`` with ``sys.argv``; exits with its status."""
    from .main import main as run
    if _QUIET:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(run())
