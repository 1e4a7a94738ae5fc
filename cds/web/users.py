"""Who may sign in to the web pages: a users file of password hashes and roles.

The file (``CDS_WEB_USERS_FILE``) holds one line per person::

    <username> <role>[,<role>] <werkzeug password hash>

roles are ``clinician`` and ``auditor``; ``#`` starts a comment. Only hashes
are stored (scrypt or pbkdf2, as ``werkzeug.security`` writes them), so the
file can be read by the service account without exposing a password.
Make a line with ``python -m cds.web.users NAME --role clinician`` (it asks
for the password twice). No Flask here.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

from cds.errors import CdsError

ROLES = ("clinician", "auditor")
#: usernames become a FHIR id (Practitioner/<username>), so they are held to its alphabet.
_USERNAME = re.compile(r"^[A-Za-z0-9.-]{1,64}$")
_HASH = re.compile(r"^(scrypt|pbkdf2):\S+\$\S+\$[0-9a-f]+$")
MIN_PASSWORD = 12


class UsersFileError(CdsError):
    """The users file cannot be read or a line is wrong; the service does not start."""


@dataclass(frozen=True)
class WebUser:
    name: str
    roles: frozenset[str]

    @property
    def practitioner(self) -> str:
        """The CDS Hooks ``userId`` this person evaluates as."""
        return f"Practitioner/{self.name}"

    def has(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class Users:
    """Known people by name, with their password hashes."""

    entries: dict[str, tuple[str, frozenset[str]]]

    @classmethod
    def load(cls, path: str | Path) -> Users:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsersFileError(f"cannot read the web users file: {exc.strerror}", where=str(path)) from None
        entries: dict[str, tuple[str, frozenset[str]]] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            where = f"{path}:{number}"
            if len(parts) != 3:
                raise UsersFileError("expected '<username> <role>[,<role>] <password hash>'", where=where)
            name, role_text, hashed = parts
            roles = frozenset(r for r in role_text.split(",") if r)
            if not _USERNAME.match(name):
                raise UsersFileError("a username is 1-64 letters, digits, '.' or '-'", where=where)
            if not roles or not roles <= set(ROLES):
                raise UsersFileError(f"roles must be among {', '.join(ROLES)}", where=where)
            if not _HASH.match(hashed):
                raise UsersFileError("not a scrypt or pbkdf2 password hash (make one with "
                                     "`python -m cds.web.users NAME --role ROLE`)", where=where)
            if name in entries:
                raise UsersFileError(f"user {name!r} appears twice", where=where)
            entries[name] = (hashed, roles)
        return cls(entries)

    def authenticate(self, name: str, password: str) -> WebUser | None:
        """The user when the password matches, else None (same work either way)."""
        entry = self.entries.get(name)
        # An unknown name still costs one hash check, so timing does not tell
        # which names exist.
        hashed, roles = entry if entry is not None else (_DUMMY_HASH, frozenset())
        ok = check_password_hash(hashed, password)
        if entry is None or not ok:
            return None
        return WebUser(name, roles)

    def get(self, name: str) -> WebUser | None:
        entry = self.entries.get(name)
        return WebUser(name, entry[1]) if entry is not None else None


_DUMMY_HASH = generate_password_hash("not a password of anyone", method="scrypt")


def line_for(name: str, roles: list[str], password: str) -> str:
    """One users-file line for a new password."""
    if not _USERNAME.match(name):
        raise UsersFileError("a username is 1-64 letters, digits, '.' or '-'", where="NAME")
    if not roles or not set(roles) <= set(ROLES):
        raise UsersFileError(f"roles must be among {', '.join(ROLES)}", where="--role")
    if len(password) < MIN_PASSWORD:
        raise UsersFileError(f"a password has at least {MIN_PASSWORD} characters", where="password")
    return f"{name} {','.join(sorted(set(roles)))} {generate_password_hash(password, method='scrypt')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cds.web.users",
                                     description="Print a line for CDS_WEB_USERS_FILE (the password is asked, "
                                                 "never taken from the command line).")
    parser.add_argument("name")
    parser.add_argument("--role", action="append", choices=ROLES, required=True,
                        help="clinician or auditor; repeat for both")
    args = parser.parse_args(argv)
    password = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != password:
        print("the two passwords differ", file=sys.stderr)
        return 2
    try:
        print(line_for(args.name, args.role, password))
    except UsersFileError as exc:
        print(exc.diagnostics, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
