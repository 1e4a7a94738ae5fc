"""Facts to JSON and back, for the audit record and for replay.

The stored form is ``dataclasses.asdict(fact)`` with tuples as lists. The
decoder also accepts the flat engine view (``{"id", "type", **fields}``),
so records written by a service that stored only what the engine saw can
still be replayed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cds.domain.facts import Fact

_FACT_KEYS = {"id", "type", "fields", "resource", "label", "rule", "because", "meta"}


def fact_to_dict(fact: Fact) -> dict[str, Any]:
    return {"id": fact.id, "type": fact.type, "fields": dict(fact.fields), "resource": fact.resource,
            "label": fact.label, "rule": fact.rule, "because": list(fact.because), "meta": dict(fact.meta)}


def facts_to_dicts(facts: Iterable[Fact]) -> list[dict[str, Any]]:
    return [fact_to_dict(f) for f in facts]


def fact_from_dict(data: Mapping[str, Any]) -> Fact:
    if "fields" in data and isinstance(data["fields"], Mapping) and set(data) <= _FACT_KEYS:
        return Fact(id=str(data["id"]), type=str(data["type"]), fields=dict(data["fields"]),
                    resource=data.get("resource"), label=data.get("label") or "", rule=data.get("rule"),
                    because=tuple(data.get("because") or ()), meta=dict(data.get("meta") or {}))
    fields = {k: v for k, v in data.items() if k not in ("id", "type")}
    fact_id = str(data["id"])
    # Input facts are named after their resource (Type/id) in the engine view.
    resource = fact_id if "/" in fact_id else None
    return Fact(id=fact_id, type=str(data["type"]), fields=fields, resource=resource)


def facts_from_dicts(items: Iterable[Mapping[str, Any]]) -> list[Fact]:
    return [fact_from_dict(item) for item in items]
