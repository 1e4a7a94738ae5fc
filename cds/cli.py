"""The ``cds`` command line.

Exit codes: 0 success, 2 bad input (one line on stderr naming the place),
1 internal failure. Bad input never prints a traceback.
"""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import Any, NoReturn

import click

from cds.errors import CdsError, InputError, RulesetError


def _fail(error: BaseException) -> NoReturn:
    if isinstance(error, CdsError):
        click.echo(f"error: {error.diagnostics}", err=True)
        # A bad ruleset is bad input to the command that was given it.
        sys.exit(2 if isinstance(error, (InputError, RulesetError)) else 1)
    click.echo(f"internal error: {type(error).__name__}: {error}", err=True)
    sys.exit(1)


def _as_of(value: str | None) -> date:
    if value is None:
        return date.today()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date YYYY-MM-DD", param_hint="--as-of") from None


@click.group()
@click.version_option(package_name="cds")
def main() -> None:
    """Clinical decision support for back neuropathy and back numbness."""


@main.command()
@click.argument("source", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--as-of", "as_of", help="Evaluation date YYYY-MM-DD (default: today).")
@click.option("--format", "fmt", type=click.Choice(["json", "text"]), default="json", show_default=True)
@click.option("--ruleset", "ruleset_path", type=click.Path(file_okay=False), default=None,
              help="Ruleset directory (default: $CDS_RULESET or the bundled one).")
def evaluate(source: str, as_of: str | None, fmt: str, ruleset_path: str | None) -> None:
    """Evaluate one patient's FHIR Bundle (or CDS Hooks prefetch) from SOURCE or -."""
    from cds.evaluation import Evaluator
    from cds.fhir import MAX_BODY_BYTES, parse_json
    from cds.knowledge import load_ruleset

    when = _as_of(as_of)
    try:
        body = _read_source(source, MAX_BODY_BYTES)
        evaluator = Evaluator(load_ruleset(ruleset_path))
        evaluation = evaluator.evaluate(parse_json(body), when)
    except Exception as exc:  # noqa: BLE001 - mapped to exit codes in one place
        _fail(exc)
    if fmt == "json":
        click.echo(json.dumps(evaluation, indent=2))
    else:
        click.echo(render_text(evaluation))


def _read_source(source: str, limit: int) -> bytes:
    from cds.errors import PayloadTooLarge

    if source == "-":
        body = sys.stdin.buffer.read(limit + 1)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
            if size > limit:
                raise PayloadTooLarge(f"file of {size} bytes is over the limit of {limit} bytes", where=source)
            body = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror}", where=source) from None
    if len(body) > limit:
        raise PayloadTooLarge(f"input over the limit of {limit} bytes", where=source)
    return body


def render_text(evaluation: dict[str, Any]) -> str:
    """A clinician's reading of an evaluation, most urgent first."""
    lines = [f"{evaluation['patient'] or 'Patient (no reference)'}, as of {evaluation['asOf']}",
             f"TRIAGE: {evaluation['triage'].upper()}", ""]
    current = None
    for rec in evaluation["recommendations"]:
        if rec["urgency"] != current:
            current = rec["urgency"]
            lines.append(current.upper())
        lines.extend(_render_item("-", rec))
    if evaluation["alerts"]:
        lines.append("ALERTS")
        for alert in evaluation["alerts"]:
            lines.extend(_render_item("!", alert))
    if not evaluation["recommendations"] and not evaluation["alerts"]:
        lines.append("Nothing to suggest from this record.")
    rs = evaluation["ruleset"]
    lines += ["", f"Ruleset {rs['name']} {rs['version']} (sha256 {rs['sha256'][:12]}), "
                  f"{len(evaluation['firings'])} rule firings."]
    return "\n".join(lines)


def _render_item(mark: str, item: dict[str, Any]) -> list[str]:
    out = [f"  {mark} {item['title']} [{item['action']}]",
           f"    Why: {' '.join(item['rationale'].split())}",
           f"    Rule {item['rule']}; guideline: {item['guideline']['label']} <{item['guideline']['url']}>"]
    leaves = [_leaf_labels(node) for node in item["because"]]
    for label in dict.fromkeys(label for group in leaves for label in group):
        out.append(f"    Based on: {label}")
    return out


def _leaf_labels(node: dict[str, Any]) -> list[str]:
    if "resource" in node:
        return [f"{node['label']} [{node['resource']}]"]
    return [label for child in node["because"] for label in _leaf_labels(child)]


@main.group()
def rules() -> None:
    """Check and test rulesets."""


@rules.command("lint")
@click.argument("path", required=False, type=click.Path(file_okay=False))
def rules_lint(path: str | None) -> None:
    """Validate a ruleset directory (default: the bundled one)."""
    from cds.knowledge import load_ruleset

    try:
        ruleset = load_ruleset(path)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    strata = max(ruleset.strata) + 1
    click.echo(f"ok: {ruleset.name} {ruleset.version}: {len(ruleset.rules)} rules in "
               f"{len(ruleset.modules)} modules, {strata} strata, sha256 {ruleset.sha256}")


@rules.command("test")
@click.option("--samples", type=click.Path(file_okay=False), default=None,
              help="Directory of scenarios (default: fhir_samples/).")
@click.option("--ruleset", "ruleset_path", type=click.Path(file_okay=False), default=None)
def rules_test(samples: str | None, ruleset_path: str | None) -> None:
    """Run every scenario in fhir_samples/ and report rule coverage."""
    from cds.evaluation import Evaluator
    from cds.evaluation.scenarios import run_all
    from cds.knowledge import load_ruleset

    try:
        evaluator = Evaluator(load_ruleset(ruleset_path))
        results, unfired = run_all(evaluator, Path(samples) if samples else None)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    for result in results:
        click.echo(f"{'PASS' if result.passed else 'FAIL'} {result.name}: {result.title}")
        for problem in result.problems:
            click.echo(f"     {problem}")
    failed = sum(not r.passed for r in results)
    covered = len(evaluator.ruleset.rules) - len(unfired)
    click.echo(f"\n{len(results) - failed} passed, {failed} failed")
    click.echo(f"rule coverage: {covered}/{len(evaluator.ruleset.rules)} rules fired by a scenario")
    for rule_id in unfired:
        click.echo(f"  never fired: {rule_id}")
    sys.exit(1 if failed or unfired or not results else 0)


main.add_command(__import__("cds.audit.cli", fromlist=["audit"]).audit)
main.add_command(__import__("cds.audit.cli", fromlist=["db"]).db)
main.add_command(__import__("cds.api.cli", fromlist=["serve"]).serve)
main.add_command(__import__("cds.batch.cli", fromlist=["batch"]).batch)

if __name__ == "__main__":
    main()
