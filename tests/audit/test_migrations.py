"""Alembic migrations: they match the models, run once under racing workers, and gate start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner

from cds.audit import AuditStore
from cds.audit.database import make_engine
from cds.audit.migrate import current_revision, downgrade, head_revision, upgrade
from cds.audit.models import Base
from cds.audit.settings import AuditConfigError
from cds.cli import main


def test_the_migrated_schema_is_the_models(store: AuditStore) -> None:
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_down_and_up_again(store: AuditStore, record_bundle) -> None:
    from tests.audit.bundles import sciatica

    downgrade(store.engine, "base")
    assert current_revision(store.engine) is None
    upgrade(store.engine)
    assert current_revision(store.engine) == head_revision()
    record_bundle(sciatica())
    assert store.verify().ok


def test_an_old_schema_is_refused_without_migrate(make_store) -> None:
    url, schema = make_store.location()
    with pytest.raises(AuditConfigError, match="cds db upgrade"):
        make_store.open(url, schema, migrate=False)
    result = CliRunner().invoke(main, ["db", "upgrade", "--database", url, *(["--schema", schema] if schema else [])])
    assert result.exit_code == 0, result.output
    assert "revision 0001" in result.output
    make_store.open(url, schema, migrate=False)


def test_workers_starting_together_migrate_once(make_store) -> None:
    url, schema = make_store.location()
    code = ("import sys; from cds.audit import AuditStore; "
            "s = AuditStore.open(sys.argv[1], schema=sys.argv[2] or None); print(s.head()[0]); s.close()")
    workers = [subprocess.Popen([sys.executable, "-c", code, url, schema or ""], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [w.communicate(timeout=120) for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0, 0], outputs
    engine = make_engine(url, schema=schema)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_db_upgrade_migrates_the_audit_and_the_intake_histories(tmp_path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'both.sqlite3'}"
    done = subprocess.run([sys.executable, "-m", "cds.cli", "db", "upgrade", "--database", url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    current = subprocess.run([sys.executable, "-m", "cds.cli", "db", "current", "--database", url],
                             capture_output=True, text=True, timeout=120).stdout.splitlines()
    assert [line.split(":")[0] for line in current] == ["audit", "intake"]
    for line in current:
        now, needed = line.split("current ")[1].split("; this version needs ")
        assert now == needed
