"""Where a batch's patients come from: a FHIR Bulk Data export or a
directory of bundles, read as (key, record bytes) work items.

A Bulk Data export is one NDJSON file per resource type (``Patient.ndjson``,
``Observation.ndjson``, or numbered parts such as ``Observation.000.ndjson``),
each line one resource. Resources are grouped by the patient they belong to
(``Patient.id``, else ``subject`` / ``patient`` / ``beneficiary`` reference).
Only an index of line offsets is kept in memory, so an export larger than
memory can be screened; a patient's lines are read when its turn comes.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cds.errors import InputError

#: where a resource names its patient, in the order tried
_PATIENT_FIELDS = ("subject", "patient", "beneficiary")


@dataclass(frozen=True)
class Item:
    """One patient's record, ready to evaluate."""

    key: str
    body: bytes


@dataclass(frozen=True)
class Problem:
    """A line or file that names no patient or is not FHIR: reported, never dropped silently."""

    key: str
    message: str


class Source(ABC):
    """The patients of an input, in a stable order."""

    @abstractmethod
    def keys(self) -> list[str]: ...

    @abstractmethod
    def read(self, key: str) -> Item: ...

    @property
    def problems(self) -> list[Problem]:
        return []


def open_source(path: str | Path) -> Source:
    """A Bulk Data export (``*.ndjson``) or a directory of bundles (``*.json``)."""
    root = Path(path)
    if root.is_file():
        if root.suffix == ".ndjson":
            return BulkExport([root])
        return BundleDirectory([root])
    if not root.is_dir():
        raise InputError(f"{path}: no such file or directory")
    ndjson = sorted(root.glob("*.ndjson"))
    if ndjson:
        return BulkExport(ndjson)
    bundles = sorted(p for p in root.glob("*.json") if not p.name.endswith(".expected.json"))
    if not bundles:
        raise InputError(f"{path}: neither *.ndjson (a FHIR Bulk Data export) nor *.json bundles found")
    return BundleDirectory(bundles)


class BundleDirectory(Source):
    """One bundle (or resource, or prefetch) per file; the key is the file name.

    Files named ``*.expected.json`` are skipped: they are the sample
    bundles' expected evaluations, not records.
    """

    def __init__(self, files: list[Path]) -> None:
        self._files = {f.name: f for f in files}

    def keys(self) -> list[str]:
        return list(self._files)

    def read(self, key: str) -> Item:
        return Item(key, self._files[key].read_bytes())


class BulkExport(Source):
    """NDJSON files grouped by patient through an index of line offsets."""

    def __init__(self, files: list[Path]) -> None:
        self._files = files
        self._index: dict[str, list[tuple[int, int, int]]] = {}
        self._problems: list[Problem] = []
        for number, path in enumerate(files):
            self._scan(number, path)

    @property
    def problems(self) -> list[Problem]:
        return self._problems

    def _scan(self, number: int, path: Path) -> None:
        offset = 0
        with path.open("rb") as f:
            for line_number, line in enumerate(f, 1):
                length = len(line)
                if line.strip():
                    key = self._patient_of(line, f"{path.name}:{line_number}")
                    if key is not None:
                        self._index.setdefault(key, []).append((number, offset, length))
                offset += length

    def _patient_of(self, line: bytes, where: str) -> str | None:
        try:
            resource = json.loads(line)
        except ValueError as exc:
            self._problems.append(Problem(where, f"not JSON: {exc}"))
            return None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            self._problems.append(Problem(where, "not a FHIR resource (no resourceType)"))
            return None
        if resource["resourceType"] == "Patient":
            rid = resource.get("id")
            if isinstance(rid, str) and rid:
                return f"Patient/{rid}"
            self._problems.append(Problem(where, "Patient without an id"))
            return None
        for name in _PATIENT_FIELDS:
            ref = resource.get(name)
            reference = ref.get("reference") if isinstance(ref, dict) else None
            if isinstance(reference, str) and "Patient/" in reference:
                return "Patient/" + reference.rstrip("/").rsplit("Patient/", 1)[1]
        # Not about one patient (e.g. a Practitioner, a Medication): not ours.
        return None

    def keys(self) -> list[str]:
        return sorted(self._index)

    def read(self, key: str) -> Item:
        entries = []
        handles: dict[int, object] = {}
        try:
            for number, offset, length in self._index[key]:
                f = handles.get(number)
                if f is None:
                    f = handles[number] = self._files[number].open("rb")
                f.seek(offset)  # type: ignore[attr-defined]
                entries.append(f.read(length).strip())  # type: ignore[attr-defined]
        finally:
            for f in handles.values():
                f.close()  # type: ignore[attr-defined]
        body = b'{"resourceType":"Bundle","type":"collection","entry":[' + b",".join(
            b'{"resource":' + line + b"}" for line in entries) + b"]}"
        return Item(key, body)


def iter_items(source: Source, keys: list[str]) -> Iterator[Item]:
    for key in keys:
        yield source.read(key)
