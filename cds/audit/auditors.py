"""Auditor credentials: opaque bearer tokens, stored only as sha256 hashes.

They are deliberately not the EHR clients' credentials: CDS clients present
signed JWTs (their ``iss`` keys), auditors present a random token issued by
``cds audit token``. The tokens file (``CDS_AUDITOR_TOKENS_FILE``) holds one
line per auditor, ``sha256:<hex> <name>``; ``#`` starts a comment. A
bearer value shaped like a JWT is refused outright, so no CDS client token
can ever open the audit API, whatever the file says.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cds.audit.settings import AuditConfigError

_LINE = re.compile(r"^(?:sha256:)?(?P<hash>[0-9a-fA-F]{64})(?:\s+(?P<name>\S.*))?$")
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*$")
TOKEN_PREFIX = "cdsaud_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh token and the line to put in the tokens file (without the name)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, f"sha256:{hash_token(token)}"


def looks_like_jwt(token: str) -> bool:
    return bool(_JWT.match(token))


@dataclass(frozen=True)
class AuditorTokens:
    """Known auditors by token hash."""

    hashes: dict[str, str]

    @classmethod
    def load(cls, path: str | Path) -> AuditorTokens:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise AuditConfigError(f"cannot read auditor tokens file: {exc.strerror}", where=str(path)) from None
        hashes: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            match = _LINE.match(line)
            if not match:
                raise AuditConfigError("expected 'sha256:<64 hex digits> <name>'", where=f"{path}:{number}")
            hashes[match["hash"].lower()] = (match["name"] or f"auditor-{number}").strip()
        return cls(hashes)

    @classmethod
    def of(cls, *tokens: str) -> AuditorTokens:
        """From plain tokens (tests, and tools that hold them in memory)."""
        return cls({hash_token(t): f"auditor-{i}" for i, t in enumerate(tokens, 1)})

    def auditor(self, token: str) -> str | None:
        """The auditor's name for a valid token, else None. Constant time per known hash."""
        if not token or looks_like_jwt(token):
            return None
        digest = hash_token(token)
        found = None
        for known, name in self.hashes.items():
            if hmac.compare_digest(known, digest):
                found = name
        return found
