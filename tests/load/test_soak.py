"""Soak: minutes at half the measured capacity, on a real gunicorn with the
shipped config and the audit on SQLite: no errors, no memory growth."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cds.audit import AuditStore
from tests.load.harness import Load, gunicorn, rss_mb, sciatica

pytestmark = pytest.mark.slow

#: seconds at half capacity (CDS_SOAK_SECONDS to change)
SOAK_SECONDS = float(os.environ.get("CDS_SOAK_SECONDS", "150"))
#: resident memory a worker may gain over the soak once warm
GROWTH_MB = 10.0


def test_half_capacity_for_minutes_gives_no_errors_and_no_memory_growth(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    AuditStore.open(url).close()
    with gunicorn({"CDS_DATABASE_URL": url}, tmp_path) as server:
        probe = Load(server.base, sciatica, threads=8, max_calls=5_000)
        started = time.monotonic()
        with probe.running():
            time.sleep(6.0)
        capacity = len(probe.outcomes) / (time.monotonic() - started)
        assert set(probe.statuses()) == {200}, probe.statuses()
        rate = capacity / 2
        soak = Load(server.base, sciatica, threads=8, rate=rate, max_calls=int(rate * (SOAK_SECONDS + 30)) + 10)
        with soak.running():
            time.sleep(15.0)  # warm: caches, pools, the allocator's arenas
            workers = server.workers()
            warm = {pid: rss_mb(pid) for pid in workers}
            time.sleep(SOAK_SECONDS)
            end = {pid: rss_mb(pid) for pid in server.workers() if pid in warm}
        statuses = soak.statuses()
    assert set(statuses) == {200}, statuses
    achieved = len(soak.outcomes) / (SOAK_SECONDS + 15)
    assert achieved > rate * 0.8, f"the soak ran at {achieved:.1f}/s, asked {rate:.1f}/s"
    assert end, "every worker was replaced during the soak: memory cannot be compared"
    growth = {pid: end[pid] - warm[pid] for pid in end}
    assert all(g < GROWTH_MB for g in growth.values()), (
        f"worker memory grew: {growth} MB (warm {warm}, capacity {capacity:.1f}/s)")
