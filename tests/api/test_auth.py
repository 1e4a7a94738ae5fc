"""Trusting CDS Clients: the JWT rules, one refusal each, and the replay store."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cds.api import create_app
from cds.api.auth import (
    Authenticator,
    AuthRejected,
    MemoryReplayStore,
    RedisReplayStore,
    TrustedClients,
    TrustedClientsError,
)
from cds.bootstrap import ConfigError
from tests.api.conftest import BASE_URL, ISSUER, PV, Caller, Keys, app_config, hook_request, make_token, prefetch

REDIS_URL = os.environ.get("CDS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _status(client: Caller, token: str, path: str = "/cds-services") -> int:
    return client.get(path, token=token).status_code


def test_a_good_es384_token_is_accepted(client, keys):
    assert _status(client, make_token(keys, BASE_URL + "/cds-services")) == 200


def test_a_good_rs384_token_is_accepted(client, keys):
    assert _status(client, make_token(keys, BASE_URL + "/cds-services", alg="RS384")) == 200


def test_aud_may_be_a_one_element_array(client, keys):
    assert _status(client, make_token(keys, [BASE_URL + "/cds-services"])) == 200


def test_no_token_is_401_with_no_detail(client):
    response = client.get("/cds-services", token=False)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json == {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "login", "diagnostics": "authentication required"}]}


def _unsigned(claims: dict, header: dict) -> str:
    return jwt.api_jws.base64url_encode(json.dumps(header).encode()).decode() + "." + \
        jwt.api_jws.base64url_encode(json.dumps(claims).encode()).decode() + "."


@pytest.mark.parametrize("case", [
    "alg-none", "hmac", "es256", "wrong-aud", "aud-prefix", "expired", "future-iat", "too-long-lived",
    "unknown-iss", "unknown-kid", "no-jti", "no-exp", "tampered", "jku-not-allowlisted", "not-bearer",
    "garbage", "typ-not-jwt", "rsa-key-for-es384",
])
def test_bad_tokens_are_refused_alike(client, keys, case):
    aud = BASE_URL + "/cds-services"
    now = time.time()
    tokens = {
        "alg-none": lambda: _unsigned({"iss": ISSUER, "aud": aud, "exp": now + 60, "iat": now, "jti": "x"},
                                      {"alg": "none", "typ": "JWT", "kid": "es-1"}),
        "hmac": lambda: jwt.encode({"iss": ISSUER, "aud": aud, "exp": int(now) + 60, "iat": int(now), "jti": "h"},
                                   "a-shared-secret-that-is-long-enough-for-hs384-xx", algorithm="HS384",
                                   headers={"kid": "es-1"}),
        "es256": lambda: make_token(keys, aud, alg="ES256"),
        "wrong-aud": lambda: make_token(keys, BASE_URL + "/cds-services/other"),
        "aud-prefix": lambda: make_token(keys, BASE_URL),
        "expired": lambda: make_token(keys, aud, iat=now - 400, lifetime=300),
        "future-iat": lambda: make_token(keys, aud, iat=now + 600),
        "too-long-lived": lambda: make_token(keys, aud, lifetime=3600),
        "unknown-iss": lambda: make_token(keys, aud, iss="https://evil.test/"),
        "unknown-kid": lambda: make_token(keys, aud, kid="nope"),
        "no-jti": lambda: make_token(keys, aud, drop=("jti",)),
        "no-exp": lambda: make_token(keys, aud, drop=("exp",)),
        "tampered": lambda: (lambda t: t[:-6] + ("AAAAAA" if not t.endswith("AAAAAA") else "BBBBBB"))(
            make_token(keys, aud)),
        "jku-not-allowlisted": lambda: make_token(keys, aud, headers={"jku": "https://evil.test/jwks"}),
        "not-bearer": lambda: "",
        "garbage": lambda: "not.a.jwt",
        "typ-not-jwt": lambda: make_token(keys, aud, headers={"typ": "at+jwt"}),
        "rsa-key-for-es384": lambda: make_token(keys, aud, alg="RS384", kid="es-1"),
    }
    token = tokens[case]()
    if case == "not-bearer":
        response = client.get("/cds-services", token=False, headers={"Authorization": "Basic dXNlcjpwdw=="})
    else:
        response = client.get("/cds-services", token=token)
    assert response.status_code == 401
    assert response.json["issue"][0]["diagnostics"] == "authentication required"


def test_a_token_is_accepted_once_only(client, keys):
    token = make_token(keys, BASE_URL + "/cds-services")
    assert _status(client, token) == 200
    assert _status(client, token) == 401


def test_aud_is_the_endpoint_called_not_another(client, keys):
    token = make_token(keys, BASE_URL + "/cds-services")
    assert client.post(f"/cds-services/{PV}", hook_request(pre=prefetch()), token=token).status_code == 401


def test_feedback_and_evaluate_and_rulesets_need_a_token_too(client):
    assert client.post(f"/cds-services/{PV}/feedback", {"feedback": []}, token=False).status_code == 401
    assert client.post("/evaluate", {"resourceType": "Bundle"}, token=False).status_code == 401
    assert client.get("/rulesets", token=False).status_code == 401


def test_health_metrics_and_openapi_are_open(client):
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert client.get(path, token=False).status_code == 200, path


def test_refusal_reason_is_logged_but_never_the_token(client, keys, capsys):
    token = make_token(keys, BASE_URL + "/wrong")
    capsys.readouterr()
    client.get("/cds-services", token=token)
    err = capsys.readouterr().err
    assert "auth_refused" in err and "aud is not the URL called" in err
    assert token not in err and token.split(".")[1] not in err and token.split(".")[2] not in err


class _JwksServer:
    def __init__(self, jwks: dict) -> None:
        body = json.dumps(jwks).encode()
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_jku_on_the_clients_allowlist_is_fetched_once_and_cached(bundled, audit):
    rotated = ec.generate_private_key(ec.SECP384R1())
    server = _JwksServer({"keys": [Keys.public_jwk(rotated, "rotated-1", "ES384")]})
    try:
        clients = TrustedClients.from_document({"clients": [{"iss": ISSUER, "jku": [server.url]}]})
        app = create_app(app_config(CDS_AUTH="on", CDS_PUBLIC_BASE_URL=BASE_URL, TRUSTED_CLIENTS=clients,
                                    EVALUATOR=bundled, AUDIT=audit))
        caller = Caller(app, None)
        for _ in range(3):
            token = make_token(Keys(), BASE_URL + "/cds-services", key=rotated, kid="rotated-1",
                               headers={"jku": server.url})
            assert caller.get("/cds-services", token=token).status_code == 200
        assert server.hits == 1
        no_jku = make_token(Keys(), BASE_URL + "/cds-services", key=rotated, kid="rotated-1")
        assert caller.get("/cds-services", token=no_jku).status_code == 401
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def test_trusted_clients_file_refuses_private_keys(keys):
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(keys.es384))
    jwk["kid"] = "k"
    with pytest.raises(TrustedClientsError, match="private"):
        TrustedClients.from_document({"clients": [{"iss": ISSUER, "jwks": {"keys": [jwk]}}]})


def test_trusted_clients_file_refuses_plain_http_jku():
    with pytest.raises(TrustedClientsError, match="https"):
        TrustedClients.from_document({"clients": [{"iss": ISSUER, "jku": ["http://ehr.example.org/jwks"]}]})


def test_auth_off_is_refused_unless_bound_to_loopback(bundled):
    for bind in ("0.0.0.0:8080", "10.1.2.3:80", "[::]:8080", "127.0.0.1:8080,0.0.0.0:9090"):
        with pytest.raises(ConfigError, match="loopback"):
            create_app(app_config(CDS_BIND=bind, EVALUATOR=bundled))
    for bind in ("127.0.0.1:8080", "[::1]:8080", "localhost:1", "127.8.9.10:80"):
        create_app(app_config(CDS_BIND=bind, EVALUATOR=bundled, CDS_LOG_LEVEL="error"))


def test_auth_off_is_said_loudly_at_start(bundled, capsys):
    capsys.readouterr()
    create_app(app_config(EVALUATOR=bundled))
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert any(line["event"] == "AUTHENTICATION IS OFF" and line["level"] == "critical" for line in lines)


def test_auth_on_needs_clients_and_a_public_base_url(bundled, trusted_clients_file):
    with pytest.raises(ConfigError, match="CDS_TRUSTED_CLIENTS"):
        create_app(app_config(CDS_AUTH="on", CDS_PUBLIC_BASE_URL=BASE_URL, EVALUATOR=bundled))
    with pytest.raises(ConfigError, match="CDS_PUBLIC_BASE_URL"):
        create_app(app_config(CDS_AUTH="on", CDS_TRUSTED_CLIENTS=str(trusted_clients_file), EVALUATOR=bundled))
    with pytest.raises(ConfigError, match="CDS_AUTH"):
        create_app(app_config(CDS_AUTH="maybe", EVALUATOR=bundled))


def test_memory_replay_store_forgets_after_the_ttl():
    now = [1000.0]
    store = MemoryReplayStore(clock=lambda: now[0])
    assert store.first_use("a", 10)
    assert not store.first_use("a", 10)
    now[0] += 11
    assert store.first_use("a", 10)


@pytest.fixture
def redis_store():
    store = RedisReplayStore(REDIS_URL, prefix=f"cds-test:{uuid.uuid4().hex}:")
    # make test starts the local Redis (scripts/test-services): unreachable is a failure.
    assert store.ping(), f"Redis is not reachable at {REDIS_URL}"
    return store


def test_the_redis_replay_store_is_shared_by_every_worker(keys, trusted_clients_file, redis_store):
    clients = TrustedClients.load(trusted_clients_file)
    worker_a = Authenticator(clients, RedisReplayStore(REDIS_URL, prefix=redis_store.prefix))
    worker_b = Authenticator(clients, RedisReplayStore(REDIS_URL, prefix=redis_store.prefix))
    aud = BASE_URL + "/cds-services"
    token = make_token(keys, aud)
    assert worker_a.verify(f"Bearer {token}", aud).iss == ISSUER
    with pytest.raises(AuthRejected, match="authentication required") as refused:
        worker_b.verify(f"Bearer {token}", aud)
    assert "replay" in refused.value.reason


def test_an_unreachable_replay_store_is_503_not_a_pass(client, keys, bundled, trusted_clients_file, audit):
    app = create_app(app_config(CDS_AUTH="on", CDS_TRUSTED_CLIENTS=str(trusted_clients_file),
                                CDS_PUBLIC_BASE_URL=BASE_URL, EVALUATOR=bundled, AUDIT=audit,
                                REPLAY_STORE=RedisReplayStore("redis://127.0.0.1:1/0")))
    caller = Caller(app, keys)
    response = caller.get("/cds-services")
    assert response.status_code == 503
    assert response.json["issue"][0]["code"] == "transient"
    assert caller.get("/readyz").status_code == 503
