"""Stratify rules and compile them to durable-rules' JSON rule language.

Why strata: an absence ("no red flag") can only be judged once every fact
that could contradict it exists. So every rule that tests the absence of a
fact type runs in a later stratum than every rule that can produce that
type; each stratum is its own durable ruleset and session.

Absences are not compiled to durable at all: durable decides a ``none``
when a match first forms and never revisits it, even if the blocking fact
arrives before any action runs. They are checked in Python when the rule
fires (cds.knowledge.matching), against facts the strata guarantee are
complete. Durable does the positive matching; every match is re-verified.
"""

from __future__ import annotations

from typing import Any

from cds.errors import RulesetError
from cds.knowledge.rules import REF, Pattern, Rule

#: Durable's C core refuses a ruleset much above ~480 rules (error 303).
MAX_RULES_PER_STRATUM = 400
_COMPARISONS = {"ne": "$neq", "gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte"}


def stratify(rules: list[Rule]) -> list[int]:
    """Stratum of each rule: above every producer of a type it negates."""
    producers: dict[str, list[int]] = {}
    for index, rule in enumerate(rules):
        for fact_type in rule.produces:
            producers.setdefault(fact_type, []).append(index)
    strata = [0] * len(rules)
    for _ in range(len(rules) + 1):
        changed = False
        for index, rule in enumerate(rules):
            level = 0
            for fact_type in rule.consumes(negated=False):
                level = max([level] + [strata[p] for p in producers.get(fact_type, ())])
            for fact_type in rule.consumes(negated=True):
                level = max([level] + [strata[p] + 1 for p in producers.get(fact_type, ())])
            if level != strata[index]:
                strata[index], changed = level, True
        if not changed:
            return strata
    cycle = [r.id for r, s in zip(rules, strata, strict=True) if s >= len(rules)] or [rules[0].id]
    raise RulesetError("rules depend on the absence of facts they (indirectly) produce; "
                       "no order can evaluate them soundly", file=rules[0].file, rule=cycle[0])


def compile_pattern(pattern: Pattern) -> dict[str, Any]:
    """One pattern as durable JSON: ``{alias: expression}``."""
    terms: list[dict[str, Any]] = [{"type": pattern.fact}]
    for name, spec in pattern.where.items():
        ops = spec.items() if isinstance(spec, dict) else [("eq", spec)]
        for op, value in ops:
            terms.append(_term(name, op, value))
    expression = terms[0] if len(terms) == 1 else {"$and": terms}
    key = f"{pattern.alias}$not" if pattern.negated else pattern.alias
    return {key: expression}


def _operand(value: Any) -> Any:
    if isinstance(value, str):
        match = REF.match(value)
        if match:
            return {match.group(1): match.group(2)}
    return value


def _term(name: str, op: str, value: Any) -> dict[str, Any]:
    if op == "eq":
        return {name: _operand(value)}
    if op in _COMPARISONS:
        return {_COMPARISONS[op]: {name: _operand(value)}}
    if op == "in":
        alternatives = [{name: _operand(v)} for v in value]
        return alternatives[0] if len(alternatives) == 1 else {"$or": alternatives}
    if op == "not_in":
        exclusions = [{"$neq": {name: _operand(v)}} for v in value]
        return exclusions[0] if len(exclusions) == 1 else {"$and": exclusions}
    if op == "exists":
        return {("$ex" if value else "$nex"): {name: 1}}
    raise RulesetError(f"unknown operator {op!r}")  # the schema already refused it


def compile_strata(rules: list[Rule], strata: list[int]) -> list[dict[str, Any]]:
    """Per stratum: durable definitions keyed ``r<index>``, and what to assert.

    Each item: ``definition`` (durable JSON, without actions), ``rules``
    (rule index per durable name), ``negated`` (types its rules test for
    absence) and ``consumed`` (every type its rules match positively;
    others are not asserted).
    """
    out: list[dict[str, Any]] = []
    for level in range(max(strata, default=-1) + 1):
        members = [i for i, s in enumerate(strata) if s == level]
        if len(members) > MAX_RULES_PER_STRATUM:
            raise RulesetError(f"stratum {level} has {len(members)} rules; durable-rules refuses "
                               f"more than about 480 in one ruleset (limit here "
                               f"{MAX_RULES_PER_STRATUM}): split the dependency chain")
        definition: dict[str, Any] = {}
        names: dict[str, int] = {}
        negated: set[str] = set()
        consumed: set[str] = set()
        for index in members:
            rule = rules[index]
            name = f"r{index}"
            definition[name] = {"all": [compile_pattern(p) for p in rule.patterns if not p.negated]}
            names[name] = index
            negated |= rule.consumes(negated=True)
            consumed |= rule.consumes(negated=False)
        out.append({"definition": definition, "rules": names, "negated": frozenset(negated),
                    "consumed": frozenset(consumed)})
    return out
