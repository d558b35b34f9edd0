"""Log checks for the processes a test starts (as S3QL's ``pytest_checklogs`` does).

Every server and mount started through ``helpers.server``/``helpers.mount`` registers its log
file here (with the offset where this run's lines begin).  After each test the autouse fixture
in ``tests/conftest.py`` fails the test if any of those logs has a WARNING or ERROR line or a
traceback that the test did not declare with ``@pytest.mark.log_ok("substring", ...)`` (on the
test or its module).
"""
from __future__ import annotations

import os
from pathlib import Path

STARTED: list[tuple[Path, int]] = []


def watch(path: Path) -> None:
    """Check ``path`` from its current end after the test."""
    try:
        offset = os.path.getsize(path)
    except OSError:
        offset = 0
    STARTED.append((Path(path), offset))


def problems(allowed: tuple[str, ...]) -> list[str]:
    """WARNING/ERROR/traceback lines written since ``watch`` that no ``allowed`` covers."""
    out = []
    for path, offset in STARTED:
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            continue
        for line in text.splitlines():
            if (" WARNING " in line or " ERROR " in line or "Traceback" in line
                    or " CRITICAL " in line):
                if not any(a in line for a in allowed):
                    out.append("%s: %s" % (path.name, line[:300]))
    return out
