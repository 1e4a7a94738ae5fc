"""Facts: what the rules match.

A fact is flat (scalar fields only), immutable, and carries an id that is
unique within one evaluation. Input facts point back to the FHIR resource
they came from; derived facts name the rule and the facts that produced
them. Unique ids keep identical readings legal: durable-rules treats two
facts of identical content as one and refuses the second.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Scalar = str | int | float | bool

#: Fact types the FHIR layer produces; everything else is derived by rules.
INPUT_FACT_TYPES = frozenset(
    {"patient", "finding", "measurement", "result", "medication", "procedure", "order"})

#: Most urgent first.
URGENCIES = ("emergency", "urgent", "routine", "self-care")


def urgency_rank(urgency: str | None) -> int:
    """0 for emergency ... 3 for self-care, 4 for none: lower is more urgent."""
    return URGENCIES.index(urgency) if urgency in URGENCIES else len(URGENCIES)


@dataclass(frozen=True)
class Fact:
    """One fact as the engine sees it, plus what a person needs to read it."""

    id: str
    type: str
    fields: Mapping[str, Scalar]
    #: the input resource reference (input facts only)
    resource: str | None = None
    #: plain-language statement, with value, unit and date where there are
    label: str = ""
    #: the rule that derived it and the ids of the facts that rule matched
    rule: str | None = None
    because: tuple[str, ...] = ()
    #: text the engine never sees (titles, rationales) kept beside the fact
    meta: Mapping[str, Any] = field(default_factory=dict)

    def engine_view(self) -> dict[str, Scalar]:
        """The flat dict asserted into the engine."""
        return {"id": self.id, "type": self.type, **self.fields}

    def get(self, name: str) -> Scalar | None:
        if name == "id":
            return self.id
        if name == "type":
            return self.type
        return self.fields.get(name)
