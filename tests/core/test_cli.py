"""The command line: exit 0 / 2 (bad input, one line) / 1 (internal)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import MINI, ROOT, bundle, finding

CDS = [sys.executable, "-m", "cds.cli"]


def run(*args, stdin: bytes | None = None):
    return subprocess.run([*CDS, *args], input=stdin, capture_output=True, cwd=ROOT, timeout=120)


def test_evaluate_json_from_stdin():
    body = json.dumps(bundle(finding("x", "saddle-anesthesia"))).encode()
    done = run("evaluate", "-", "--as-of", "2026-11-22", "--ruleset", str(MINI), stdin=body)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["triage"] == "emergency" and out["asOf"] == "2026-11-22"
    assert set(out) == {"patient", "asOf", "triage", "recommendations", "alerts", "ruleset", "firings"}


def test_evaluate_text_is_grouped_by_urgency():
    body = json.dumps(bundle(finding("x", "saddle-anesthesia"))).encode()
    done = run("evaluate", "-", "--as-of", "2026-11-22", "--format", "text", "--ruleset", str(MINI), stdin=body)
    text = done.stdout.decode()
    assert "TRIAGE: EMERGENCY" in text and "Based on: Saddle anaesthesia: present" in text


def test_bad_input_exits_2_with_one_line_and_no_traceback():
    done = run("evaluate", "-", "--as-of", "2026-11-22", "--ruleset", str(MINI), stdin=b"[1")
    assert done.returncode == 2
    err = done.stderr.decode().strip()
    assert err.startswith("error: malformed JSON") and "\n" not in err and "Traceback" not in err


def test_missing_file_and_bad_date():
    assert run("evaluate", "/nonexistent.json").returncode == 2
    done = run("evaluate", "-", "--as-of", "22/11/2026", stdin=b"{}")
    assert done.returncode == 2 and b"YYYY-MM-DD" in done.stderr


def test_lint_reports_a_broken_ruleset(tmp_path):
    import shutil

    shutil.copytree(MINI, tmp_path / "rs")
    (tmp_path / "rs" / "guidelines.yaml").write_text("CKS: {label: x}\n")
    done = run("rules", "lint", str(tmp_path / "rs"))
    assert done.returncode == 2 and b"guidelines.yaml: CKS" in done.stderr
