"""Structured logs: one JSON object per line on stderr, a request id bound
through context variables, and no PHI.

What may be logged is decided where events are written (cds.api.http): the
endpoint's route (never the raw path or query), method, status, timings,
counts, the triage, rule ids, the client's ``iss``. Never: names,
identifiers (patient, resource or hookInstance ids), birth dates, values,
diagnostics text (it can quote the request), tokens.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from typing import Any

import structlog

_write_lock = threading.Lock()


class _StderrLogger:
    """Writes each rendered event as one line to the current sys.stderr."""

    def msg(self, message: str) -> None:
        with _write_lock:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _factory(*_args: Any) -> _StderrLogger:
    return _StderrLogger()


def configure(level: str = "info", fmt: str = "json") -> None:
    """Configure structlog for the process (idempotent)."""
    renderer: Any = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(
        colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=_factory,
        cache_logger_on_first_use=False,
    )


def get_logger() -> Any:
    return structlog.get_logger("cds.api")


def stack_summary(error: BaseException) -> list[str]:
    """Where an unexpected error happened, without its message (which may quote data)."""
    frames = traceback.extract_tb(error.__traceback__)[-8:]
    return [f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno} {frame.name}" for frame in frames]
