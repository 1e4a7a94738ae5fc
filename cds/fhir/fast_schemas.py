"""The marshmallow schemas of ``cds.fhir.schemas``, compiled to plain closures.

Loading through marshmallow cost about 80% of an evaluation (a schema
object, a getter and an error store per nested field). The schemas stay the
declaration and the source of every error message: this module reads their
fields once and builds, per schema, a function that does the same checks and
returns the same dict. It answers ``None`` whenever it is in any doubt (a
type it does not expect, a failed check, a null), and the caller then loads
through marshmallow, which either raises the error a client will read or
returns its own result. So the fast path can only ever be used for input
marshmallow accepts, and ``tests/core/test_fast_schemas.py`` checks with
hypothesis that its answer then equals marshmallow's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, missing, validate

from cds.fhir.schemas import MAX_TEXT, Text

#: returns the loaded value, or raises _Doubt
Loader = Callable[[Any], Any]


class _Doubt(Exception):
    """Not decided here: marshmallow decides."""


_DOUBT = _Doubt()


def _leaf(field: fields.Field) -> Loader:
    """A scalar field: its own ``_deserialize`` (the project's strict types)
    followed by its validators, exactly as ``Field.deserialize`` runs them."""
    deserialize = field._deserialize
    checks = list(field.validators)
    for check in checks:
        if not isinstance(check, (validate.Length, validate.Regexp)):
            raise TypeError(f"validator {type(check).__name__} is not compiled")

    if type(field) is Text and not checks:
        # The commonest field, inlined: Text._deserialize's own test.
        def load_text(value: Any) -> Any:
            if type(value) is not str or len(value) > MAX_TEXT:
                raise _DOUBT
            return value

        return load_text

    def load(value: Any) -> Any:
        if value is None:
            raise _DOUBT
        try:
            out = deserialize(value, None, None)
            for check in checks:
                check(out)
        except ValidationError:
            raise _DOUBT from None
        return out

    return load


def _length(field: fields.Field) -> tuple[int | None, int | None]:
    low = high = None
    for check in field.validators:
        if not isinstance(check, validate.Length) or check.equal is not None:
            raise TypeError(f"validator {type(check).__name__} on a list is not compiled")
        low, high = check.min, check.max
    return low, high


def _field(field: fields.Field) -> Loader:
    if isinstance(field, fields.Nested):
        if field.many or field.only or field.exclude or field.unknown not in (None, INCLUDE):
            raise TypeError("only plain Nested fields are compiled")
        nested = field.schema
        if field.validators:
            raise TypeError("validators on Nested are not compiled")
        return compile_schema(nested)
    if isinstance(field, fields.List):
        inner = _field(field.inner)
        low, high = _length(field)

        def load_list(value: Any) -> list[Any]:
            if type(value) is not list:
                raise _DOUBT
            if (high is not None and len(value) > high) or (low is not None and len(value) < low):
                raise _DOUBT
            return [inner(item) for item in value]

        return load_list
    if type(field) in (fields.List, fields.Dict, fields.Raw, fields.Method, fields.Function):
        raise TypeError(f"{type(field).__name__} is not compiled")
    return _leaf(field)


def compile_schema(schema: Schema) -> Loader:
    """One function that loads what ``schema.load`` loads, or raises _Doubt."""
    if schema.opts.unknown != INCLUDE or schema._hooks and any(schema._hooks.values()):
        raise TypeError(f"{type(schema).__name__}: only open schemas without hooks are compiled")
    if schema.load_only or schema.dump_only or schema.partial or schema.many:
        raise TypeError(f"{type(schema).__name__}: options not compiled")
    declared: list[tuple[str, Loader]] = []
    required: list[str] = []
    for name, field in schema.load_fields.items():
        if field.data_key not in (None, name) or field.load_default is not missing:
            raise TypeError(f"{type(schema).__name__}.{name}: data_key/load_default not compiled")
        declared.append((name, _field(field)))
        if field.required:
            required.append(name)

    def load(data: Any) -> dict[str, Any]:
        if type(data) is not dict:
            raise _DOUBT
        for name in required:
            if name not in data:
                raise _DOUBT
        # Unknown fields are included as they are (INCLUDE); declared ones
        # are replaced by their loaded values.
        out = dict(data)
        for name, loader in declared:
            if name in data:
                out[name] = loader(data[name])
        return out

    return load


def compile_all(schemas: dict[str, Schema]) -> dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]]:
    """``type -> fast load`` answering None when marshmallow must decide."""
    out: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {}
    for resource_type, schema in schemas.items():
        loader = compile_schema(schema)

        def fast(resource: dict[str, Any], _load: Loader = loader) -> dict[str, Any] | None:
            try:
                return _load(resource)  # type: ignore[no-any-return]
            except _Doubt:
                return None

        out[resource_type] = fast
    return out
