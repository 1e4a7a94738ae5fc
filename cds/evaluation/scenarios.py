"""Scenario tests as data: ``fhir_samples/NAME.json`` + ``NAME.expected.json``.

The expected file states what the guidelines require (triage, actions that
must and must not appear, alerts); see docs/rules.md. The same runner backs
``cds rules test`` and the pytest suite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from cds.evaluation.evaluator import Evaluator


@dataclass
class ScenarioResult:
    name: str
    title: str
    problems: list[str] = field(default_factory=list)
    fired: set[str] = field(default_factory=set)
    evaluation: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return not self.problems


def default_samples_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "fhir_samples"


def scenario_files(directory: Path) -> list[tuple[Path, Path]]:
    pairs = []
    for expected in sorted(directory.glob("*.expected.json")):
        bundle = expected.with_name(expected.name.replace(".expected.json", ".json"))
        pairs.append((bundle, expected))
    return pairs


def check(evaluation: dict[str, Any], expect: dict[str, Any]) -> list[str]:
    """What differs between an evaluation and a scenario's expectations."""
    problems = []
    recs = {r["action"]: r["urgency"] for r in evaluation["recommendations"]}
    alerts = {a["action"] for a in evaluation["alerts"]}
    if "triage" in expect and evaluation["triage"] != expect["triage"]:
        problems.append(f"triage {evaluation['triage']!r}, expected {expect['triage']!r}")
    for action, urgency in expect.get("recommendations", {}).items():
        if action not in recs:
            problems.append(f"missing recommendation {action}")
        elif urgency != "any" and recs[action] != urgency:
            problems.append(f"{action} is {recs[action]}, expected {urgency}")
    for action in expect.get("absent", []):
        if action in recs:
            problems.append(f"unexpected recommendation {action} ({recs[action]})")
    for action in expect.get("alerts", []):
        if action not in alerts:
            problems.append(f"missing alert {action}")
    for action in expect.get("absentAlerts", []):
        if action in alerts:
            problems.append(f"unexpected alert {action}")
    return problems


def run_scenario(evaluator: Evaluator, bundle: Path, expected: Path) -> ScenarioResult:
    spec = json.loads(expected.read_text())
    name = bundle.stem
    result = ScenarioResult(name, spec.get("title", name))
    if not bundle.is_file():
        result.problems.append(f"no bundle {bundle.name}")
        return result
    evaluation = evaluator.evaluate(json.loads(bundle.read_text()), date.fromisoformat(spec["asOf"]))
    result.evaluation = evaluation
    result.fired = {f["rule"] for f in evaluation["firings"]}
    result.problems = check(evaluation, spec["expect"])
    return result


def run_all(evaluator: Evaluator, directory: Path | None = None) -> tuple[list[ScenarioResult], list[str]]:
    """Every scenario's result, and the rules no scenario fired."""
    results = [run_scenario(evaluator, b, e) for b, e in scenario_files(directory or default_samples_dir())]
    fired = set().union(*(r.fired for r in results)) if results else set()
    unfired = [r.id for r in evaluator.ruleset.rules if r.id not in fired]
    return results, unfired
