"""Fixtures for the audit tests: every store test runs on SQLite and on PostgreSQL.

PostgreSQL is the real server on 127.0.0.1:5432 (database ``test``, user
``postgres``, trust auth; .ci/run starts it). Each test gets a fresh schema
named after this session, dropped after the test; the session drops any
left over. Set CDS_TEST_POSTGRES_URL to point elsewhere.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cds.audit import AuditStore
from cds.evaluation import Evaluator
from cds.knowledge import load_ruleset

POSTGRES_URL = os.environ.get("CDS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SESSION_PREFIX = f"cds_audit_t{uuid.uuid4().hex[:8]}"
_counter = itertools.count(1)
AS_OF = date(2026, 11, 22)


def _pg_admin() -> psycopg.Connection[Any]:
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRES_URL)
    return psycopg.connect(host=url.host, port=url.port or 5432, dbname=url.database, user=url.username,
                           password=url.password, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def postgres_available() -> Iterator[bool]:
    try:
        with _pg_admin():
            pass
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_URL} ({exc}); start it "
                    "(`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`)")
    yield True
    with _pg_admin() as admin:
        for (name,) in admin.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                                     (SESSION_PREFIX + "%",)).fetchall():
            admin.execute(f'DROP SCHEMA "{name}" CASCADE')


class StoreFactory:
    """Makes stores (or just URLs) on one backend, each on a fresh database."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self.schemas: list[str] = []
        self.stores: list[AuditStore] = []

    def location(self) -> tuple[str, str | None]:
        """A fresh (url, schema) nobody has used."""
        n = next(_counter)
        if self.backend == "sqlite":
            return f"sqlite:///{self.tmp_path / f'audit-{n}.sqlite3'}", None
        schema = f"{SESSION_PREFIX}_{n}"
        with _pg_admin() as admin:
            admin.execute(f'CREATE SCHEMA "{schema}"')
        self.schemas.append(schema)
        return POSTGRES_URL, schema

    def open(self, url: str, schema: str | None, **kwargs: Any) -> AuditStore:
        store = AuditStore.open(url, schema=schema, **kwargs)
        self.stores.append(store)
        return store

    def __call__(self, **kwargs: Any) -> AuditStore:
        url, schema = self.location()
        return self.open(url, schema, **kwargs)

    def close(self) -> None:
        for store in self.stores:
            store.close()
        if self.schemas:
            with _pg_admin() as admin:
                for schema in self.schemas:
                    admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    if request.param == "postgresql":
        request.getfixturevalue("postgres_available")
    factory = StoreFactory(request.param, tmp_path)
    yield factory
    factory.close()


@pytest.fixture
def store(make_store: StoreFactory) -> AuditStore:
    """A migrated, empty store keeping full input, on each backend."""
    return make_store(store_input="full")


#: a frozen ruleset of our own, so clinical edits to the bundled one never move these tests
RULESET = Path(__file__).resolve().parent / "data" / "ruleset"


@pytest.fixture(scope="session")
def evaluator() -> Evaluator:
    return Evaluator(load_ruleset(RULESET))


@pytest.fixture
def record_bundle(store: AuditStore, evaluator: Evaluator) -> Callable[..., Any]:
    """Evaluate a bundle and record it in ``store``, as the service does."""
    import json

    from cds.audit.recording import Caller, evaluate_and_record
    from tests.audit.bundles import cards_for

    def record(bundle: dict[str, Any], caller: Caller | None = None, *, as_of: date = AS_OF) -> Any:
        body = json.dumps(bundle).encode()
        caller = caller or Caller(client="ehr-1", user="Practitioner/7")
        return evaluate_and_record(evaluator, store, body, as_of, caller, make_cards=cards_for)
    return record
