"""Resources to facts: codes mapped to concepts, units converted, dates
turned into days before the evaluation date (``as_of``).

Status rules (contract section 1): entered-in-error resources and
cancelled Observations are ignored; refuted Conditions are ignored;
resolved / remission / inactive Conditions become history. Anything dated
after ``as_of`` is ignored: the record is read as it stood on that day.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

from marshmallow import ValidationError

from cds.domain.facts import Fact
from cds.errors import InputError
from cds.fhir.fast_schemas import compile_all
from cds.fhir.record import Entry, Record
from cds.fhir.schemas import MAX_TEXT, SCHEMAS
from cds.knowledge._schema import dotted, first_error
from cds.knowledge.terminology import Terminology

#: A resource reader yields (fact type, fields, label, date) for each fact.
Reader = Callable[[Entry, dict[str, Any]], Iterator[tuple[str, dict[str, Any], str, date | None]]]
_CURRENT_MEDICATION = {"MedicationStatement": {"active", "intended", "on-hold"},
                       "MedicationRequest": {"active", "on-hold"}}
_PRESENT = {"active", "recurrence", "relapse"}
_HISTORY = {"inactive", "remission", "resolved"}
_ORDER_STATUS = {"draft": "draft", "active": "active", "on-hold": "active", "completed": "completed"}
_COMPONENTS = {"level": "level", "nerve-root": "root", "severity": "severity", "grade": "grade"}
_FAST = compile_all(SCHEMAS)


class Normalizer:
    """Turns one Record into input facts for one evaluation date."""

    def __init__(self, terminology: Terminology, as_of: date) -> None:
        self.t = terminology
        self.as_of = as_of
        self._finding_system = terminology.system("finding")
        self._level_system = terminology.system("spinal-level")
        self._severity_system = terminology.system("severity")
        self._outcome_system = terminology.system("outcome")
        self._labels = _labels(terminology)
        self._readers: dict[str, Reader] = {
            "Patient": self._patient, "Observation": self._observation, "Condition": self._condition,
            "MedicationStatement": self._medication, "MedicationRequest": self._medication,
            "Procedure": self._procedure, "DiagnosticReport": self._report, "Device": self._device,
            "ServiceRequest": self._service_request,
        }

    def facts(self, record: Record) -> list[Fact]:
        self.record = record
        # A DiagnosticReport is read twice (for its results' context, then
        # for its conclusions): validated once.
        self._loaded: dict[int, dict[str, Any]] = {}
        self._report_context = self._reports(record)
        out: list[Fact] = []
        used: dict[str, int] = {}
        for entry in record.entries:
            reader = self._readers.get(entry.type)
            if reader is None or self._skipped(entry):
                continue
            if entry.type != "Patient" and not self._maps_to_concept(entry):
                continue
            resource = self._validate(entry)
            self._check_subject(entry, resource)
            for fact_type, fields_, label, when in reader(entry, resource):
                if when is not None and when > self.as_of:
                    continue
                ref = entry.reference
                n = used.get(ref, 0)
                used[ref] = n + 1
                fid = ref if n == 0 else f"{ref}#{n}"
                clean = {k: v for k, v in fields_.items() if v is not None}
                if when is not None:
                    clean.setdefault("days", (self.as_of - when).days)
                out.append(Fact(id=fid, type=fact_type, fields=clean, resource=ref,
                                label=label + (f" ({when.isoformat()})" if when else ""),
                                meta={"date": when.isoformat() if when else None}))
        return out

    # -- gatekeeping -------------------------------------------------------

    @staticmethod
    def _skipped(entry: Entry) -> bool:
        status = entry.resource.get("status")
        return status == "entered-in-error" or (entry.type == "Observation" and status == "cancelled")

    def _maps_to_concept(self, entry: Entry) -> bool:
        """Cheap pre-check so unrelated resources cost almost nothing.

        A resource none of whose codes we know is ignored without full
        validation; real records are mostly such resources. An Observation
        with no code at all is still an error (it cannot be judged).
        """
        r = entry.resource
        if entry.type == "Observation" and not _has_code(r.get("code")):
            raise InputError("Observation has no code", where=f"{entry.where} {entry.reference}")
        if entry.type == "Device":
            return any(self.t.is_mri_unsafe_device(s, c) for s, c in _codings(r.get("type")))
        if entry.type in ("MedicationStatement", "MedicationRequest"):
            return any(self.t.concept(s, c, ("medication",)) for s, c in _codings(r.get("medicationCodeableConcept")))
        if entry.type == "ServiceRequest":
            return any(self.t.orderable(s, c) for s, c in _codings(r.get("code")))
        if entry.type == "DiagnosticReport":
            return True  # its results are resolved through it
        return any(self.t.concept(s, c) for s, c in _codings(r.get("code")))

    def _validate(self, entry: Entry) -> dict[str, Any]:
        key = id(entry)
        loaded = self._loaded.get(key)
        if loaded is None:
            loaded = self._loaded[key] = self._load(entry)
        return loaded

    @staticmethod
    def _load(entry: Entry) -> dict[str, Any]:
        fast = _FAST[entry.type](entry.resource)
        if fast is not None:
            return fast
        # In doubt, or invalid: marshmallow decides and words the error.
        try:
            return SCHEMAS[entry.type].load(entry.resource)  # type: ignore[no-any-return]
        except ValidationError as exc:
            path, message = first_error(exc.messages)
            raise InputError(f"field {dotted(path)}: {message}",
                             where=f"{entry.where} {entry.reference}") from None

    def _check_subject(self, entry: Entry, resource: dict[str, Any]) -> None:
        subject = resource.get("subject") or resource.get("patient") or {}
        ref = subject.get("reference") if isinstance(subject, dict) else None
        if ref and self.record.is_other_patient(ref):
            raise InputError(f"subject {ref[:80]} is not the record's patient {self.record.patient}",
                             where=f"{entry.where} {entry.reference}")

    # -- readers: yield (fact type, fields, label, date) -------------------

    def _patient(self, entry: Entry, r: dict[str, Any]) -> Iterator[Any]:
        birth = r.get("birthDate")
        age = None
        if birth is not None:
            if birth > self.as_of:
                raise InputError("birthDate is after the evaluation date",
                                 where=f"{entry.where} {entry.reference}")
            age = self.as_of.year - birth.year - ((self.as_of.month, self.as_of.day) < (birth.month, birth.day))
        sex = r.get("gender")
        label = f"Patient, {age if age is not None else 'unknown'} years, {sex or 'sex not stated'}"
        yield "patient", {"age": age, "sex": sex}, label, None

    def _observation(self, entry: Entry, r: dict[str, Any]) -> Iterator[Any]:
        concept = self._concept(r["code"], ("finding", "measurement", "imaging", "ncs-emg"))
        if concept is None:
            return
        where = f"{entry.where} {entry.reference}"
        when = r.get("effectiveDateTime") or (r.get("effectivePeriod") or {}).get("start")
        sites = self._sites([r.get("bodySite")])
        details = self._components(r.get("component") or [], where)
        if concept.kind == "finding":
            status, level = self._finding_value(r, concept.name, where)
            fields_ = {"concept": concept.name, "status": status, "source": "observation",
                       **sites, **({"level": level} if level else {}), **details}
            yield "finding", fields_, self._finding_label(concept.name, status, fields_), when
        elif concept.kind == "measurement":
            fields_ = {"concept": concept.name, **sites, **details}
            fields_.update(self._measurement_value(r, concept.name, where))
            label = f"{self._labels['measurement'][concept.name]} {fields_.get('value', fields_.get('code'))}"
            if fields_.get("unit"):
                label += f" {fields_['unit']}"
            if fields_.get("level"):
                label += f" at {fields_['level']}"
            yield "measurement", fields_, label + _side(fields_), when
        else:
            context = self._report_context.get(entry.reference, {})
            modality = self._modality(r.get("method")) or context.get("modality")
            when = when or context.get("date")
            value = r.get("valueBoolean")
            status = "absent" if value is False else "present"
            fields_ = {"concept": concept.name, "domain": concept.kind, "status": status,
                       "modality": modality, **details, **sites}
            yield "result", fields_, self._result_label(concept, status, fields_), when

    def _condition(self, entry: Entry, r: dict[str, Any]) -> Iterator[Any]:
        verification = _first_code(r.get("verificationStatus"))
        if verification in ("refuted", "entered-in-error"):
            return
        concept = self._concept(r["code"], ("finding",))
        if concept is None:
            return
        clinical = _first_code(r.get("clinicalStatus"))
        status = "history" if clinical in _HISTORY else "present"
        abated = r.get("abatementDateTime")
        if abated is not None and abated <= self.as_of:
            status = "history"
        if clinical is not None and clinical not in _PRESENT | _HISTORY:
            raise InputError(f"clinicalStatus {clinical[:40]!r} is not a FHIR condition-clinical code",
                             where=f"{entry.where} {entry.reference}")
        sites = self._sites(r.get("bodySite") or [])
        fields_ = {"concept": concept.name, "status": status, "source": "condition", **sites}
        when = r.get("onsetDateTime") or r.get("recordedDate")
        yield "finding", fields_, self._finding_label(concept.name, status, fields_), when

    def _medication(self, entry: Entry, r: dict[str, Any]) -> Iterator[Any]:
        concept = self._concept(r.get("medicationCodeableConcept"), ("medication",))
        if concept is None:
            return
        current = r.get("status") in _CURRENT_MEDICATION[entry.type]
        period = r.get("effectivePeriod") or {}
        when = period.get("start") or r.get("effectiveDateTime") or r.get("authoredOn")
        label = f"{self._labels['medication'][concept.name]}: {'current' if current else 'not current'}"
        yield "medication", {"concept": concept.name, "current": current}, label, when

    def _procedure(self, entry: Entry, r: dict[str, Any]) -> Iterator[Any]:
        status = r.get("status")
        if status not in ("completed", "in-progress"):
            return
        concept = self._concept(r["code"], ("procedure",))
        if concept is None:
            return
        period = r.get("performedPeriod") or {}
        start, end = period.get("start"), period.get("end")
        when = end or start or r.get("performedDateTime")
        duration = (end - start).days if start and end else None
        if status == "in-progress" and start and not end:
            duration = (self.as_of - start).days
        outcome = None
        for system, code in _codings(r.get("outcome")):
            if system == self._outcome_system and code in self.t.outcomes:
                outcome = code
        fields_ = {"concept": concept.name, "status": status, "duration": duration, "outcome": outcome}
        label = f"{self._labels['procedure'][concept.name]} {status}"
        if duration is not None:
            label += f", {duration} days"
        if outcome:
            label += f", outcome {outcome}"
        yield "procedure", fields_, label, when

    def _report(self, entry: Entry, r: dict[str, Any]) -> Iterator[Any]:
        modality = self._modality(r.get("code"))
        when = r.get("effectiveDateTime") or (r.get("effectivePeriod") or {}).get("start")
        for concept_cc in r.get("conclusionCode") or []:
            concept = self._concept(concept_cc, ("imaging", "ncs-emg"))
            if concept is None:
                continue
            fields_ = {"concept": concept.name, "domain": concept.kind, "status": "present",
                       "modality": modality}
            yield "result", fields_, self._result_label(concept, "present", fields_), when

    def _device(self, entry: Entry, r: dict[str, Any]) -> Iterator[Any]:
        if r.get("status") == "inactive":
            return
        fields_ = {"concept": "mri-unsafe-implant", "status": "present", "source": "device"}
        yield "finding", fields_, self._finding_label("mri-unsafe-implant", "present", fields_), None

    def _service_request(self, entry: Entry, r: dict[str, Any]) -> Iterator[Any]:
        status = _ORDER_STATUS.get(r.get("status") or "")
        if status is None:
            return
        action = next((a for s, c in _codings(r["code"]) if (a := self.t.orderable(s, c))), None)
        if action is None:
            return
        category = self.t.actions[action]["category"]
        label = f"{'Draft order' if status == 'draft' else 'Order'}: {self.t.actions[action]['title']}"
        yield "order", {"concept": action, "status": status, "category": category}, label, r.get("authoredOn")

    # -- helpers -------------------------------------------------------------

    def _reports(self, record: Record) -> dict[str, dict[str, Any]]:
        """Modality and date each DiagnosticReport lends its result Observations."""
        context: dict[str, dict[str, Any]] = {}
        for entry in record.entries:
            if entry.type != "DiagnosticReport" or self._skipped(entry):
                continue
            r = self._validate(entry)
            modality = self._modality(r.get("code"))
            when = r.get("effectiveDateTime") or (r.get("effectivePeriod") or {}).get("start")
            for index, ref in enumerate(r.get("result") or []):
                target = record.resolve(ref.get("reference") or "")
                if target is None:
                    raise InputError(f"result reference {str(ref.get('reference'))[:80]!r} is not in the record",
                                     where=f"{entry.where} {entry.reference} result[{index}]")
                context[target.reference] = {"modality": modality, "date": when}
        return context

    def _concept(self, cc: dict[str, Any] | None, kinds: tuple[str, ...]) -> Any:
        for system, code in _codings(cc):
            concept = self.t.concept(system, code, kinds)
            if concept is not None:
                return concept
        return None

    def _modality(self, cc: dict[str, Any] | None) -> str | None:
        return next((m for s, c in _codings(cc) if (m := self.t.modality(s, c))), None)

    def _sites(self, concepts: list[dict[str, Any] | None]) -> dict[str, str]:
        out: dict[str, str] = {}
        sides = set()
        for cc in concepts:
            for system, code in _codings(cc):
                if system == self._level_system and code and code in self.t.spinal_levels:
                    out.setdefault("level", code)
                elif side := self.t.laterality(system, code):
                    sides.add(side)
                elif site := self.t.body_site(system, code):
                    out.setdefault("site", site)
        if sides:
            out["side"] = "bilateral" if "bilateral" in sides or sides == {"left", "right"} else sides.pop()
        return out

    def _components(self, components: list[dict[str, Any]], where: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for index, component in enumerate(components):
            name = next((_COMPONENTS[c] for s, c in _codings(component["code"])
                         if s == self._finding_system and c in _COMPONENTS), None)
            if name is None:
                continue
            if name == "grade":
                if "valueInteger" not in component:
                    raise InputError("component grade needs valueInteger", where=f"{where} component[{index}]")
                out["grade"] = component["valueInteger"]
                continue
            system = self._severity_system if name == "severity" else self._level_system
            allowed = self.t.severities if name == "severity" else self.t.spinal_levels
            value = next((c for s, c in _codings(component.get("valueCodeableConcept"))
                          if s == system and c in allowed), None)
            if value is None:
                raise InputError(f"component {name} needs a valueCodeableConcept from {system}",
                                 where=f"{where} component[{index}]")
            out[name] = value
        return out

    def _finding_value(self, r: dict[str, Any], concept: str, where: str) -> tuple[str, str | None]:
        if "valueBoolean" in r:
            return ("present" if r["valueBoolean"] else "absent"), None
        if "valueCodeableConcept" in r:
            level = next((c for s, c in _codings(r["valueCodeableConcept"])
                          if s == self._level_system and c in self.t.spinal_levels), None)
            if level is None:
                raise InputError(f"finding {concept} has a coded value that is not a spinal level",
                                 where=where)
            return "present", level
        for other in ("valueQuantity", "valueInteger", "valueString"):
            if other in r:
                raise InputError(f"finding {concept} is recorded with valueBoolean (or no value), "
                                 f"not {other}", where=where)
        return "present", None

    def _measurement_value(self, r: dict[str, Any], concept: str, where: str) -> dict[str, Any]:
        entry = self.t.measurements[concept]
        if entry["value"] == "coded":
            code = next((c for s, c in _codings(r.get("valueCodeableConcept"))
                         if s == self._severity_system and c in self.t.severities), None)
            if code is None:
                raise InputError(f"{concept} needs a valueCodeableConcept from {self._severity_system}",
                                 where=where)
            return {"code": code}
        if "valueQuantity" in r:
            quantity = r["valueQuantity"]
            if "value" not in quantity:
                raise InputError(f"{concept} valueQuantity has no value", where=where)
            raw, unit = quantity["value"], quantity.get("code") or quantity.get("unit")
        elif "valueInteger" in r:
            raw, unit = r["valueInteger"], None
        else:
            raise InputError(f"{concept} needs valueQuantity or valueInteger", where=where)
        if entry["value"] == "integer" and raw != int(raw):
            raise InputError(f"{concept} must be a whole number, got {raw}", where=where)
        value = self.t.convert(concept, raw, unit, where=where)
        bounds = entry.get("range")
        if bounds and not bounds[0] <= value <= bounds[1]:
            raise InputError(f"{concept} {value} is outside {bounds[0]:g}-{bounds[1]:g}", where=where)
        return {"value": value, "unit": entry["unit"] or None}

    def _finding_label(self, concept: str, status: str, fields_: dict[str, Any]) -> str:
        label = f"{self._labels['finding'].get(concept, concept)}: {status}"
        if fields_.get("level"):
            label += f" at {fields_['level']}"
        if fields_.get("site"):
            label += f" ({fields_['site']})"
        return label + _side(fields_)

    def _result_label(self, concept: Any, status: str, fields_: dict[str, Any]) -> str:
        label = f"{(fields_.get('modality') or concept.kind).upper()}: " \
                f"{self._labels[concept.kind].get(concept.name, concept.name)} {status}"
        details = [f"{k} {fields_[k]}" for k in ("level", "root", "severity", "grade") if fields_.get(k) is not None]
        return label + (f" ({', '.join(details)})" if details else "") + _side(fields_)


_LABELS: weakref.WeakKeyDictionary[Terminology, dict[str, dict[str, str]]] = weakref.WeakKeyDictionary()


def _labels(terminology: Terminology) -> dict[str, dict[str, str]]:
    """Display labels by kind, built once per loaded terminology (read only)."""
    labels = _LABELS.get(terminology)
    if labels is None:
        labels = _LABELS[terminology] = {
            kind: terminology.labels(kind)
            for kind in ("finding", "measurement", "imaging", "ncs-emg", "medication", "procedure")}
    return labels


def _codings(cc: Any) -> Iterator[tuple[str | None, str | None]]:
    if not isinstance(cc, dict):
        return
    codings = cc.get("coding")
    if not isinstance(codings, list):
        return
    for coding in codings:
        if isinstance(coding, dict):
            system, code = coding.get("system"), coding.get("code")
            if isinstance(system, str) and isinstance(code, str) and len(code) <= MAX_TEXT:
                yield system, code


def _has_code(cc: Any) -> bool:
    return isinstance(cc, dict) and bool(cc.get("coding") or cc.get("text"))


def _first_code(cc: Any) -> str | None:
    """A status code; the system is fixed by FHIR, so a coding without it counts."""
    if not isinstance(cc, dict) or not isinstance(cc.get("coding"), list):
        return None
    return next((c["code"] for c in cc["coding"] if isinstance(c, dict) and isinstance(c.get("code"), str)), None)


def _side(fields_: dict[str, Any]) -> str:
    return f", {fields_['side']}" if fields_.get("side") else ""
