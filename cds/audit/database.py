"""Engines for the two supported stores, configured for a serialized chain.

SQLite: WAL (readers never block the writer), ``synchronous=FULL`` (a
committed record survives power loss, not only a crash), a generous busy
timeout, and transactions begun by us: ``BEGIN IMMEDIATE`` for appends, so
reading the chain head and writing the next link happen under the one
write lock, across threads and processes. PostgreSQL (psycopg 3): appends
lock the chain-head row with ``SELECT ... FOR UPDATE``.
"""

from __future__ import annotations

import os
import re
import weakref
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

from cds.audit.settings import AuditConfigError

SQLITE_BUSY_TIMEOUT_S = 60.0
PG_CONNECT_TIMEOUT_S = 5
#: execution option naming how a SQLite transaction begins
SQLITE_BEGIN = "cds_sqlite_begin"
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def normalize_url(url: str | URL) -> URL:
    """``postgresql://`` means psycopg 3 here; anything but SQLite or PostgreSQL is refused."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # noqa: BLE001 - sqlalchemy raises ArgumentError and others
        raise AuditConfigError(f"not a database URL: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername != "postgresql+psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if backend not in ("sqlite", "postgresql"):
        raise AuditConfigError(f"audit store supports sqlite and postgresql URLs, not {backend!r}")
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise AuditConfigError("the audit store needs a SQLite file, not an in-memory database")
    return parsed


def make_engine(url: str | URL, *, schema: str | None = None, **kwargs: Any) -> Engine:
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, **kwargs)
    return _postgresql_engine(parsed, schema, **kwargs)


def _sqlite_engine(url: URL, **kwargs: Any) -> Engine:
    if url.database:
        directory = os.path.dirname(os.path.abspath(url.database))
        os.makedirs(directory, exist_ok=True)
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False, **kwargs.pop("connect_args", {})}
    engine = create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event, not the driver, start transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    _dispose_after_fork(engine)
    return engine


def _postgresql_engine(url: URL, schema: str | None, **kwargs: Any) -> Engine:
    # A database that does not answer fails the call in seconds (503), not minutes.
    connect_args: dict[str, Any] = {"connect_timeout": PG_CONNECT_TIMEOUT_S, **kwargs.pop("connect_args", {})}
    if schema:
        if not _SCHEMA_NAME.match(schema):
            raise AuditConfigError(f"not a plain schema name: {schema!r}")
        connect_args["options"] = f"-csearch_path={schema}"
    kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    _dispose_after_fork(engine)
    return engine


def _dispose_after_fork(engine: Engine) -> None:
    """A forked worker (gunicorn --preload) must not share its parent's sockets."""
    ref = weakref.ref(engine)

    def _after_fork() -> None:
        alive = ref()
        if alive is not None:
            alive.dispose(close=False)

    os.register_at_fork(after_in_child=_after_fork)
