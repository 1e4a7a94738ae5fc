"""Intake benchmark: posts of one observation per second, each re-evaluating its patient,
with 10 and with 10,000 patients on record, on SQLite and on PostgreSQL.

The claim measured: a post re-evaluates one patient, so its cost does not
grow with the number of other patients. Each post goes through the Flask
app in-process (no socket: the network is not what is measured), with the
SQL audit store, authentication off and notification delivery off.
Patients are seeded in transactions of 50 (one evaluation each, one
commit). The two sizes are measured alternately in rounds, so drift on a
shared machine hits both. Writes bench/intake-results.json.

    .venv/bin/python -m bench.intake [--posts 300] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "intake-results.json"
POSTGRES_URL = os.environ.get("CDS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SNOMED = "http://snomed.info/sct"
# findings that move the evaluation in different ways (sciatica, numbness, weakness, retention)
CODES = ("23056005", "44077006", "26544005", "267064002", "279039007")


def _observation(rid: str, pid: str, code: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final",
            "code": {"coding": [{"system": SNOMED, "code": code}]}, "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": "2026-11-10", "valueBoolean": True}


def _app(url: str, schema: str | None, evaluator: Any) -> tuple[Any, Any]:
    from cds.api import create_app
    from cds.api.auth import MemoryReplayStore
    from cds.audit import AuditStore

    store = AuditStore.open(url, schema=schema)
    app = create_app({"CDS_AUTH": "off", "CDS_BIND": "127.0.0.1:8080", "CDS_LOG_LEVEL": "error",
                      "CDS_NOTIFY_WORKER": "off", "EVALUATOR": evaluator, "AUDIT": store,
                      "REPLAY_STORE": MemoryReplayStore(), "NOW": lambda: datetime.now(UTC)})
    return app, store


def _seed(client: Any, patients: int) -> float:
    started = time.perf_counter()
    for first in range(0, patients, 50):
        entries = []
        for n in range(first, min(first + 50, patients)):
            pid = f"p{n}"
            entries.append({"resource": {"resourceType": "Patient", "id": pid, "birthDate": "1970-01-01",
                                         "gender": "female"}, "request": {"method": "PUT", "url": f"Patient/{pid}"}})
            entries.append({"resource": _observation(f"{pid}-lbp", pid, "279039007"),
                            "request": {"method": "PUT", "url": f"Observation/{pid}-lbp"}})
        answer = client.post("/fhir", data=json.dumps({"resourceType": "Bundle", "type": "transaction",
                                                       "entry": entries}), content_type="application/fhir+json")
        assert answer.status_code == 200, answer.json
    return time.perf_counter() - started


def _posts(client: Any, patients: int, count: int, rng: random.Random) -> list[float]:
    """Each post a new version of the patient's one charted finding (another code, another day),
    so records stay the same size on both sides and only the number of other patients differs."""
    times = []
    for _ in range(count):
        pid = f"p{rng.randrange(patients)}"
        rid = f"{pid}-charted"
        resource = _observation(rid, pid, rng.choice(CODES))
        resource["effectiveDateTime"] = f"2026-11-{rng.randrange(1, 22):02d}"
        resource["note"] = [{"text": uuid.uuid4().hex}]  # never the same content twice
        started = time.perf_counter()
        answer = client.put(f"/fhir/Observation/{rid}", data=json.dumps(resource),
                            content_type="application/fhir+json")
        times.append(time.perf_counter() - started)
        assert answer.status_code in (200, 201), answer.json
    return times


def _locations(backend: str, tmp: Path) -> tuple[list[tuple[str, str | None]], Any]:
    if backend == "sqlite":
        return [(f"sqlite:///{tmp / f'intake-{n}.sqlite3'}", None) for n in (10, 10_000)], None
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(POSTGRES_URL)
    admin = psycopg.connect(host=u.host, port=u.port or 5432, dbname=u.database, user=u.username,
                            password=u.password, autocommit=True)
    schemas = [f"bench_intake_{uuid.uuid4().hex[:8]}_{n}" for n in (10, 10_000)]
    for s in schemas:
        admin.execute(f'CREATE SCHEMA "{s}"')
    return [(POSTGRES_URL, s) for s in schemas], (admin, schemas)


def run(backend: str, posts: int, rounds: int, evaluator: Any, tmp: Path) -> dict[str, Any]:
    locations, cleanup = _locations(backend, tmp)
    sides = []
    try:
        for (url, schema), patients in zip(locations, (10, 10_000), strict=True):
            app, store = _app(url, schema, evaluator)
            client = app.test_client()
            seed_s = _seed(client, patients)
            _posts(client, patients, 20, random.Random(1))  # warm-up
            sides.append({"patients": patients, "app": app, "store": store, "client": client, "seed_s": seed_s,
                          "times": []})
        rng = random.Random(7)
        for _ in range(rounds):
            for side in sides:
                side["times"] += _posts(side["client"], side["patients"], posts // rounds, rng)
        out = {}
        for side in sides:
            times = side["times"]
            out[str(side["patients"])] = {
                "posts": len(times), "posts_per_s": round(len(times) / sum(times), 1),
                "median_ms": round(statistics.median(times) * 1000, 2),
                "p95_ms": round(sorted(times)[int(len(times) * 0.95) - 1] * 1000, 2),
                "seed_s": round(side["seed_s"], 1)}
            side["store"].close()
        small, large = out["10"], out["10000"]
        out["ratio_10000_to_10"] = round(small["posts_per_s"] / large["posts_per_s"], 2)
        return out
    finally:
        if cleanup is not None:
            admin, schemas = cleanup
            for s in schemas:
                admin.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')
            admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    from cds.evaluation import Evaluator
    from cds.knowledge import load_ruleset

    evaluator = Evaluator(load_ruleset())
    results: dict[str, Any] = {"what": "PUT of one Observation through the app in-process, each re-evaluating its "
                                       "patient and recording the audit; posts per second with 10 and 10,000 "
                                       "patients on record; ratio = 10-patient rate / 10,000-patient rate "
                                       "(1.0: cost independent of other patients)",
                               "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="cds-bench-intake-") as tmp:
        for backend in args.backends.split(","):
            results[backend] = run(backend, args.posts, args.rounds, evaluator, Path(tmp))
            print(backend, json.dumps(results[backend]), flush=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
