"""Domain types: small frozen dataclasses, standard library only."""

from cds.domain.facts import INPUT_FACT_TYPES, URGENCIES, Fact, urgency_rank

__all__ = ["Fact", "INPUT_FACT_TYPES", "URGENCIES", "urgency_rank"]
