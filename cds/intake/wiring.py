"""Builds the intake from the configuration and the service's adapters (called by create_app)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from cds.intake.migrate import upgrade
from cds.intake.models import Notification
from cds.intake.notify import DeliveryWorker, Notifier, load_subscribers
from cds.intake.service import IntakeService
from cds.intake.store import RecordStore
from cds.intake.subscriptions import Subscriptions


@dataclass
class IntakeRuntime:
    service: IntakeService
    subscriptions: Subscriptions
    notifier: Notifier
    worker: DeliveryWorker | None
    now: Callable[[], datetime]

    def notified(self) -> None:
        """A commit wrote notifications: deliver them now (the worker starts on first need)."""
        if self.worker is not None:
            self.worker.start()
            self.worker.wake()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()


def build(config: Any, services: Any, *,
          observe: Callable[[dict[str, Any]], None] | None = None) -> IntakeRuntime | None:
    """The intake on the audit store's database, or None when the audit is not in a database
    (the record must be as durable as the trail that explains it)."""
    from cds.audit import AuditStore

    audit = services.audit
    if not isinstance(audit, AuditStore):
        return None
    upgrade(audit.engine)
    secret_text = getattr(config, "notify_secret", None)
    secret = secret_text.encode() if secret_text else None
    subscribers_file = getattr(config, "subscribers_file", None)
    subscribers = load_subscribers(subscribers_file, signed=secret is not None) if subscribers_file else []
    now = config.extras.get("NOW") or (lambda: datetime.now(UTC))
    notifier = Notifier(audit.engine, subscribers, secret=secret, transport=config.extras.get("NOTIFY_TRANSPORT"),
                        now=now)
    worker = DeliveryWorker(notifier) if getattr(config, "notify_worker", True) else None
    runtime = IntakeRuntime(
        service=IntakeService(RecordStore(audit.engine), services.evaluator, audit, notifier=notifier, now=now,
                              observe=observe),
        subscriptions=Subscriptions(audit.engine, signed=secret is not None), notifier=notifier, worker=worker,
        now=now)
    runtime.service.on_commit = runtime.notified
    if worker is not None:
        with audit.engine.connect() as conn:
            pending = conn.execute(select(func.count()).select_from(Notification)
                                   .where(Notification.status == "pending")).scalar()
        if pending:
            worker.start()  # retries left over from before a restart
    return runtime
