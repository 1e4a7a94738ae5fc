"""What happens when a rule fires: new facts, with their provenance.

One Session per evaluation. It turns each engine match into derived facts,
recommendations, alerts or supersessions, keeps every fact by id so any
conclusion can be traced back to input resources, and logs every firing in
order for the audit trail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cds.domain.facts import Fact, urgency_rank
from cds.engine import Match
from cds.errors import SafetyViolation
from cds.knowledge import Ruleset
from cds.knowledge.matching import verify
from cds.knowledge.rules import REF, Rule


class Session:
    def __init__(self, ruleset: Ruleset, facts: Iterable[Fact]) -> None:
        self.ruleset = ruleset
        self.facts: dict[str, Fact] = {f.id: f for f in facts}
        self.firings: list[dict[str, Any]] = []
        self.superseded: dict[str, str] = {}
        self._by_content: dict[tuple[Any, ...], str] = {}
        self._counters: dict[str, int] = {}
        self._views: dict[str, list[dict[str, Any]]] = {}
        for fact in self.facts.values():
            self._views.setdefault(fact.type, []).append(fact.engine_view())
        #: engine matches that failed verification (see cds.knowledge.matching)
        self.rejected = 0
        #: fact id -> the other derivations of that same conclusion (rule, matched ids)
        self.also: dict[str, list[dict[str, Any]]] = {}

    def on_match(self, match: Match) -> list[dict[str, Any]]:
        rule = self.ruleset.rules[match.rule_index]
        if not verify(rule.patterns, match.facts, lambda t: self._views.get(t, ())):
            self.rejected += 1
            return []
        matched = {alias: self.facts[fact["id"]] for alias, fact in match.facts.items()}
        because = tuple(f.id for f in matched.values())
        new: list[Fact] = []
        merged: list[str] = []
        for spec in rule.derive:
            values = {name: self._value(v, matched) for name, v in spec["with_"].items()}
            values = {k: v for k, v in values.items() if v is not None}
            label = _label(spec, values)
            self._emit(new, merged, (spec["type"], tuple(sorted(values.items()))),
                       spec["type"], "d", values, label, rule, because, {})
        for spec in rule.recommend:
            self._recommend(new, merged, rule, spec["action"], spec["urgency"], because,
                            {"title": spec["title"], "rationale": spec["rationale"]})
        for spec in rule.alert:
            topic = self._value(spec["topic"], matched)
            values = {"action": spec["action"], "topic": topic, "urgency": spec["urgency"],
                      "rule": rule.id}
            values = {k: v for k, v in values.items() if v is not None}
            self._emit(new, merged, ("alert", spec["action"], topic), "alert", "a", values,
                       self._title(spec["action"], spec["title"]), rule, because,
                       {"title": spec["title"], "rationale": spec["rationale"]})
        if rule.supersede:
            self._supersede(new, merged, rule, matched, because)
        self.firings.append({"seq": len(self.firings) + 1, "rule": rule.id, "stratum": match.stratum,
                             "matched": list(because), "asserted": [f.id for f in new],
                             **({"merged": merged} if merged else {})})
        return [f.engine_view() for f in new]

    def _recommend(self, new: list[Fact], merged: list[str], rule: Rule, action: str, urgency: str,
                   because: tuple[str, ...], meta: dict[str, Any]) -> None:
        category = self.ruleset.terminology.actions[action]["category"]
        values = {"action": action, "category": category, "urgency": urgency, "rule": rule.id}
        self._emit(new, merged, ("recommendation", action, urgency), "recommendation", "r", values,
                   self._title(action, meta.get("title")), rule, because, meta)

    def _supersede(self, new: list[Fact], merged: list[str], rule: Rule, matched: Mapping[str, Fact],
                   because: tuple[str, ...]) -> None:
        spec = rule.supersede or {}
        target = matched[spec["target"]]
        urgency = str(target.get("urgency"))
        replacement = spec["replace_with"]
        if urgency_rank(urgency) <= urgency_rank("urgent") and not replacement:
            # A red-flag suggestion may be changed (MRI -> CT myelography)
            # but never dropped: refusing to answer is safer than hiding it.
            raise SafetyViolation(f"rule {rule.id} would withdraw the {urgency} recommendation "
                                  f"{target.get('action')} without a replacement")
        self.superseded.setdefault(target.id, rule.id)
        self._emit(new, merged, ("superseded", target.id), "superseded", "s",
                   {"target": target.id, "rule": rule.id}, f"{target.label} superseded", rule,
                   because, {"rationale": spec["rationale"]})
        if replacement:
            self._recommend(new, merged, rule, replacement, urgency, because,
                            {"title": None, "rationale": spec["rationale"]})

    def _emit(self, new: list[Fact], merged: list[str], key: tuple[Any, ...], fact_type: str,
              prefix: str, values: dict[str, Any], label: str, rule: Rule, because: tuple[str, ...],
              meta: dict[str, Any]) -> None:
        # The same conclusion reached again (another matching observation)
        # is one fact: re-asserting it would multiply every later firing.
        existing = self._by_content.get(key)
        if existing is not None:
            merged.append(existing)
            self.also.setdefault(existing, []).append({"rule": rule.id, "because": list(because)})
            return
        n = self._counters.get(prefix, 0) + 1
        self._counters[prefix] = n
        fact = Fact(id=f"{prefix}{n}", type=fact_type, fields=values, label=label, rule=rule.id,
                    because=because, meta={**meta})
        self._by_content[key] = fact.id
        self.facts[fact.id] = fact
        self._views.setdefault(fact_type, []).append(fact.engine_view())
        new.append(fact)

    def _title(self, action: str, override: str | None) -> str:
        return override or self.ruleset.terminology.actions[action]["title"]

    @staticmethod
    def _value(value: Any, matched: Mapping[str, Fact]) -> Any:
        if isinstance(value, str):
            ref = REF.match(value)
            if ref:
                return matched[ref.group(1)].get(ref.group(2))
        return value


class _Blank(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return "?"


def _label(spec: Mapping[str, Any], values: dict[str, Any]) -> str:
    if spec.get("label"):
        return str(spec["label"]).format_map(_Blank(values))
    details = ", ".join(f"{k} {v}" for k, v in values.items())
    return spec["type"].replace("-", " ") + (f" ({details})" if details else "")
