"""The rule language: schema, semantic checks, and the rule model.

A module file holds rules; each rule has metadata (id, title, guideline
keys, evidence note), a ``when`` list of fact patterns (``not`` for
absence), and what it does: ``derive`` facts, ``recommend`` actions, raise
``alert`` actions, or ``supersede`` a recommendation (safety rules).
See docs/rules.md for the language with examples.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from marshmallow import ValidationError, fields, validate, validates_schema

from cds.domain.facts import INPUT_FACT_TYPES, URGENCIES
from cds.errors import RulesetError
from cds.knowledge._schema import StrictSchema, dotted, first_error, load_strict

NAME = r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*"
RULE_ID = re.compile(rf"^{NAME}/{NAME}$")
ALIAS = re.compile(r"^[a-z][a-z0-9_]*$")
REF = re.compile(r"^\$([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)$")
OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists")

#: The fields each input fact type may carry, and their allowed values
#: where they are closed sets (None: open, checked elsewhere or numeric).
INPUT_FIELDS: dict[str, dict[str, tuple[Any, ...] | None]] = {
    "patient": {"age": None, "sex": None},
    "finding": {"concept": None, "status": ("present", "absent", "history"),
                "side": ("left", "right", "bilateral"), "site": None, "level": None,
                "days": None, "source": ("observation", "condition", "device")},
    "measurement": {"concept": None, "value": None, "unit": None, "code": None, "level": None,
                    "side": ("left", "right", "bilateral"), "days": None},
    "result": {"concept": None, "domain": ("imaging", "ncs-emg"), "status": ("present", "absent"),
               "level": None, "root": None, "severity": None, "grade": None, "modality": None,
               "days": None},
    "medication": {"concept": None, "current": (True, False), "days": None},
    "procedure": {"concept": None, "status": ("completed", "in-progress"), "days": None,
                  "duration": None, "outcome": None},
    "order": {"concept": None, "status": ("draft", "active", "completed"), "days": None,
              "category": None},
}
#: Fact types the engine itself asserts for the rules' actions.
EMITTED_FIELDS: dict[str, dict[str, tuple[Any, ...] | None]] = {
    "recommendation": {"action": None, "category": None, "urgency": URGENCIES, "rule": None},
    "alert": {"action": None, "topic": None, "urgency": URGENCIES, "rule": None},
    "superseded": {"target": None, "rule": None},
}

_scalar = (str, int, float, bool)


class _Pattern(StrictSchema):
    fact = fields.String(required=True, validate=validate.Regexp(rf"^{NAME}$"))
    as_ = fields.String(data_key="as", validate=validate.Regexp(ALIAS.pattern))
    where = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=False), load_default=dict)


class _When(StrictSchema):
    fact = fields.String(validate=validate.Regexp(rf"^{NAME}$"))
    as_ = fields.String(data_key="as", validate=validate.Regexp(ALIAS.pattern))
    where = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=False), load_default=dict)
    not_ = fields.Nested(_Pattern, data_key="not")

    @validates_schema
    def _one_kind(self, data: dict[str, Any], **_: Any) -> None:
        if ("fact" in data) == ("not_" in data):
            raise ValidationError("a condition is either a fact pattern ('fact') or an absence ('not')")
        if "not_" in data and ("as_" in data or data.get("where")):
            raise ValidationError("put 'as' and 'where' inside 'not'")


class _Derive(StrictSchema):
    type = fields.String(required=True, validate=validate.Regexp(rf"^{NAME}$"))
    with_ = fields.Dict(data_key="with", keys=fields.String(validate=validate.Regexp(ALIAS.pattern)),
                        values=fields.Raw(), load_default=dict)
    label = fields.String(load_default=None)


class _Recommend(StrictSchema):
    action = fields.String(required=True)
    urgency = fields.String(required=True, validate=validate.OneOf(URGENCIES))
    rationale = fields.String(required=True, validate=validate.Length(min=10))
    title = fields.String(load_default=None)


class _Alert(StrictSchema):
    action = fields.String(required=True)
    topic = fields.String(load_default=None)
    urgency = fields.String(load_default="routine", validate=validate.OneOf(URGENCIES))
    rationale = fields.String(required=True, validate=validate.Length(min=10))
    title = fields.String(load_default=None)


class _Supersede(StrictSchema):
    target = fields.String(required=True, validate=validate.Regexp(ALIAS.pattern))
    replace_with = fields.String(load_default=None)
    rationale = fields.String(required=True, validate=validate.Length(min=10))


class _Rule(StrictSchema):
    id = fields.String(required=True, validate=validate.Regexp(RULE_ID.pattern))
    title = fields.String(required=True, validate=validate.Length(min=3, max=200))
    guideline = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    evidence_note = fields.String(required=True, validate=validate.Length(min=10))
    verify = fields.Boolean(load_default=False)
    recent_days = fields.Dict(keys=fields.String(), values=fields.Integer(validate=validate.Range(min=1)),
                              load_default=dict)
    when = fields.List(fields.Nested(_When), required=True, validate=validate.Length(min=1, max=16))
    derive = fields.List(fields.Nested(_Derive), load_default=list)
    recommend = fields.List(fields.Nested(_Recommend), load_default=list)
    alert = fields.List(fields.Nested(_Alert), load_default=list)
    supersede = fields.Nested(_Supersede, load_default=None)

    @validates_schema
    def _does_something(self, data: dict[str, Any], **_: Any) -> None:
        if not (data.get("derive") or data.get("recommend") or data.get("alert") or data.get("supersede")):
            raise ValidationError("a rule must derive, recommend, alert or supersede something")


class _Module(StrictSchema):
    module = fields.String(required=True, validate=validate.Regexp(rf"^{NAME}$"))
    description = fields.String(required=True)
    rules = fields.List(fields.Nested(_Rule), required=True, validate=validate.Length(min=1))


@dataclass(frozen=True)
class Pattern:
    fact: str
    alias: str
    where: Mapping[str, Any]
    negated: bool = False


@dataclass(frozen=True)
class Rule:
    """One validated rule. ``stratum`` is set by the compiler."""

    id: str
    module: str
    title: str
    guideline: tuple[str, ...]
    evidence_note: str
    verify: bool
    recent_days: Mapping[str, int]
    patterns: tuple[Pattern, ...]
    derive: tuple[Mapping[str, Any], ...]
    recommend: tuple[Mapping[str, Any], ...]
    alert: tuple[Mapping[str, Any], ...]
    supersede: Mapping[str, Any] | None
    file: str

    @property
    def produces(self) -> set[str]:
        out = {d["type"] for d in self.derive}
        if self.recommend:
            out.add("recommendation")
        if self.alert:
            out.add("alert")
        if self.supersede:
            out.add("superseded")
            if self.supersede["replace_with"]:
                out.add("recommendation")
        return out

    def consumes(self, negated: bool) -> set[str]:
        return {p.fact for p in self.patterns if p.negated == negated}

    def describe(self) -> dict[str, Any]:
        """The rule as the API and docs show it."""
        return {"id": self.id, "module": self.module, "title": self.title,
                "guideline": list(self.guideline), "evidenceNote": self.evidence_note,
                "verify": self.verify, "recentDays": dict(self.recent_days)}


def parse_module(data: Any, *, file: str) -> tuple[str, str, list[Rule]]:
    """Validate one module file's content; raise RulesetError naming the place."""
    try:
        doc = load_strict(_Module(), data)
    except ValidationError as exc:
        path, message = first_error(exc.messages)
        rule = None
        if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int) and isinstance(data, dict):
            rules = data.get("rules")
            if isinstance(rules, list) and path[1] < len(rules) and isinstance(rules[path[1]], dict):
                rule = str(rules[path[1]].get("id", f"#{path[1]}"))
            path = path[2:] if rule else path
        raise RulesetError(message, file=file, rule=rule, field=dotted(path) or None) from None
    rules = []
    for raw in doc["rules"]:
        patterns = []
        for index, cond in enumerate(raw["when"]):
            negated = "not_" in cond
            body = cond["not_"] if negated else cond
            alias = body.get("as_") or f"p{index}"
            patterns.append(Pattern(body["fact"], alias, body["where"], negated))
        rules.append(Rule(
            id=raw["id"], module=doc["module"], title=raw["title"], guideline=tuple(raw["guideline"]),
            evidence_note=raw["evidence_note"], verify=raw["verify"], recent_days=raw["recent_days"],
            patterns=tuple(patterns), derive=tuple(raw["derive"]), recommend=tuple(raw["recommend"]),
            alert=tuple(raw["alert"]), supersede=raw["supersede"], file=file))
    return doc["module"], doc["description"], rules


