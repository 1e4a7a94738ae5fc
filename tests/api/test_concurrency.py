"""The real production server (gunicorn with deploy/gunicorn.conf.py) on
loopback under concurrent mixed load: no 5xx, no worker crash, and every
answer identical to the same request sent alone.

32 clients x 50 requests, bounded in count and in time; the server is
stopped at the end whatever happens. With Redis reachable the server runs
as in production (authentication on, jti replay store in Redis shared by
both workers, every request with its own token); without it, with
authentication off on loopback. Identical means identical after the
per-answer identifiers (card, suggestion and proposed-resource uuids) are
blanked: those are fresh on purpose, so feedback can name one card.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from cds.api.auth import RedisReplayStore
from tests.api.conftest import (
    OSEL,
    OSIGN,
    PV,
    Keys,
    condition,
    draft_order,
    draft_orders,
    hook_request,
    make_token,
    observation,
    prefetch,
)
from tests.conftest import ROOT
from tests.servers import children, free_port, stop, wait_ready

CLIENTS = 32
REQUESTS_PER_CLIENT = 50
TIME_LIMIT = 240.0
REDIS_URL = os.environ.get("CDS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _requests() -> list[tuple[str, str, Any, dict[str, str]]]:
    """(method, path, body, headers): a mix of every endpoint, dated relative to today."""
    today = datetime.now(UTC).date()

    def ago(days: int) -> str:
        return (today - timedelta(days=days)).isoformat()

    egfr = {"resourceType": "Observation", "id": "o-egfr", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "33914-3"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": ago(5),
            "valueQuantity": {"value": 22, "unit": "mL/min/{1.73_m2}", "system": "http://unitsofmeasure.org",
                              "code": "mL/min/{1.73_m2}"}}
    cauda = prefetch(observation("o-retention", "267064002", ago(2)), observation("o-sciatica", "23056005", ago(12)))
    sciatica = prefetch(observation("o-sciatica", "23056005", ago(12)), egfr)
    lbp = prefetch(conditions=(condition("c-lbp", "279039007", ago(10)),))
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": r} for r in (cauda["patient"], *[e["resource"] for e in cauda["observations"]["entry"]])]}
    json_headers = {"Content-Type": "application/json"}
    return [
        ("POST", f"/cds-services/{PV}", hook_request(pre=cauda), json_headers),
        ("POST", f"/cds-services/{PV}", hook_request(pre=sciatica), json_headers),
        ("POST", f"/cds-services/{OSEL}", hook_request("order-select", pre=lbp, selections=["ServiceRequest/sr-ct"],
                                                       draftOrders=draft_orders(draft_order("sr-ct", "72133"))),
         json_headers),
        ("POST", f"/cds-services/{OSIGN}", hook_request("order-sign", pre=sciatica,
                                                        draftOrders=draft_orders(draft_order("sr-emg", "95886"))),
         json_headers),
        ("POST", f"/cds-services/{PV}", hook_request(pre={"observations": cauda["observations"]}),
         json_headers),  # no Patient and no FHIR access: 412
        ("POST", "/evaluate", bundle, json_headers),
        ("POST", "/evaluate", bundle, {**json_headers, "Accept": "application/fhir+json", "X-Request-ID": "fhir-1"}),
        ("POST", "/evaluate", {"resourceType": "Bundle", "entry": "oops"}, json_headers),  # 400
        ("GET", "/cds-services", None, {}),
        ("GET", "/rulesets", None, {}),
        ("GET", "/healthz", None, {}),
    ]


def _normalized(response: requests.Response) -> tuple[int, str, str]:
    return response.status_code, response.headers.get("Content-Type", ""), UUID.sub("<uuid>", response.text)


@pytest.mark.slow
def test_real_gunicorn_under_concurrent_mixed_load(tmp_path: Path, keys: Keys, trusted_clients_file: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    secured = RedisReplayStore(REDIS_URL).ping()
    env = {**os.environ, "CDS_BIND": f"127.0.0.1:{port}", "CDS_WORKERS": "2", "CDS_THREADS": "4",
           "CDS_LOG_LEVEL": "warning", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
           "CDS_AUTH": "on" if secured else "off"}
    env.pop("CDS_DATABASE_URL", None)
    if secured:
        env.update({"CDS_TRUSTED_CLIENTS": str(trusted_clients_file), "CDS_PUBLIC_BASE_URL": base,
                    "CDS_REDIS_URL": REDIS_URL, "CDS_REDIS_PREFIX": f"cds-test:{port}:{time.time_ns()}:"})
    log_path = tmp_path / "gunicorn.log"
    log = log_path.open("w")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py")],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    samples = _requests()

    def send(session: requests.Session, index: int) -> requests.Response:
        method, path, body, headers = samples[index]
        headers = dict(headers)
        if secured:
            headers["Authorization"] = f"Bearer {make_token(keys, base + path)}"
        data = json.dumps(body) if body is not None else None
        return session.request(method, base + path, data=data, headers=headers, timeout=30)

    try:
        wait_ready(server, f"{base}/readyz", log_path)

        workers = children(server.pid)
        assert len(workers) == 2, workers
        with requests.Session() as session:
            alone = [_normalized(send(session, i)) for i in range(len(samples))]
        assert [a[0] for a in alone] == [200, 200, 200, 200, 412, 200, 200, 400, 200, 200, 200], alone

        stop_at = time.monotonic() + TIME_LIMIT
        mismatches: list[str] = []
        statuses: dict[int, int] = {}
        lock = threading.Lock()

        def client(number: int) -> int:
            done = 0
            with requests.Session() as session:
                for k in range(REQUESTS_PER_CLIENT):
                    if time.monotonic() > stop_at:
                        break
                    index = (number * 7 + k) % len(samples)
                    got = _normalized(send(session, index))
                    with lock:
                        statuses[got[0]] = statuses.get(got[0], 0) + 1
                        if got != alone[index]:
                            mismatches.append(f"request {index}: {got[0]} {got[2][:200]}")
                    done += 1
            return done

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            done = sum(pool.map(client, range(CLIENTS)))
        elapsed = time.monotonic() - started

        assert done == CLIENTS * REQUESTS_PER_CLIENT, f"only {done} requests within {TIME_LIMIT} s"
        assert not any(status >= 500 for status in statuses), statuses
        assert not mismatches, f"{len(mismatches)} answers differ from the same request alone: {mismatches[:3]}"
        metrics = requests.get(f"{base}/metrics", timeout=5).text
        total = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                    if line.startswith("cds_http_requests_total{"))
        assert total >= done + len(samples), total  # every worker's numbers, added up
        assert children(server.pid) == workers, "a worker died and was replaced"
        print(f"\n{done} concurrent requests in {elapsed:.1f} s ({done / elapsed:.0f}/s), statuses {statuses}, "
              f"auth {'on (Redis replay store)' if secured else 'off'}")
    finally:
        stop(server)
        log.close()
    text = log_path.read_text()
    for sign in ("WORKER TIMEOUT", "Worker exited", "was sent SIGKILL", "Traceback", "internal_error"):
        assert sign not in text, text[-3000:]
