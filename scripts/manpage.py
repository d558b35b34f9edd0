"""Generate megafs/cli/megafs.1 from megafs' argument parser with argparse-manpage (issue 24),
so the manual always lists the commands and options that `megafs --help` shows.

    .venv/bin/python scripts/manpage.py           # rewrite megafs/cli/megafs.1
    .venv/bin/python scripts/manpage.py --check   # exit 1 if megafs/cli/megafs.1 is out of date

setup.cfg installs megafs/cli/megafs.1 as share/man/man1/megafs.1 (`man megafs` in a virtualenv
with MANPATH including it, or system-wide after `pip install` as root).
tests/unit/test_conventions.py runs --check.
"""
from __future__ import annotations

import os
import sys

from argparse_manpage.manpage import Manpage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "megafs", "cli", "megafs.1")
DATE = "2026-12-07"         # the page's date: bump when regenerating for a release


def render() -> str:
    """The man page text (roff) for the parser of the megafs in this tree."""
    sys.path.insert(0, ROOT)
    from megafs import __version__
    from megafs.cli.main import build_parser

    os.environ["COLUMNS"] = "100"       # argparse wraps usage lines to the terminal's width
    parser = build_parser()
    data = {"project_name": "megafs", "prog": "megafs", "version": __version__,
            "manual_title": "megafs manual", "manual_section": "1", "date": DATE,
            "description": "mount the MEGA Cloud Drive as a folder, with public links",
            "url": "https://mega.nz/"}
    return str(Manpage(parser, _data=data, format="single-commands-section"))


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        try:
            with open(PAGE) as fh:
                same = fh.read() == text
        except OSError:
            same = False
        if not same:
            print("megafs/cli/megafs.1 is out of date: run `python scripts/manpage.py`",
                  file=sys.stderr)
            return 1
        return 0
    os.makedirs(os.path.dirname(PAGE), exist_ok=True)
    with open(PAGE, "w") as fh:
        fh.write(text)
    print("wrote %s" % PAGE, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
