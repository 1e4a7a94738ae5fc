"""A real gunicorn (deploy/gunicorn.conf.py) on loopback and a bounded client.

Every loop here is bounded in time and count; every server is stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers import children, free_port, stop, wait_ready

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "gunicorn.conf.py"
AS_OF = "2026-11-22"


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base: str
    log: Path

    def workers(self) -> list[int]:
        """Pids of the master's children (the gunicorn workers)."""
        return sorted(children(self.process.pid))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextmanager
def gunicorn(env: dict[str, str], tmp: Path, *, workers: int = 2, threads: int = 4) -> Iterator[Server]:
    port = free_port()
    full = {**os.environ, "CDS_AUTH": "off", "CDS_BIND": f"127.0.0.1:{port}", "CDS_WORKERS": str(workers),
            "CDS_THREADS": str(threads), "CDS_LOG_LEVEL": "warning",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"), **env}
    log = tmp / f"server-{port}.log"
    with log.open("w") as err:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(CONF)], cwd=ROOT, env=full,
                                   stdout=subprocess.DEVNULL, stderr=err)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(process, f"{server.base}/readyz", log, timeout=60)
        yield server
    finally:
        stop(process)


@dataclass
class Outcome:
    status: int | None
    patient: str
    body: Any = None
    error: str | None = None
    at: float = 0.0


@dataclass
class Load:
    """Closed-loop clients posting /evaluate, each call a distinct patient."""

    base: str
    make_body: Callable[[str], dict[str, Any]]
    threads: int = 4
    max_calls: int = 100_000
    pause: float = 0.0
    #: calls per second for all threads together (0: as fast as answered)
    rate: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _n: int = 0
    _start: float = field(default_factory=time.monotonic)

    def _next(self) -> int | None:
        with self._lock:
            if self._n >= self.max_calls:
                return None
            self._n += 1
            return self._n

    def call(self, n: int) -> Outcome:
        patient = f"load-{os.getpid()}-{n}"
        body = json.dumps(self.make_body(patient)).encode()
        request = urllib.request.Request(f"{self.base}/evaluate?asOf={AS_OF}", data=body, method="POST",
                                         headers={"Content-Type": "application/fhir+json"})
        at = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return Outcome(response.status, f"Patient/{patient}", json.loads(response.read()), at=at)
        except urllib.error.HTTPError as exc:
            try:
                payload = json.loads(exc.read())
            except ValueError:
                payload = None
            return Outcome(exc.code, f"Patient/{patient}", payload, at=at)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            return Outcome(None, f"Patient/{patient}", error=type(exc).__name__, at=at)

    def _run(self) -> None:
        while not self._stop.is_set():
            n = self._next()
            if n is None:
                return
            if self.rate:
                delay = self._start + n / self.rate - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
            outcome = self.call(n)
            with self._lock:
                self.outcomes.append(outcome)
            if self.pause:
                self._stop.wait(self.pause)

    @contextmanager
    def running(self) -> Iterator[Load]:
        self._start = time.monotonic()
        workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        try:
            yield self
        finally:
            self._stop.set()
            for worker in workers:
                worker.join(timeout=60)

    def statuses(self) -> Counter[int | str | None]:
        with self._lock:
            return Counter(o.status if o.status is not None else o.error for o in self.outcomes)

    def answered(self) -> list[str]:
        with self._lock:
            return [o.patient for o in self.outcomes if o.status == 200]


def sciatica(patient: str) -> dict[str, Any]:
    """A small record with a routine answer (and a red flag every so often)."""
    snomed = "http://snomed.info/sct"
    entries = [{"resource": {"resourceType": "Patient", "id": patient, "birthDate": "1970-01-01", "gender": "male"}},
               {"resource": {"resourceType": "Observation", "id": "o1", "status": "final",
                             "code": {"coding": [{"system": snomed, "code": "23056005"}]},
                             "subject": {"reference": f"Patient/{patient}"}, "valueBoolean": True,
                             "effectiveDateTime": "2026-11-01"}}]
    if hash(patient) % 5 == 0:
        entries.append({"resource": {"resourceType": "Observation", "id": "o2", "status": "final",
                                     "code": {"coding": [{"system": snomed, "code": "267064002"}]},
                                     "subject": {"reference": f"Patient/{patient}"}, "valueBoolean": True,
                                     "effectiveDateTime": "2026-11-20"}})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}
