"""Every error is an OperationOutcome naming the place; nothing a client
sends crashes the worker or leaks internals."""

from __future__ import annotations

from cds.api import create_app, schemas
from cds.errors import StoreUnavailable
from cds.evaluation.ports import MemoryAudit
from cds.fhir import MAX_BODY_BYTES
from tests.api.conftest import CAUDA_EQUINA, PV, Caller, app_config, hook_request, prefetch


def _outcome(response, status: int) -> dict:
    assert response.status_code == status, response.data[:300]
    assert response.mimetype == "application/fhir+json"
    schemas.validate(schemas.OPERATION_OUTCOME, response.json)
    return response.json["issue"][0]


def test_malformed_json_is_400(client):
    issue = _outcome(client.post(f"/cds-services/{PV}", raw=b'{"hook": "patient-view",'), 400)
    assert issue["code"] == "structure" and "malformed JSON" in issue["diagnostics"]


def test_json_with_nan_or_deep_nesting_is_400(client):
    _outcome(client.post("/evaluate", raw=b'{"resourceType": "Bundle", "x": NaN}'), 400)
    _outcome(client.post("/evaluate", raw=b"[" * 100_000 + b"]" * 100_000), 400)


def test_an_empty_body_or_a_json_array_is_400(client):
    _outcome(client.post("/evaluate", raw=b""), 400)
    _outcome(client.post("/evaluate", raw=b"[1, 2]"), 400)


def test_body_over_the_documented_limit_is_413(client):
    issue = _outcome(client.post("/evaluate", raw=b" " * (MAX_BODY_BYTES + 1)), 413)
    assert issue["code"] == "too-costly" and str(MAX_BODY_BYTES) in issue["diagnostics"]


def test_wrong_content_type_is_415(client):
    issue = _outcome(client.post(f"/cds-services/{PV}", hook_request(pre=prefetch()), content_type="text/plain"),
                     415)
    assert issue["diagnostics"].startswith("Content-Type")
    _outcome(client.post("/evaluate", raw=b"<Bundle/>", content_type="application/fhir+xml"), 415)


def test_fhir_json_content_type_is_accepted(client):
    response = client.post(f"/cds-services/{PV}", hook_request(pre=prefetch()),
                           content_type="application/fhir+json; charset=utf-8")
    assert response.status_code == 200


def test_wrong_method_is_405_and_unknown_path_404(client):
    issue = _outcome(client.get(f"/cds-services/{PV}"), 405)
    assert issue["code"] == "not-supported"
    _outcome(client.delete("/evaluate") if hasattr(client, "delete") else client.http.delete("/evaluate"), 405)
    _outcome(client.get("/no/such/thing"), 404)


class _BrokenEvaluator:
    """Passes for an evaluator but fails as a bug would."""

    def __init__(self, real):
        self.ruleset = real.ruleset

    def facts(self, *_args):
        raise KeyError("Quorra Zyxwvut 1970-01-01")


def test_an_unexpected_failure_is_500_without_internals_and_is_logged(bundled, capsys):
    caller = Caller(create_app(app_config(EVALUATOR=_BrokenEvaluator(bundled))), None)
    capsys.readouterr()
    response = caller.post(f"/cds-services/{PV}", hook_request(pre=prefetch(*CAUDA_EQUINA)))
    issue = _outcome(response, 500)
    assert issue == {"severity": "fatal", "code": "exception",
                     "diagnostics": "internal error; the failure was logged"}
    err = capsys.readouterr().err
    assert "internal_error" in err and "KeyError" in err
    assert "Quorra" not in err  # the exception's message may quote data: not logged
    # the worker still serves the next request
    assert caller.get("/healthz").status_code == 200


class _DownAudit(MemoryAudit):
    def record_evaluation(self, record):
        raise StoreUnavailable("audit database unreachable")


def test_no_answer_without_an_audit_record_503(bundled):
    caller = Caller(create_app(app_config(EVALUATOR=bundled, AUDIT=_DownAudit())), None)
    response = caller.post(f"/cds-services/{PV}", hook_request(pre=prefetch(*CAUDA_EQUINA)))
    issue = _outcome(response, 503)
    assert issue["code"] == "transient"
    assert b"cards" not in response.data


def test_random_bytes_never_crash_the_worker(open_client):
    import random

    rng = random.Random(7)
    for _ in range(50):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        response = open_client.post(f"/cds-services/{PV}", raw=raw)
        assert response.status_code == 400
    assert open_client.get("/healthz").status_code == 200


def test_json_nested_deeper_than_the_limit_is_400_at_any_depth(client):
    from cds.api.schemas import MAX_JSON_DEPTH

    for depth in (MAX_JSON_DEPTH, 500, 980, 995):
        nested = "[" * depth + "]" * depth
        raw = f'{{"resourceType": "Bundle", "entry": [], "meta": {nested}}}'.encode()
        issue = _outcome(client.post("/evaluate", raw=raw), 400)
        assert "nested" in issue["diagnostics"]
    ok = "[" * 20 + "]" * 20
    assert client.post("/evaluate", raw=f'{{"resourceType": "Bundle", "meta": {ok}}}'.encode()).status_code == 200
