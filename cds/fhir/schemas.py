"""Structural schemas for the parts of FHIR R4 resources the service reads.

Only the fields the rules use are declared; other fields pass through
untouched (FHIR resources carry many). Types are strict: a string where a
number belongs, or "true" where a boolean belongs, is an error, because
silently coercing clinical values is how wrong answers start.
"""

from __future__ import annotations

import math
import re
from datetime import date
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate

MAX_TEXT = 10_000
ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
                   r"(?:Z|[+-]\d{2}:\d{2})?)?)?)?$")


class Text(fields.String):
    """A JSON string, bounded in length."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise ValidationError("must be a string")
        if len(value) > MAX_TEXT:
            raise ValidationError(f"string longer than {MAX_TEXT} characters")
        return value


class Number(fields.Field):
    """A JSON number (not a string, not a boolean), finite."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValidationError("must be a finite number")
        return value


class Integer(fields.Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("must be an integer")
        return value


class Boolean(fields.Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("must be true or false")
        return value


class FhirDate(fields.Field):
    """FHIR date or dateTime; partial dates count from their first day."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> date:
        if not isinstance(value, str):
            raise ValidationError("must be a FHIR date or dateTime string")
        match = _DATE.match(value)
        if not match:
            raise ValidationError(f"{value[:40]!r} is not a FHIR date or dateTime")
        year, month, day = (int(g) if g else 1 for g in match.groups())
        try:
            return date(year, month, day)
        except ValueError:
            raise ValidationError(f"{value[:40]!r} is not a calendar date") from None


class _Open(Schema):
    class Meta:
        unknown = INCLUDE


class Coding(_Open):
    system = Text()
    code = Text()
    display = Text()


class CodeableConcept(_Open):
    coding = fields.List(fields.Nested(Coding), validate=validate.Length(max=100))
    text = Text()


class Quantity(_Open):
    value = Number()
    unit = Text()
    system = Text()
    code = Text()


class Reference(_Open):
    reference = Text(validate=validate.Length(max=512))


class Period(_Open):
    start = FhirDate()
    end = FhirDate()


class Component(_Open):
    code = fields.Nested(CodeableConcept, required=True)
    valueCodeableConcept = fields.Nested(CodeableConcept)
    valueInteger = Integer()
    valueQuantity = fields.Nested(Quantity)
    valueBoolean = Boolean()


class Resource(_Open):
    resourceType = Text(required=True)
    id = Text(validate=validate.Regexp(ID, error="is not a valid FHIR id"))


class Patient(Resource):
    birthDate = FhirDate()
    gender = Text()


class Observation(Resource):
    status = Text()
    code = fields.Nested(CodeableConcept, required=True)
    subject = fields.Nested(Reference)
    valueBoolean = Boolean()
    valueQuantity = fields.Nested(Quantity)
    valueInteger = Integer()
    valueCodeableConcept = fields.Nested(CodeableConcept)
    valueString = Text()
    effectiveDateTime = FhirDate()
    effectivePeriod = fields.Nested(Period)
    bodySite = fields.Nested(CodeableConcept)
    method = fields.Nested(CodeableConcept)
    component = fields.List(fields.Nested(Component), validate=validate.Length(max=50))


class Condition(Resource):
    code = fields.Nested(CodeableConcept, required=True)
    subject = fields.Nested(Reference)
    clinicalStatus = fields.Nested(CodeableConcept)
    verificationStatus = fields.Nested(CodeableConcept)
    onsetDateTime = FhirDate()
    abatementDateTime = FhirDate()
    recordedDate = FhirDate()
    bodySite = fields.List(fields.Nested(CodeableConcept), validate=validate.Length(max=20))


class MedicationUse(Resource):
    status = Text()
    subject = fields.Nested(Reference)
    medicationCodeableConcept = fields.Nested(CodeableConcept)
    effectivePeriod = fields.Nested(Period)
    effectiveDateTime = FhirDate()
    authoredOn = FhirDate()


class Procedure(Resource):
    status = Text()
    code = fields.Nested(CodeableConcept, required=True)
    subject = fields.Nested(Reference)
    performedDateTime = FhirDate()
    performedPeriod = fields.Nested(Period)
    outcome = fields.Nested(CodeableConcept)


class DiagnosticReport(Resource):
    status = Text()
    code = fields.Nested(CodeableConcept, required=True)
    subject = fields.Nested(Reference)
    conclusionCode = fields.List(fields.Nested(CodeableConcept), validate=validate.Length(max=50))
    result = fields.List(fields.Nested(Reference), validate=validate.Length(max=500))
    effectiveDateTime = FhirDate()
    effectivePeriod = fields.Nested(Period)


class Device(Resource):
    status = Text()
    type = fields.Nested(CodeableConcept)
    patient = fields.Nested(Reference)


class ServiceRequest(Resource):
    status = Text()
    intent = Text()
    code = fields.Nested(CodeableConcept, required=True)
    subject = fields.Nested(Reference)
    reasonCode = fields.List(fields.Nested(CodeableConcept), validate=validate.Length(max=20))
    authoredOn = FhirDate()


SCHEMAS: dict[str, Schema] = {
    "Patient": Patient(), "Observation": Observation(), "Condition": Condition(),
    "MedicationStatement": MedicationUse(), "MedicationRequest": MedicationUse(),
    "Procedure": Procedure(), "DiagnosticReport": DiagnosticReport(), "Device": Device(),
    "ServiceRequest": ServiceRequest(),
}
