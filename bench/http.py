"""HTTP figures: the production server (deploy/gunicorn.conf.py) on loopback,
driven by wrk, against a bare Flask endpoint under the same settings.

Every call carries a fresh client JWT (the service refuses a replayed
``jti``), signed before the run so signing costs the server nothing; wrk
reads them from a file, each of its threads its own share.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "deploy" / "gunicorn.conf.py"
SERVICE = "back-neuropathy-patient-view"
ISSUER = "https://bench-ehr.local/"
POSTGRES_URL = os.environ.get("CDS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

_LUA = r"""
local tokens, n, path, body = {}, 0, nil, nil
local thread_id = 0
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  path, body = args[1], io.open(args[2]):read("*a")
  local tid, threads, i = tonumber(tid), tonumber(args[4]), 0
  for line in io.lines(args[3]) do
    if i % threads == tid then table.insert(tokens, line) end
    i = i + 1
  end
end
function request()
  n = n + 1
  local headers = {["Content-Type"] = "application/json"}
  if #tokens > 0 then headers["Authorization"] = "Bearer " .. tokens[(n - 1) % #tokens + 1] end
  return wrk.format("POST", path, headers, body)
end
function done(summary, latency, requests)
  io.write(string.format('WRK {"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d}\n', summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Client:
    """A trusted EHR: its keys, the trusted-clients file, signed tokens."""

    def __init__(self, directory: Path) -> None:
        import jwt
        from cryptography.hazmat.primitives.asymmetric import ec

        self._jwt = jwt
        self.key = ec.generate_private_key(ec.SECP384R1())
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": "bench-1", "use": "sig", "alg": "ES384"})
        (directory / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
        self.trusted = directory / "trusted-clients.json"
        self.trusted.write_text(json.dumps({"clients": [
            {"iss": ISSUER, "name": "Bench EHR", "jwks_file": "jwks.json"}]}))

    def token(self, aud: str, lifetime: int = 280) -> str:
        now = int(time.time())
        return self._jwt.encode({"iss": ISSUER, "sub": "bench", "aud": aud, "iat": now, "exp": now + lifetime,
                                 "jti": str(uuid.uuid4())}, self.key, algorithm="ES384", headers={"kid": "bench-1"})


@contextmanager
def server(env: dict[str, str], log: Path, app: str | None = None, port: int | None = None) -> Iterator[str]:
    """gunicorn with the shipped config; yields the base URL once ready."""
    port = port or free_port()
    full = {**os.environ, **env, "CDS_BIND": f"127.0.0.1:{port}",
            "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="cds-bench-metrics-")}
    args = [sys.executable, "-m", "gunicorn", "-c", str(CONF)] + ([app] if app else [])
    with log.open("w") as err:
        proc = subprocess.Popen(args, cwd=ROOT, env=full, stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(full["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def wrk(base: str, path: str, body_file: Path, tokens_file: Path, *, seconds: int, connections: int,
        threads: int = 2) -> dict[str, Any]:
    script = body_file.parent / "bench.lua"
    script.write_text(_LUA)
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
                          "-s", str(script), base, "--", path, str(body_file), str(tokens_file), str(threads)],
                         capture_output=True, text=True, timeout=seconds + 60, check=True)
    line = next(li for li in out.stdout.splitlines() if li.startswith("WRK "))
    raw = json.loads(line[4:])
    return {"requests_per_second": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
            "p50_ms": round(raw["p50_us"] / 1000, 2), "p90_ms": round(raw["p90_us"] / 1000, 2),
            "p99_ms": round(raw["p99_us"] / 1000, 2), "requests": raw["requests"],
            "non_2xx": raw["status_errors"], "socket_errors": raw["socket_errors"]}


def _post(url: str, body: bytes, token: str | None) -> bytes:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return bytes(response.read())


def run(request_body: dict[str, Any], *, seconds: int = 8, connections: int = 16, workers: int = 2,
        threads: int = 4, rounds: int = 4, max_rate: int = 1500) -> dict[str, Any]:
    """The service (audit in memory, on SQLite, on PostgreSQL) and the bare
    floor, all running at once and measured in alternating slices of
    ``seconds / rounds``: a neighbour's load on this shared machine then
    falls on every side alike."""
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    from contextlib import ExitStack

    from cds.audit import AuditStore

    work = Path(tempfile.mkdtemp(prefix="cds-bench-http-"))
    body_file = work / "body.json"
    body = json.dumps(request_body).encode()
    body_file.write_bytes(body)
    path = f"/cds-services/{SERVICE}"
    client = Client(work)
    common = {"CDS_WORKERS": str(workers), "CDS_THREADS": str(threads), "CDS_LOG_LEVEL": "warning",
              "CDS_REDIS_URL": os.environ.get("CDS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
              "CDS_REDIS_PREFIX": f"cds-bench-{os.getpid()}:"}
    slice_seconds = max(1, seconds // rounds)
    results: dict[str, Any] = {"config": {
        "workers": workers, "threads": threads, "connections": connections, "seconds": slice_seconds * rounds,
        "rounds": rounds, "request_bytes": len(body), "load": "wrk, one slice per side per round, sides alternating",
        "latency": "p50/p99: median over the slices of each slice's percentile"}}
    schema = f"bench_{os.getpid()}"
    # memory: no audit store at all, to show what the durable record costs
    stores = {"memory": (None, None), "sqlite": (f"sqlite:///{work / 'audit.db'}", None),
              "postgresql": (POSTGRES_URL, schema)}
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        with ExitStack() as stack:
            bases: dict[str, str] = {}
            answer = b""
            for name, (url, schema_name) in stores.items():
                if url:
                    AuditStore.open(url, schema=schema_name).close()  # migrated before workers start
                port = free_port()  # the token audience names it
                env = {**common, "CDS_AUTH": "on", "CDS_TRUSTED_CLIENTS": str(client.trusted),
                       "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                       "CDS_DATABASE_URL": url or "", "CDS_AUDIT_SCHEMA": schema_name or ""}
                base = stack.enter_context(server(env, work / f"{name}.log", port=port))
                answer = _post(base + path, body, client.token(base + path))
                assert b'"cards"' in answer, answer[:300]
                bases[f"service_audit_{name}"] = base
            bare_env = {**common, "CDS_AUTH": "off", "CDS_BENCH_ANSWER_BYTES": str(len(answer))}
            bases["bare_flask"] = stack.enter_context(server(bare_env, work / "bare.log",
                                                             app="bench.bare_app:create_app()"))
            assert len(_post(bases["bare_flask"] + path, body, None)) == len(answer)
            slices: dict[str, list[dict[str, Any]]] = {name: [] for name in bases}
            for round_number in range(rounds):
                for name, base in bases.items():
                    tokens = work / f"tokens-{name}-{round_number}.txt"
                    count = 0 if name == "bare_flask" else max_rate * slice_seconds
                    tokens.write_text("".join(client.token(base + path) + "\n" for _ in range(count)))
                    slices[name].append(wrk(base, path, body_file, tokens, seconds=slice_seconds,
                                            connections=connections))
        for name, parts in slices.items():
            results[name] = _merge(parts)
        results["bare_flask"]["answer_bytes"] = len(answer)
        for name, (url, schema_name) in stores.items():
            row = results[f"service_audit_{name}"]
            row["cards"] = len(json.loads(answer)["cards"])
            row["ratio_to_bare"] = round(row["requests_per_second"] / results["bare_flask"]["requests_per_second"], 3)
            if url:
                store = AuditStore.open(url, schema=schema_name)
                try:
                    report = store.verify()
                    row["audit_chain_ok"] = bool(report.ok)
                    row["audit_records"] = int(report.head_seq)
                finally:
                    store.close()
    finally:
        try:
            import psycopg

            with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
                admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        except Exception as exc:  # noqa: BLE001 - cleanup only; say so
            print(f"bench: could not drop schema {schema}: {exc}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    return results


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    import statistics

    seconds = sum(p["requests"] / p["requests_per_second"] for p in parts if p["requests_per_second"])
    requests = sum(p["requests"] for p in parts)
    return {"requests_per_second": round(requests / seconds, 1) if seconds else 0.0,
            "p50_ms": round(statistics.median(p["p50_ms"] for p in parts), 2),
            "p90_ms": round(statistics.median(p["p90_ms"] for p in parts), 2),
            "p99_ms": round(statistics.median(p["p99_ms"] for p in parts), 2),
            "requests": requests, "non_2xx": sum(p["non_2xx"] for p in parts),
            "socket_errors": sum(p["socket_errors"] for p in parts),
            "per_slice_requests_per_second": [p["requests_per_second"] for p in parts]}
