"""Schemathesis against /openapi.json: generated requests (valid and not)
for every operation; no 5xx, and no response that breaks its own schema,
status list or content type.

Runs on the app with authentication off (loopback), so the generated
bodies reach validation and the evaluation core instead of stopping at
401; the token rules have their own tests (test_auth.py). Generated
requests name arbitrary fhirServer hosts: the FHIR fetcher is replaced by
one that never touches the network (answering 412 as an unreachable
server would).
"""

from __future__ import annotations

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
          checks.response_schema_conformance]



class _Offline(FhirFetcher):
    def fill(self, request, keys):  # type: ignore[no-untyped-def]
        raise PreconditionFailed("test rig: no network", where="fhirServer")


_app = create_app(app_config(CDS_LOG_LEVEL="error", EVALUATOR=Evaluator(load_ruleset()),
                             FETCHER=_Offline(FetchLimits())))
schema = schemathesis.openapi.from_wsgi("/openapi.json", _app)


@schema.parametrize()
@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_no_server_errors_and_responses_match_their_schema(case):
    case.call_and_validate(checks=CHECKS)


@pytest.mark.parametrize("path", ["/cds-services", "/openapi.json"])
def test_the_document_is_served(path):
    assert _app.test_client().get(path).status_code == 200
