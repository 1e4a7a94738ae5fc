"""Shared marshmallow helpers: strict schemas and readable error paths."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError


class StrictSchema(Schema):
    """Unknown fields are refused: a misspelt key must not be ignored."""

    class Meta:
        unknown = RAISE


def first_error(messages: Any, path: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], str]:
    """The first (path, message) in marshmallow's nested error messages."""
    if isinstance(messages, dict):
        for key in sorted(messages, key=str):
            return first_error(messages[key], path + (key,))
    if isinstance(messages, list) and messages:
        if all(isinstance(m, str) for m in messages):
            return path, "; ".join(messages)
        return first_error(messages[0], path)
    return path, str(messages)


def dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_strict(schema: Schema, data: Any) -> Any:
    """Load or raise ValidationError; a non-mapping top level is an error too."""
    if not isinstance(data, dict):
        raise ValidationError({"_schema": ["expected a mapping"]})
    return schema.load(data)
