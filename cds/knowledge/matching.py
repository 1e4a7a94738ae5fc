"""Pattern semantics in plain Python: the reference for what a rule means.

The engine adapter compiles patterns to durable-rules for speed, but every
firing is verified here before it takes effect, and absences (``not``) are
decided here only. Two durable-rules defects made this necessary: an
absence is decided when a match first forms and never revisited, and a
``$alias.field`` join in a pattern that also uses ``in`` is ignored
(docs/architecture.md). A fact lacking a field never satisfies a condition
on it, except ``exists: false``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cds.knowledge.rules import REF, Pattern

_MISSING = object()


def _operand(value: Any, bound: Mapping[str, Mapping[str, Any]]) -> Any:
    if isinstance(value, str):
        ref = REF.match(value)
        if ref:
            fact = bound.get(ref.group(1))
            return _MISSING if fact is None else fact.get(ref.group(2), _MISSING)
    return value


def _same(a: Any, b: Any) -> bool:
    # JSON semantics: true is not 1.
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _holds(actual: Any, op: str, expected: Any, bound: Mapping[str, Mapping[str, Any]]) -> bool:
    if op == "exists":
        return (actual is not _MISSING) == expected
    if actual is _MISSING:
        return False
    if op in ("in", "not_in"):
        values = [_operand(v, bound) for v in expected]
        found = any(_same(actual, v) for v in values if v is not _MISSING)
        return found if op == "in" else not found
    other = _operand(expected, bound)
    if other is _MISSING:
        return False
    if op == "eq":
        return _same(actual, other)
    if op == "ne":
        return not _same(actual, other)
    numeric = (int, float)
    if isinstance(actual, bool) or isinstance(other, bool) or not (
            isinstance(actual, numeric) and isinstance(other, numeric)):
        return False
    return {"gt": actual > other, "gte": actual >= other, "lt": actual < other, "lte": actual <= other}[op]


def matches(pattern: Pattern, fact: Mapping[str, Any], bound: Mapping[str, Mapping[str, Any]]) -> bool:
    """Does ``fact`` satisfy ``pattern``, given the facts bound so far?"""
    if fact.get("type") != pattern.fact:
        return False
    for name, spec in pattern.where.items():
        actual = fact.get(name, _MISSING)
        ops = spec.items() if isinstance(spec, dict) else [("eq", spec)]
        if not all(_holds(actual, op, value, bound) for op, value in ops):
            return False
    return True


def verify(patterns: Iterable[Pattern], matched: Mapping[str, Mapping[str, Any]],
           facts_of_type: Any) -> bool:
    """True when a firing is genuine: every positive pattern holds for its
    matched fact and no known fact satisfies an absence pattern.

    ``facts_of_type(type)`` yields the engine views of every known fact of
    that type; strata guarantee those are complete when the rule fires.
    """
    bound: dict[str, Mapping[str, Any]] = {}
    negations = []
    for pattern in patterns:
        if pattern.negated:
            negations.append(pattern)
            continue
        fact = matched.get(pattern.alias)
        if fact is None or not matches(pattern, fact, bound):
            return False
        bound[pattern.alias] = fact
    return not any(matches(p, f, bound) for p in negations for f in facts_of_type(p.fact))