def check_rules(rules: list[Rule], *, terminology: Any, guidelines: Mapping[str, Any]) -> None:
    """Whole-ruleset checks a schema cannot make: names, references, types."""
    seen: dict[str, str] = {}
    derived_fields: dict[str, set[str]] = {}
    for rule in rules:
        for d in rule.derive:
            if d["type"] in INPUT_FACT_TYPES or d["type"] in EMITTED_FIELDS:
                raise RulesetError(f"cannot derive reserved fact type {d['type']!r}",
                                   file=rule.file, rule=rule.id, field="derive.type")
            derived_fields.setdefault(d["type"], set()).update(d["with_"])
    known: dict[str, dict[str, tuple[Any, ...] | None]] = {
        **INPUT_FIELDS, **EMITTED_FIELDS, **{t: dict.fromkeys(fs) for t, fs in derived_fields.items()}}
    concepts = {
        "finding": set(terminology.doc["findings"]), "measurement": set(terminology.measurements),
        "result": set(terminology.doc["imaging_findings"]) | set(terminology.doc["ncs_emg_findings"]),
        "medication": set(terminology.doc["medication_classes"]),
        "procedure": set(terminology.doc["procedures"]), "order": set(terminology.actions),
    }
    for rule in rules:
        def fail(message: str, field: str, rule: Rule = rule) -> NoReturn:
            raise RulesetError(message, file=rule.file, rule=rule.id, field=field)

        if rule.id in seen:
            fail(f"rule id also used in {seen[rule.id]}", "id")
        seen[rule.id] = rule.file
        if not rule.id.startswith(rule.module + "/"):
            fail(f"rule id must start with its module name '{rule.module}/'", "id")
        for key in rule.guideline:
            if key not in guidelines:
                fail(f"unknown guideline key {key!r}", "guideline")
        if all(p.negated for p in rule.patterns):
            fail("a rule needs at least one fact pattern besides absences", "when")
        bound: dict[str, str] = {}
        for index, pattern in enumerate(rule.patterns):
            where = f"when[{index}]"
            if pattern.fact not in known:
                fail(f"fact type {pattern.fact!r} is neither an input type nor derived by any rule",
                     f"{where}.fact")
            if not pattern.negated:
                if pattern.alias in bound:
                    fail(f"alias {pattern.alias!r} used twice", f"{where}.as")
                bound[pattern.alias] = pattern.fact
            allowed = known[pattern.fact]
            for name, spec in pattern.where.items():
                if name not in allowed:
                    fail(f"fact type {pattern.fact!r} has no field {name!r}", f"{where}.where.{name}")
                for op, value in _operations(spec, f"{where}.where.{name}", fail):
                    for one in (value if op in ("in", "not_in") else [value]):
                        _check_value(one, op, pattern.fact, name, allowed[name], concepts, bound, known,
                                     f"{where}.where.{name}", fail)
        for index, d in enumerate(rule.derive):
            for name, value in d["with_"].items():
                _check_ref_or_scalar(value, bound, known, f"derive[{index}].with.{name}", fail)
        for index, item in enumerate(rule.alert):
            if item["topic"] is not None:
                _check_ref_or_scalar(item["topic"], bound, known, f"alert[{index}].topic", fail)
        for section, want_alert in (("recommend", False), ("alert", True)):
            for index, item in enumerate(getattr(rule, section)):
                action = terminology.actions.get(item["action"])
                if action is None:
                    fail(f"unknown action {item['action']!r}", f"{section}[{index}].action")
                if (action["category"] == "alert") != want_alert:
                    fail(f"action {item['action']!r} is {'not ' if want_alert else ''}an alert",
                         f"{section}[{index}].action")
        if rule.supersede:
            target = rule.supersede["target"]
            if bound.get(target) != "recommendation":
                fail(f"supersede target {target!r} must be the alias of a recommendation pattern",
                     "supersede.target")
            replacement = rule.supersede["replace_with"]
            if replacement and terminology.actions.get(replacement, {}).get("category") in (None, "alert"):
                fail(f"replacement {replacement!r} is not a known non-alert action", "supersede.replace_with")


