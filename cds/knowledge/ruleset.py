"""A ruleset directory, loaded whole or not at all.

Layout::

    ruleset.yaml        name, version, title, the module list in order
    terminology.yaml    codes, units, actions (cds.knowledge.terminology)
    guidelines.yaml     guideline key -> label, url, note
    modules/NAME.yaml   one module of rules each (cds.knowledge.rules)

The sha256 covers every file that can change an answer, so an evaluation
names exactly the knowledge it used.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from marshmallow import ValidationError, fields, validate

from cds.errors import RulesetError
from cds.knowledge._schema import StrictSchema, dotted, first_error, load_strict
from cds.knowledge.compiler import compile_strata, stratify
from cds.knowledge.rules import NAME, Rule, check_rules, parse_module
from cds.knowledge.terminology import Terminology

MAX_FILE_BYTES = 2 * 1024 * 1024


class _Manifest(StrictSchema):
    name = fields.String(required=True, validate=validate.Regexp(rf"^{NAME}$"))
    version = fields.String(required=True, validate=validate.Regexp(r"^\d+\.\d+\.\d+$"))
    title = fields.String(required=True)
    description = fields.String(load_default="")
    modules = fields.List(fields.String(validate=validate.Regexp(rf"^{NAME}$")), required=True,
                          validate=validate.Length(min=1))


class _Guideline(StrictSchema):
    label = fields.String(required=True)
    url = fields.Url(required=True)
    note = fields.String(load_default="")


@dataclass(frozen=True)
class Ruleset:
    """Validated, stratified, compiled knowledge; immutable once loaded."""

    name: str
    version: str
    title: str
    sha256: str
    path: str
    terminology: Terminology
    guidelines: dict[str, dict[str, str]]
    modules: dict[str, str]
    rules: tuple[Rule, ...]
    strata: tuple[int, ...]
    compiled: tuple[dict[str, Any], ...] = field(repr=False)

    @property
    def key(self) -> str:
        """Unique per content: durable cannot replace a registered ruleset."""
        return f"{self.name}-{self.sha256[:16]}"

    def identity(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    def guideline(self, key: str) -> dict[str, str]:
        entry = self.guidelines[key]
        return {"key": key, "label": entry["label"], "url": entry["url"]}


def default_ruleset_path() -> str:
    """$CDS_RULESET, else the ruleset bundled beside the package."""
    env = os.environ.get("CDS_RULESET")
    if env:
        return env
    return str(Path(__file__).resolve().parents[2] / "rulesets" / "back-neuropathy")


def _read_yaml(path: Path, display: str) -> tuple[Any, bytes]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RulesetError(f"cannot read: {exc.strerror}", file=display) from None
    if len(raw) > MAX_FILE_BYTES:
        raise RulesetError(f"file over {MAX_FILE_BYTES} bytes", file=display)
    try:
        return yaml.safe_load(raw), raw
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RulesetError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", file=display) from None


def _validate(schema: StrictSchema, data: Any, display: str) -> Any:
    try:
        return load_strict(schema, data)
    except ValidationError as exc:
        path, message = first_error(exc.messages)
        raise RulesetError(message, file=display, field=dotted(path) or None) from None


def load_ruleset(path: str | os.PathLike[str] | None = None) -> Ruleset:
    """Load, validate and compile a ruleset directory, or raise RulesetError."""
    root = Path(path or default_ruleset_path())
    if not (root / "ruleset.yaml").is_file():
        raise RulesetError("not a ruleset directory (no ruleset.yaml)", file=str(root))
    digest = hashlib.sha256()

    def read(relative: str) -> Any:
        data, raw = _read_yaml(root / relative, relative)
        digest.update(relative.encode() + b"\0" + str(len(raw)).encode() + b"\0" + raw)
        return data

    manifest = _validate(_Manifest(), read("ruleset.yaml"), "ruleset.yaml")
    terminology = Terminology(read("terminology.yaml") or {}, file="terminology.yaml")
    raw_guidelines = read("guidelines.yaml")
    if not isinstance(raw_guidelines, dict) or not raw_guidelines:
        raise RulesetError("expected a mapping of guideline keys", file="guidelines.yaml")
    guidelines = {key: _validate(_Guideline(), value, f"guidelines.yaml: {key}")
                  for key, value in raw_guidelines.items()}
    rules: list[Rule] = []
    modules: dict[str, str] = {}
    for module_name in manifest["modules"]:
        relative = f"modules/{module_name}.yaml"
        if not (root / relative).is_file():
            raise RulesetError("module listed in ruleset.yaml but missing", file=relative)
        name, description, module_rules = parse_module(read(relative), file=relative)
        if name != module_name:
            raise RulesetError(f"module name {name!r} differs from its file name", file=relative,
                               field="module")
        modules[name] = description
        rules.extend(module_rules)
    listed = {f"{m}.yaml" for m in manifest["modules"]}
    stray = sorted(p.name for p in (root / "modules").glob("*.yaml") if p.name not in listed)
    if stray:
        raise RulesetError(f"module file(s) not listed in ruleset.yaml: {', '.join(stray)}",
                           file="ruleset.yaml", field="modules")
    check_rules(rules, terminology=terminology, guidelines=guidelines)
    strata = stratify(rules)
    compiled = compile_strata(rules, strata)
    return Ruleset(name=manifest["name"], version=manifest["version"], title=manifest["title"],
                   sha256=digest.hexdigest(), path=str(root), terminology=terminology,
                   guidelines=guidelines, modules=modules, rules=tuple(rules), strata=tuple(strata),
                   compiled=tuple(compiled))
