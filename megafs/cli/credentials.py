"""Where the account commands get secrets from the user: the password (``--password-file``,
``$MEGAFS_PASSWORD`` or a prompt on a terminal; never the command line, which other users can
read), the two-factor code (``--mfa-code`` or a prompt), and ``terminal_reauth``, the hook that
renews a session the server has ended by asking for the password again.  Prints nothing
secret.
"""
from __future__ import annotations

import getpass
import os
import sys

from ..api import account
from ..api.session import Reauth, Session
from ..api.transport import Transport
from ..errors import MegafsError

ENV_PASSWORD = "MEGAFS_PASSWORD"


def read_password(email: str, password_file: str | None = None, *,
                  twice: bool = False) -> str:
    """From the file, the environment or a prompt (MegafsError when none is possible)."""
    if password_file:
        try:
            with open(password_file, encoding="utf-8") as handle:
                password = handle.readline().rstrip("\r\n")
        except OSError as exc:
            raise MegafsError("cannot read the password file %s: %s"
                              % (password_file, exc.strerror)) from None
    elif os.environ.get(ENV_PASSWORD):
        password = os.environ[ENV_PASSWORD]
    elif sys.stdin.isatty():
        password = getpass.getpass("Password for %s: " % email)
        if twice and getpass.getpass("Password again: ") != password:
            raise MegafsError("the two passwords differ")
    else:
        raise MegafsError("no password: give --password-file FILE or set $%s (there is no "
                          "terminal to ask on)" % ENV_PASSWORD)
    if not password:
        raise MegafsError("the password is empty")
    return password


def mfa_source(code: str | None) -> account.MfaSource:
    def ask() -> str | None:
        if code:
            return code
        if sys.stdin.isatty():
            return input("Two-factor code (6 digits): ")
        return None
    return ask


def terminal_reauth(password_file: str | None = None) -> Reauth | None:
    """A ``Reauth`` that asks for the password again (terminal or $MEGAFS_PASSWORD), or None
    when neither is there (the client then fails with a line saying to log in)."""
    if not (password_file or os.environ.get(ENV_PASSWORD) or sys.stdin.isatty()):
        return None

    def reauth(old: Session) -> Session:
        assert old.email is not None
        print("megafs: the session of %s has ended; logging in again" % old.email,
              file=sys.stderr, flush=True)
        password = read_password(old.email, password_file)
        transport = Transport(old.api)
        try:
            return account.login(transport, old.email, password, mfa=mfa_source(None))
        finally:
            transport.close()
    return reauth
