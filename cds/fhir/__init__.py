"""FHIR in: parse, validate, resolve references, normalize to facts.

Imports the knowledge layer (for the terminology) and the domain; knows
nothing of the engine, HTTP or the database.
"""

from cds.fhir.normalize import Normalizer
from cds.fhir.record import MAX_BODY_BYTES, MAX_RESOURCES, Record, parse_json, read_record

__all__ = ["Normalizer", "Record", "parse_json", "read_record", "MAX_BODY_BYTES", "MAX_RESOURCES"]
