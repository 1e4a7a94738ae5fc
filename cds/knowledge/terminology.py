"""The terminology: every accepted code mapped to one concept, and units.

One YAML file (``terminology.yaml`` in the ruleset directory) serves the
FHIR layer, the rules' lint and the docs, so a code is mapped in one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError, fields, validate

from cds.errors import RulesetError, UnknownUnit
from cds.knowledge._schema import StrictSchema, dotted, first_error, load_strict

PROJECT_SYSTEMS = ("finding", "imaging-finding", "ncs-emg-finding", "spinal-level",
                   "medication-class", "procedure", "severity", "outcome", "action")
ACTION_CATEGORIES = ("emergency-referral", "imaging", "laboratory", "electrodiagnostic",
                     "referral", "medication", "procedure", "self-care", "advice", "alert")
VALUE_KINDS = ("quantity", "integer", "coded")


class _Labelled(StrictSchema):
    label = fields.String(required=True)
    codes = fields.List(fields.String(), load_default=list)


class _Finding(_Labelled):
    device_types = fields.List(fields.String(), load_default=list)


class _Measurement(_Labelled):
    unit = fields.String(required=True)
    units = fields.Dict(keys=fields.String(), values=fields.List(fields.Float(), validate=validate.Length(equal=2)),
                        required=True)
    value = fields.String(required=True, validate=validate.OneOf(VALUE_KINDS))
    range = fields.List(fields.Float(), validate=validate.Length(equal=2))


class _Medication(StrictSchema):
    label = fields.String(required=True)
    rxnorm = fields.List(fields.String(), load_default=list)


class _Action(StrictSchema):
    category = fields.String(required=True, validate=validate.OneOf(ACTION_CATEGORIES))
    title = fields.String(required=True)
    resource = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(
        ["ServiceRequest", "MedicationRequest", "CommunicationRequest"]))
    codes = fields.List(fields.String(), load_default=list)


class _Terminology(StrictSchema):
    version = fields.String(required=True)
    systems = fields.Dict(keys=fields.String(), values=fields.Url(require_tld=False), required=True)
    project_base = fields.String(required=True)
    laterality = fields.Dict(keys=fields.String(), values=fields.String(
        validate=validate.OneOf(["left", "right", "bilateral"])), required=True)
    body_sites = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    spinal_levels = fields.List(fields.String(), required=True)
    severities = fields.List(fields.String(), required=True)
    outcomes = fields.List(fields.String(), required=True)
    unit_aliases = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    findings = fields.Dict(keys=fields.String(), values=fields.Nested(_Finding), required=True)
    measurements = fields.Dict(keys=fields.String(), values=fields.Nested(_Measurement), required=True)
    imaging_findings = fields.Dict(keys=fields.String(), values=fields.Nested(_Labelled), required=True)
    ncs_emg_findings = fields.Dict(keys=fields.String(), values=fields.Nested(_Labelled), required=True)
    modalities = fields.Dict(keys=fields.String(), values=fields.Nested(_Labelled), required=True)
    medication_classes = fields.Dict(keys=fields.String(), values=fields.Nested(_Medication), required=True)
    procedures = fields.Dict(keys=fields.String(), values=fields.Nested(_Labelled), required=True)
    actions = fields.Dict(keys=fields.String(), values=fields.Nested(_Action), required=True)
    orderables = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)


@dataclass(frozen=True)
class Concept:
    """What a code means: its kind (finding, measurement, ...) and name."""

    kind: str
    name: str


@dataclass(frozen=True)
class Coding:
    system: str
    code: str
    display: str = ""

    def as_fhir(self) -> dict[str, str]:
        out = {"system": self.system, "code": self.code}
        if self.display:
            out["display"] = self.display
        return out


class Terminology:
    """Code lookups and unit conversion, built once from the YAML."""

    def __init__(self, data: Mapping[str, Any], *, file: str = "terminology.yaml") -> None:
        try:
            doc = load_strict(_Terminology(), data)
        except ValidationError as exc:
            path, message = first_error(exc.messages)
            raise RulesetError(message, file=file, field=dotted(path)) from None
        self.doc = doc
        self.version: str = doc["version"]
        self.project_base: str = doc["project_base"]
        self.aliases: dict[str, str] = dict(doc["systems"])
        for name in PROJECT_SYSTEMS:
            self.aliases[name] = self.project_base + name
        self.spinal_levels = frozenset(doc["spinal_levels"])
        self.severities = frozenset(doc["severities"])
        self.outcomes = frozenset(doc["outcomes"])
        self.unit_aliases: dict[str, str] = doc["unit_aliases"]
        self.measurements: dict[str, dict[str, Any]] = doc["measurements"]
        self.actions: dict[str, dict[str, Any]] = doc["actions"]
        self._codes: dict[tuple[str, str], Concept] = {}
        self._device_types: set[tuple[str, str]] = set()
        self._laterality: dict[tuple[str, str], str] = {}
        self._sites: dict[tuple[str, str], str] = {}
        self._file = file
        sections = (("findings", "finding", "finding"), ("measurements", "measurement", "finding"),
                    ("imaging_findings", "imaging", "imaging-finding"),
                    ("ncs_emg_findings", "ncs-emg", "ncs-emg-finding"),
                    ("procedures", "procedure", "procedure"),
                    ("actions", "action", "action"))
        for section, kind, project_system in sections:
            for name, entry in doc[section].items():
                concept = Concept(kind, name)
                # Project codes: a measurement named in contract 2.2 by a
                # finding| code lists it explicitly; the rest are implied.
                if section != "measurements":
                    self._add((self.aliases[project_system], name), concept, section)
                for code in entry.get("codes", ()):
                    self._add(self._split(code, f"{section}.{name}"), concept, section)
                for code in entry.get("device_types", ()):
                    self._device_types.add(self._split(code, f"{section}.{name}.device_types"))
        # Modalities share project codes with procedures (procedure|mri is
        # both "an MRI was done" and "this report is an MRI"), so they get
        # their own map rather than a second meaning in the code table.
        self._modalities: dict[tuple[str, str], str] = {}
        for name, entry in doc["modalities"].items():
            self._modalities[(self.aliases["procedure"], name)] = name
            for code in entry["codes"]:
                self._modalities[self._split(code, f"modalities.{name}")] = name
        for name, entry in doc["medication_classes"].items():
            concept = Concept("medication", name)
            self._add((self.aliases["medication-class"], name), concept, "medication_classes")
            for code in entry["rxnorm"]:
                self._add((self.aliases["rxnorm"], code), concept, "medication_classes")
        self.orderables: dict[tuple[str, str], str] = {
            (self.aliases["action"], name): name for name in self.actions}
        for code, action in doc["orderables"].items():
            if action not in self.actions:
                raise RulesetError(f"orderable {code} names unknown action {action!r}",
                                   file=file, field=f"orderables.{code}")
            self.orderables[self._split(code, f"orderables.{code}")] = action
        for code, side in doc["laterality"].items():
            self._laterality[self._split(code, "laterality")] = side
        for code, site in doc["body_sites"].items():
            self._sites[self._split(code, "body_sites")] = site
        for name, entry in self.measurements.items():
            if entry["unit"] not in entry["units"]:
                raise RulesetError("canonical unit must be one of the accepted units",
                                   file=file, field=f"measurements.{name}.unit")

    def _split(self, code: str, where: str) -> tuple[str, str]:
        alias, sep, value = code.partition("|")
        if not sep or alias not in self.aliases or not value:
            raise RulesetError(f"code {code!r} is not 'alias|code' with a known alias",
                               file=self._file, field=where)
        return self.aliases[alias], value

    def _add(self, key: tuple[str, str], concept: Concept, section: str) -> None:
        known = self._codes.get(key)
        if known and known != concept:
            raise RulesetError(f"code {key[0]}|{key[1]} maps to both {known.kind} {known.name} "
                               f"and {concept.kind} {concept.name}", file=self._file, field=section)
        self._codes[key] = concept

    def concept(self, system: str | None, code: str | None, kinds: tuple[str, ...] | None = None,
                ) -> Concept | None:
        """The concept of one coding, or None when the code is not ours."""
        if not system or not code:
            return None
        found = self._codes.get((system, code))
        if found and kinds and found.kind not in kinds:
            return None
        return found

    def modality(self, system: str | None, code: str | None) -> str | None:
        return self._modalities.get((system or "", code or ""))

    def is_mri_unsafe_device(self, system: str | None, code: str | None) -> bool:
        return (system, code) in self._device_types or (
            system == self.aliases["finding"] and code == "mri-unsafe-implant")

    def laterality(self, system: str | None, code: str | None) -> str | None:
        return self._laterality.get((system or "", code or ""))

    def body_site(self, system: str | None, code: str | None) -> str | None:
        return self._sites.get((system or "", code or ""))

    def orderable(self, system: str | None, code: str | None) -> str | None:
        return self.orderables.get((system or "", code or ""))

    def system(self, alias: str) -> str:
        return self.aliases[alias]

    def convert(self, concept: str, value: float, unit: str | None, *, where: str) -> float:
        """Value in the concept's canonical unit; an unlisted unit is refused."""
        entry = self.measurements[concept]
        unit = (unit or "").strip()
        unit = self.unit_aliases.get(unit, unit)
        factor_offset = entry["units"].get(unit)
        if factor_offset is None:
            accepted = ", ".join(repr(u) if u else "no unit" for u in entry["units"])
            raise UnknownUnit(f"unit {unit or 'none'!r} is not accepted for {concept} "
                              f"(accepted: {accepted})", where=where)
        factor, offset = factor_offset
        result = value * factor + offset
        if not math.isfinite(result):
            raise UnknownUnit(f"value {value!r} is not a finite number", where=where)
        return round(result, 4)

    def action_codings(self, action: str) -> list[Coding]:
        out = []
        for code in self.actions[action]["codes"]:
            system, value = self._split(code, f"actions.{action}")
            out.append(Coding(system, value))
        out.append(Coding(self.aliases["action"], action, self.actions[action]["title"]))
        return out

    def labels(self, kind: str) -> dict[str, str]:
        section = {"finding": "findings", "measurement": "measurements", "imaging": "imaging_findings",
                   "ncs-emg": "ncs_emg_findings", "medication": "medication_classes",
                   "procedure": "procedures", "modality": "modalities"}[kind]
        return {name: entry["label"] for name, entry in self.doc[section].items()}
