"""What libfuse prints on stderr while it mounts (``megafs mount``): caught, so that a failed
mount is reported in libfuse's own words in the one-line error."""
from __future__ import annotations

import os
import sys
import tempfile
import threading


class LibfuseMessages:
    """Catch what libfuse prints on stderr (fd 2) while it mounts, so a failure is reported in
    its words; once the mount is live (``release``), stderr is restored and the text
    passed on."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()
        self.saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(self.file.fileno(), 2)
        self.lock = threading.Lock()
        self.released = False

    def release(self) -> str:
        with self.lock:
            if self.released:
                return ""
            self.released = True
            sys.stderr.flush()
            os.dup2(self.saved, 2)
            os.close(self.saved)
            self.file.seek(0)
            text = self.file.read().decode(errors="replace")
            self.file.close()
        if text:
            os.write(2, text.encode())
        return text


def libfuse_reason(text: str) -> str:
    """The last line libfuse printed about fuse (not our own INFO/DEBUG log lines)."""
    lines = [ln.strip() for ln in text.splitlines()
             if "fuse" in ln.lower() and " INFO " not in ln and " DEBUG " not in ln]
    return lines[-1] if lines else "no reason given"