def _operations(spec: Any, where: str, fail: Callable[[str, str], NoReturn]) -> list[tuple[str, Any]]:
    if isinstance(spec, dict):
        if not spec:
            fail("empty condition", where)
        ops = []
        for op, value in spec.items():
            if op not in OPERATORS:
                fail(f"unknown operator {op!r} (use one of {', '.join(OPERATORS)})", where)
            if op in ("in", "not_in") and (not isinstance(value, list) or not value):
                fail(f"'{op}' takes a non-empty list", where)
            if op == "exists" and not isinstance(value, bool):
                fail("'exists' takes true or false", where)
            ops.append((op, value))
        return ops
    return [("eq", spec)]


def _check_value(value: Any, op: str, fact: str, field: str, closed: tuple[Any, ...] | None,
                 concepts: dict[str, set[str]], bound: dict[str, str], known: dict[str, Any],
                 where: str, fail: Callable[[str, str], NoReturn]) -> None:
    if op == "exists":
        return
    if isinstance(value, str) and value.startswith("$"):
        _check_ref_or_scalar(value, bound, known, where, fail)
        return
    if not isinstance(value, _scalar):
        fail(f"value {value!r} is not a scalar", where)
    if op in ("gt", "gte", "lt", "lte") and (isinstance(value, bool) or not isinstance(value, (int, float))):
        fail(f"'{op}' compares numbers, not {value!r}", where)
    if closed is not None and value not in closed:
        fail(f"{value!r} is not a value of {fact}.{field} ({', '.join(map(str, closed))})", where)
    if field == "concept" and fact in concepts and value not in concepts[fact]:
        fail(f"unknown {fact} concept {value!r}", where)


def _check_ref_or_scalar(value: Any, bound: dict[str, str], known: dict[str, Any], where: str,
                         fail: Callable[[str, str], NoReturn]) -> None:
    if isinstance(value, str) and value.startswith("$"):
        match = REF.match(value)
        if not match:
            fail(f"reference {value!r} is not '$alias.field'", where)
        alias, name = match.group(1), match.group(2)
        if alias not in bound:
            fail(f"reference to {alias!r}, which no earlier pattern binds", where)
        if name not in ("id",) and name not in known[bound[alias]]:
            fail(f"fact type {bound[alias]!r} has no field {name!r}", where)
    elif not isinstance(value, _scalar):
        fail(f"value {value!r} is not a scalar", where)
