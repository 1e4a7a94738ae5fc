"""Schemathesis against /openapi.json: generated requests (valid and not)
for every operation; no 5xx, and no response that breaks its own schema,
status list or content type.

Runs on the app with authentication off (loopback), so the generated
bodies reach validation and the evaluation core instead of stopping at
401; the token rules have their own tests (test_auth.py). Generated
requests name arbitrary fhirServer hosts: the FHIR fetcher is replaced by
one that never touches the network (answering 412 as an unreachable
server would).

The app keeps its audit trail in a SQLite file (CDS_DATABASE_URL), so the
observation intake (/fhir, /worklist) is served and fuzzed too; its
notification worker is off, so no generated Subscription endpoint is ever
called (nothing leaves the process).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from cds.api import create_app
from cds.api.fhir_client import FetchLimits, FhirFetcher
from cds.errors import PreconditionFailed
from cds.evaluation import Evaluator
from cds.knowledge import load_ruleset
from tests.api.conftest import app_config

CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.response_headers_conformance]



class _Offline(FhirFetcher):
    def fill(self, request, keys):  # type: ignore[no-untyped-def]
        raise PreconditionFailed("test rig: no network", where="fhirServer")


_tmp = Path(tempfile.mkdtemp(prefix="cds-fuzz-"))
# also when no test of this module runs (collected, then deselected): teardown_module is not called then
atexit.register(shutil.rmtree, _tmp, ignore_errors=True)
_config = app_config(CDS_LOG_LEVEL="error", EVALUATOR=Evaluator(load_ruleset()), FETCHER=_Offline(FetchLimits()),
                     CDS_DATABASE_URL=f"sqlite:///{_tmp / 'audit.sqlite3'}", CDS_NOTIFY_WORKER="off")
del _config["AUDIT"]  # the store comes from CDS_DATABASE_URL, so the intake is on
_app = create_app(_config)
schema = schemathesis.openapi.from_wsgi("/openapi.json", _app)
_INTAKE = r"^/(fhir|worklist)"
_SETTINGS = {"deadline": None, "derandomize": True,
             "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]}


def teardown_module() -> None:
    _app.extensions["cds_intake"].close()
    _app.extensions["cds"].services.audit.engine.dispose()
    shutil.rmtree(_tmp, ignore_errors=True)


@schema.exclude(path_regex=_INTAKE).parametrize()
@settings(max_examples=100, **_SETTINGS)
def test_no_server_errors_and_responses_match_their_schema(case):
    case.call_and_validate(checks=CHECKS)


# Fewer examples per intake operation: there are ~40 of them, and every accepted post is an
# evaluation and a database transaction.
@schema.include(path_regex=_INTAKE).parametrize()
@settings(max_examples=40, **_SETTINGS)
def test_intake_no_server_errors_and_responses_match_their_schema(case):
    case.call_and_validate(checks=CHECKS)


def test_the_intake_is_described_only_where_it_is_served():
    without = create_app(app_config(CDS_LOG_LEVEL="error", EVALUATOR=_app.extensions["cds"].services.evaluator))
    paths = without.test_client().get("/openapi.json").json["paths"]
    assert "/cds-services" in paths and not [p for p in paths if p.startswith(("/fhir", "/worklist"))]
    assert without.test_client().post("/fhir", json={}).status_code == 404


def test_the_intake_is_described_and_served():
    paths = _app.test_client().get("/openapi.json").json["paths"]
    assert {"/fhir", "/fhir/Patient", "/fhir/Observation/{id}", "/fhir/Subscription", "/worklist"} <= set(paths)
    assert _app.test_client().get("/worklist").status_code == 200


@pytest.mark.parametrize("path", ["/cds-services", "/openapi.json"])
def test_the_document_is_served(path):
    assert _app.test_client().get(path).status_code == 200
