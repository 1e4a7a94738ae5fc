"""Canonical JSON and the hash chain arithmetic; no I/O.

A record's hash is ``sha256(prev_hash + "\\n" + canonical_json(content))``,
hex encoded. Canonical JSON is sorted keys, no whitespace, UTF-8, and no
NaN or Infinity, so the same content hashes the same on every machine and
every Python version. The first record's previous hash is GENESIS.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

GENESIS = "0" * 64


def canonical_json(value: Any) -> str:
    """The one serialization every hash is taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def chain_hash(prev_hash: str, content_json: str) -> str:
    """The hash of one link: covers the previous hash and the content text."""
    return sha256_hex(prev_hash + "\n" + content_json)
