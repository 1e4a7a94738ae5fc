"""``cds batch``: bundles and Bulk Data exports, every core, audit records,
resume without duplicated work, and a Dask cluster (a local one)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from cds.audit import AuditStore
from cds.cli import main
from cds.evaluation.scenarios import check, default_samples_dir, scenario_files

ROOT = Path(__file__).resolve().parents[2]
AS_OF = "2026-11-22"


def samples() -> list[tuple[Path, dict[str, Any]]]:
    """Sample bundles evaluated as of 2026-11-22 with their expected answers."""
    out = []
    for bundle, expected in scenario_files(default_samples_dir()):
        wanted = json.loads(expected.read_text())
        if wanted["asOf"] == AS_OF:
            out.append((bundle, wanted))
    return out


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def audit_rows(url: str) -> list[tuple[str, str]]:
    store = AuditStore.open(url)
    try:
        assert store.verify().ok
        with store.engine.connect() as conn:
            return [(r[0], r[1]) for r in conn.execute(text(
                "SELECT hook_instance, id FROM audit_evaluation WHERE channel = 'batch'"))]
    finally:
        store.close()


def run(args: list[str]) -> Any:
    result = CliRunner().invoke(main, ["batch", *args], catch_exceptions=False)
    return result


@pytest.fixture
def bundles_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bundles"
    directory.mkdir()
    for bundle, _ in samples():
        (directory / bundle.name).write_bytes(bundle.read_bytes())
    return directory


def bulk_export(directory: Path, chosen: list[tuple[Path, dict[str, Any]]]) -> dict[str, str]:
    """A FHIR Bulk Data export (one NDJSON per type) of the chosen samples;
    returns patient reference -> sample name."""
    directory.mkdir()
    lines: dict[str, list[str]] = {}
    owners = {}
    for bundle_path, _ in chosen:
        bundle = json.loads(bundle_path.read_text())
        resources = [e["resource"] for e in bundle["entry"]]
        patient = next(r for r in resources if r["resourceType"] == "Patient")
        ref = f"Patient/{patient['id']}"
        owners[ref] = bundle_path.stem
        for r in resources:
            if r["resourceType"] != "Patient":
                field = "patient" if r["resourceType"] == "Device" else "subject"
                r[field] = {"reference": ref}
            lines.setdefault(r["resourceType"], []).append(json.dumps(r))
    for resource_type, rows in lines.items():
        (directory / f"{resource_type}.ndjson").write_text("\n".join(rows) + "\n")
    return owners


def test_a_directory_of_bundles_gets_every_expected_triage_and_an_audit_record(bundles_dir, tmp_path):
    out, db = tmp_path / "results.ndjson", f"sqlite:///{tmp_path / 'audit.db'}"
    result = run([str(bundles_dir), "--out", str(out), "--as-of", AS_OF, "--database", db, "--workers", "2",
                  "--summary-json", str(tmp_path / "summary.json")])
    assert result.exit_code == 0, result.output
    lines = read_results(out)
    expected = {bundle.name: wanted for bundle, wanted in samples()}
    assert sorted(line["key"] for line in lines) == sorted(expected)
    for line in lines:
        assert line["status"] == "ok", line
        assert check(line["evaluation"], expected[line["key"]]["expect"]) == [], line["key"]
        assert line["triage"] == line["evaluation"]["triage"]
    rows = audit_rows(db)
    assert len(rows) == len(lines)
    assert {line["auditRecord"] for line in lines} == {record for _, record in rows}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["patients"] == len(lines)
    assert summary["by_triage"] == dict(Counter(line["triage"] for line in lines))
    assert summary["by_triage"].get("emergency", 0) >= 5
    assert "by triage:" in result.output and "top actions:" in result.output


def test_a_bulk_export_is_grouped_by_patient_and_bad_records_are_reported_not_dropped(tmp_path):
    chosen = samples()[:12]
    export = tmp_path / "export"
    owners = bulk_export(export, chosen)
    with (export / "Observation.ndjson").open("a") as f:
        # a patient whose HbA1c is in a unit no one accepts: refused, named
        f.write(json.dumps({"resourceType": "Observation", "id": "bad-unit", "status": "final",
                            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
                            "subject": {"reference": "Patient/odd"},
                            "valueQuantity": {"value": 7.1, "unit": "furlongs", "code": "furlongs"}}) + "\n")
        f.write("{not json\n")
    with (export / "Patient.ndjson").open("a") as f:
        f.write(json.dumps({"resourceType": "Patient", "id": "odd"}) + "\n")
    out = tmp_path / "results.ndjson"
    result = run([str(export), "--out", str(out), "--as-of", AS_OF, "--no-audit", "--workers", "2"])
    assert result.exit_code == 0, result.output
    lines = {line["key"]: line for line in read_results(out)}
    expected = {bundle.stem: wanted for bundle, wanted in chosen}
    for ref, sample in owners.items():
        assert lines[ref]["status"] == "ok" and lines[ref]["patient"] == ref
        assert check(lines[ref]["evaluation"], expected[sample]["expect"]) == [], sample
    odd = lines["Patient/odd"]
    assert odd["status"] == "error" and odd["error"]["status"] == 400
    assert "furlongs" in odd["error"]["message"] and "Observation/bad-unit" in odd["error"]["message"]
    problem = lines[f"Observation.ndjson:{(export / 'Observation.ndjson').read_text().count(chr(10))}"]
    assert problem["status"] == "input-problem" and "not JSON" in problem["error"]
    assert "1 records refused, 1 input lines not read" in result.output


def test_an_interrupted_run_resumes_without_duplicating_results_or_audit_records(bundles_dir, tmp_path):
    out, db = tmp_path / "results.ndjson", f"sqlite:///{tmp_path / 'audit.db'}"
    command = [sys.executable, "-m", "cds.cli", "batch", str(bundles_dir), "--out", str(out), "--as-of", AS_OF,
               "--database", db, "--workers", "1", "--quiet"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and out.read_text().count("\n") >= 10):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        if process.stderr:
            process.stderr.close()
    first = read_results(out) if out.read_text().endswith("\n") else None
    done_before = out.read_text().count("\n")
    assert done_before < len(samples()), "the run finished before it could be interrupted"
    # a torn last line, as a crash mid-write leaves it
    with out.open("a") as f:
        f.write('{"key": "torn')
    result = run([str(bundles_dir), "--out", str(out), "--database", db, "--workers", "2"])
    assert result.exit_code == 0, result.output
    lines = read_results(out)
    keys = [line["key"] for line in lines]
    assert len(keys) == len(set(keys)) == len(samples())
    assert f"{done_before} already done" in result.output or first is None
    rows = audit_rows(db)
    instances = [hook for hook, _ in rows]
    assert len(instances) == len(set(instances)) == len(samples()), "an evaluation was recorded twice"
    assert {line["auditRecord"] for line in lines} == {record for _, record in rows}
    assert all(line["evaluation"]["asOf"] == AS_OF for line in lines), "the resumed run kept its date"


def test_a_patient_recorded_but_not_written_is_answered_from_its_record(bundles_dir, tmp_path):
    out, db = tmp_path / "results.ndjson", f"sqlite:///{tmp_path / 'audit.db'}"
    assert run([str(bundles_dir), "--out", str(out), "--as-of", AS_OF, "--database", db]).exit_code == 0
    lines = out.read_text().splitlines(keepends=True)
    lost = json.loads(lines[-1])
    out.write_text("".join(lines[:-1]))  # the interruption fell between the record and the line
    result = run([str(bundles_dir), "--out", str(out), "--as-of", AS_OF, "--database", db])
    assert result.exit_code == 0, result.output
    again = {line["key"]: line for line in read_results(out)}
    assert again[lost["key"]]["auditRecord"] == lost["auditRecord"]
    assert again[lost["key"]]["evaluation"] == lost["evaluation"]
    assert len(audit_rows(db)) == len(samples())


def test_resuming_with_another_date_is_refused(bundles_dir, tmp_path):
    out = tmp_path / "results.ndjson"
    assert run([str(bundles_dir), "--out", str(out), "--as-of", AS_OF, "--no-audit"]).exit_code == 0
    result = run([str(bundles_dir), "--out", str(out), "--as-of", "2027-01-01", "--no-audit"])
    assert result.exit_code == 2
    assert "another screening" in result.output


def test_not_a_population_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    result = run([str(tmp_path), "--out", str(tmp_path / "r.ndjson"), "--no-audit"])
    assert result.exit_code == 2 and "neither *.ndjson" in result.output


@pytest.mark.slow
def test_a_dask_cluster_gives_the_same_results_as_local_processes(tmp_path):
    import distributed
    chosen = samples()[:16]
    export = tmp_path / "export"
    bulk_export(export, chosen)
    local = tmp_path / "local.ndjson"
    assert run([str(export), "--out", str(local), "--as-of", AS_OF, "--no-audit", "--workers", "2"]).exit_code == 0
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1", silence_logs=40) as cluster:
        remote = tmp_path / "dask.ndjson"
        result = run([str(export), "--out", str(remote), "--as-of", AS_OF, "--database", db,
                      "--scheduler", cluster.scheduler_address, "--quiet"])
        assert result.exit_code == 0, result.output
        with distributed.Client(cluster) as client:
            # the chunks ran on the cluster's workers (each evaluated some)
            processed = client.run(lambda dask_worker: len(dask_worker.data) + dask_worker.state.transition_counter)
    assert len(processed) == 2 and all(count > 0 for count in processed.values())

    def strip(lines: list[dict[str, Any]]) -> dict[str, Any]:
        return {line["key"]: {k: v for k, v in line.items() if k not in ("ms", "auditRecord")} for line in lines}

    assert strip(read_results(local)) == strip(read_results(remote))
    assert len(audit_rows(db)) == len(chosen)
