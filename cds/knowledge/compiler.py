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

import json
from collections import Counter
from typing import Any

from cds.errors import RulesetError
from cds.knowledge.rules import REF, Pattern, Rule

#: Durable's C core refuses a ruleset much above ~480 rules (error 303).
MAX_RULES_PER_STRATUM = 400
#: One fact meeting 64 or more distinct conditions of one durable ruleset
#: corrupts the C core's memory inside assert (fixed-size traversal arrays
#: in events.c; seen as "free(): invalid pointer"). Conditions a single fact
#: could meet at once are bounded well below that per ruleset.
MAX_CONDITIONS_PER_FACT = 48
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


def _groups(rules: list[Rule], members: list[int]) -> list[list[int]]:
    """Rules of one stratum that feed each other, grouped (connected components).

    Within a stratum a rule can consume what another produces; such rules
    must share a durable session. Rules with no such link can run in
    separate sessions, in any order, with the same result.
    """
    parent = {i: i for i in members}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    producers: dict[str, list[int]] = {}
    for i in members:
        for fact_type in rules[i].produces:
            producers.setdefault(fact_type, []).append(i)
    for i in members:
        for fact_type in rules[i].consumes(negated=False):
            for j in producers.get(fact_type, ()):
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in members:
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _conditions(rules: list[Rule], indexes: list[int]) -> dict[str, Counter[str]]:
    """Per fact type: distinct conditions per concept ("*": on any concept)."""
    seen: dict[str, dict[str, set[str]]] = {}
    for i in indexes:
        for pattern in rules[i].patterns:
            if pattern.negated:
                continue
            concept = pattern.where.get("concept")
            keys = ([concept] if isinstance(concept, str) and not concept.startswith("$") else
                    [str(v) for v in concept["in"]] if isinstance(concept, dict) and "in" in concept else ["*"])
            text = json.dumps(compile_pattern(pattern)[pattern.alias], sort_keys=True)
            for key in keys:
                seen.setdefault(pattern.fact, {}).setdefault(key, set()).add(text)
    return {t: Counter({k: len(v) for k, v in by_key.items()}) for t, by_key in seen.items()}


def _widest(conditions: dict[str, Counter[str]]) -> int:
    """Most conditions one fact could meet: those on its concept plus those on any."""
    widest = 0
    for counts in conditions.values():
        anywhere = counts.get("*", 0)
        widest = max(widest, anywhere + max((n for k, n in counts.items() if k != "*"), default=0))
    return widest


def _chunks(rules: list[Rule], members: list[int], level: int) -> list[list[int]]:
    """Pack a stratum's groups into durable rulesets under the engine's limits."""
    chunks: list[list[int]] = []
    for group in sorted(_groups(rules, members), key=len, reverse=True):
        if len(group) > MAX_RULES_PER_STRATUM or _widest(_conditions(rules, group)) > MAX_CONDITIONS_PER_FACT:
            raise RulesetError(
                f"stratum {level} has a group of {len(group)} rules that feed each other, beyond what one "
                f"durable-rules ruleset can hold (at most {MAX_RULES_PER_STRATUM} rules, and at most "
                f"{MAX_CONDITIONS_PER_FACT} distinct conditions one fact could meet): split the dependency "
                f"chain", rule=rules[group[0]].id)
        target = next((c for c in chunks if len(c) + len(group) <= MAX_RULES_PER_STRATUM
                       and _widest(_conditions(rules, c + group)) <= MAX_CONDITIONS_PER_FACT), None)
        if target is None:
            chunks.append(list(group))
        else:
            target.extend(group)
    return [sorted(c) for c in chunks]


def compile_strata(rules: list[Rule], strata: list[int]) -> list[dict[str, Any]]:
    """Durable rulesets to run in order, each with what to assert.

    Each item: ``stratum`` (its level), ``definition`` (durable JSON, without
    actions), ``rules`` (rule index per durable name), ``negated`` (types its
    rules test for absence) and ``consumed`` (every type its rules match
    positively; others are not asserted). A stratum too large for one
    durable ruleset becomes several, split between rules that do not feed
    each other.
    """
    out: list[dict[str, Any]] = []
    for level in range(max(strata, default=-1) + 1):
        members = [i for i, s in enumerate(strata) if s == level]
        for chunk in _chunks(rules, members, level):
            definition: dict[str, Any] = {}
            names: dict[str, int] = {}
            negated: set[str] = set()
            consumed: set[str] = set()
            for index in chunk:
                rule = rules[index]
                name = f"r{index}"
                definition[name] = {"all": [compile_pattern(p) for p in rule.patterns if not p.negated]}
                names[name] = index
                negated |= rule.consumes(negated=True)
                consumed |= rule.consumes(negated=False)
            out.append({"stratum": level, "definition": definition, "rules": names,
                        "negated": frozenset(negated), "consumed": frozenset(consumed)})
    return out
