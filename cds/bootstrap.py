"""Wiring: configuration from the environment, read once, and the objects
the entry points need (ruleset and evaluator, audit sink, replay store).

Nothing here knows HTTP. The Flask factory (cds.api.create_app) and the
command line call :func:`load_config` once and :func:`bootstrap` once; each
adapter has one ``make_*`` factory below, which is the place to plug in a
new implementation (the SQL audit store goes into :func:`make_audit`).
Every variable is documented in docs/operations.md.
"""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cds.evaluation import Evaluator
from cds.evaluation.ports import AuditSink, MemoryAudit
from cds.knowledge import load_ruleset

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """The environment asks for something unsafe or impossible; the service does not start."""


@dataclass(frozen=True)
class Config:
    """Every setting the service reads from its environment, with defaults."""

    ruleset_path: str | None = None             # CDS_RULESET
    database_url: str | None = None             # CDS_DATABASE_URL
    redis_url: str | None = None                # CDS_REDIS_URL
    redis_prefix: str = "cds:jti:"              # CDS_REDIS_PREFIX
    trusted_clients: str | None = None          # CDS_TRUSTED_CLIENTS
    auditor_tokens: str | None = None           # CDS_AUDITOR_TOKENS_FILE (opens /audit, docs/audit.md)
    web_users: str | None = None                # CDS_WEB_USERS_FILE (opens /web, docs/web.md)
    web_secret_key: str | None = field(default=None, repr=False)  # CDS_WEB_SECRET_KEY (signs web sessions)
    public_base_url: str | None = None          # CDS_PUBLIC_BASE_URL
    auth: bool = True                           # CDS_AUTH (on|off)
    bind: str = "127.0.0.1:8080"                # CDS_BIND (host:port, comma-separated)
    jwt_leeway_seconds: int = 30                # CDS_JWT_LEEWAY
    jwt_max_lifetime_seconds: int = 300         # CDS_JWT_MAX_LIFETIME
    jku_cache_seconds: int = 300                # CDS_JKU_CACHE_SECONDS
    fhir_timeout_seconds: float = 10.0          # CDS_FHIR_TIMEOUT
    fhir_max_pages: int = 20                    # CDS_FHIR_MAX_PAGES
    fhir_allow_http: bool = False               # CDS_FHIR_ALLOW_HTTP
    log_level: str = "info"                     # CDS_LOG_LEVEL
    log_format: str = "json"                    # CDS_LOG_FORMAT (json|console)
    subscribers_file: str | None = None         # CDS_SUBSCRIBERS_FILE (red-flag REST hooks, docs/intake.md)
    notify_secret: str | None = field(default=None, repr=False)  # CDS_NOTIFY_SECRET (HMAC of notifications)
    notify_worker: bool = True                  # CDS_NOTIFY_WORKER (off: deliver only when drained)
    extras: Mapping[str, Any] = field(default_factory=dict)  # objects injected by tests

    @property
    def bind_hosts(self) -> list[str]:
        return [_host_of(part) for part in self.bind.split(",") if part.strip()]

    @property
    def loopback_only(self) -> bool:
        return bool(self.bind_hosts) and all(is_loopback(h) for h in self.bind_hosts)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; a unix socket counts too."""
    host = host.strip().strip("[]")
    if host == "localhost" or host.startswith("unix:"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(bind: str) -> str:
    bind = bind.strip()
    if bind.startswith("unix:"):
        return bind
    if bind.startswith("["):
        return bind[1:bind.index("]")] if "]" in bind else bind
    host, sep, _port = bind.rpartition(":")
    return host if sep else bind


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    if value is None or value == "":
        return default
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise ConfigError(f"{name}={value!r}: expected one of on/off, true/false, 1/0")


def _number(env: Mapping[str, str], name: str, default: float, kind: Callable[[str], Any] = int) -> Any:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: expected a number") from None
    if number <= 0:
        raise ConfigError(f"{name}={value!r}: must be positive")
    return number


def load_config(env: Mapping[str, Any]) -> Config:
    """Settings from an environment mapping (os.environ, or a test's mapping).

    Values that are not strings are objects a test injects (an audit sink,
    a clock); they are kept in ``extras`` under their key.
    """
    text = {k: v for k, v in env.items() if isinstance(v, str)}
    extras = {k: v for k, v in env.items() if not isinstance(v, str)}
    auth_value = text.get("CDS_AUTH", "on").lower()
    if auth_value not in TRUE | FALSE:
        raise ConfigError(f"CDS_AUTH={text['CDS_AUTH']!r}: expected on or off")
    log_format = text.get("CDS_LOG_FORMAT", "json")
    if log_format not in ("json", "console"):
        raise ConfigError(f"CDS_LOG_FORMAT={log_format!r}: expected json or console")
    config = Config(
        ruleset_path=text.get("CDS_RULESET") or None,
        database_url=text.get("CDS_DATABASE_URL") or None,
        redis_url=text.get("CDS_REDIS_URL") or None,
        redis_prefix=text.get("CDS_REDIS_PREFIX") or "cds:jti:",
        trusted_clients=text.get("CDS_TRUSTED_CLIENTS") or None,
        auditor_tokens=text.get("CDS_AUDITOR_TOKENS_FILE") or None,
        web_users=text.get("CDS_WEB_USERS_FILE") or None,
        web_secret_key=text.get("CDS_WEB_SECRET_KEY") or None,
        public_base_url=(text.get("CDS_PUBLIC_BASE_URL") or "").rstrip("/") or None,
        auth=auth_value in TRUE,
        bind=text.get("CDS_BIND") or "127.0.0.1:8080",
        jwt_leeway_seconds=_number(text, "CDS_JWT_LEEWAY", 30),
        jwt_max_lifetime_seconds=_number(text, "CDS_JWT_MAX_LIFETIME", 300),
        jku_cache_seconds=_number(text, "CDS_JKU_CACHE_SECONDS", 300),
        fhir_timeout_seconds=_number(text, "CDS_FHIR_TIMEOUT", 10.0, float),
        fhir_max_pages=_number(text, "CDS_FHIR_MAX_PAGES", 20),
        fhir_allow_http=_flag(text, "CDS_FHIR_ALLOW_HTTP", False),
        log_level=text.get("CDS_LOG_LEVEL", "info").lower(),
        log_format=log_format,
        subscribers_file=text.get("CDS_SUBSCRIBERS_FILE") or None,
        notify_secret=text.get("CDS_NOTIFY_SECRET") or None,
        notify_worker=_flag(text, "CDS_NOTIFY_WORKER", True),
        extras=extras,
    )
    check(config)
    return config


def check(config: Config) -> None:
    """Refuse settings that would run the service unsafely."""
    if not config.auth and not config.loopback_only:
        raise ConfigError(f"CDS_AUTH=off is allowed only when bound to loopback (127.0.0.1 or ::1); "
                          f"bound to {config.bind}")
    if config.auth and not config.trusted_clients and "TRUSTED_CLIENTS" not in config.extras:
        raise ConfigError("authentication is on but CDS_TRUSTED_CLIENTS names no trusted-clients file "
                          "(set it, or set CDS_AUTH=off on a loopback-only bind for local use)")
    if config.auth and not config.public_base_url:
        raise ConfigError("authentication is on but CDS_PUBLIC_BASE_URL is not set: it is the base of the "
                          "'aud' every token must carry (e.g. https://cds.example.org)")
    if config.web_users and not config.web_secret_key and not config.loopback_only:
        raise ConfigError("CDS_WEB_USERS_FILE is set but CDS_WEB_SECRET_KEY is not: web sessions need a key shared "
                          "by every worker (a generated one is allowed only on a loopback bind)")
    if config.web_secret_key and len(config.web_secret_key) < 32:
        raise ConfigError("CDS_WEB_SECRET_KEY must be at least 32 characters (e.g. `python -c \"import secrets; "
                          "print(secrets.token_hex(32))\"`)")
    if config.log_level not in ("debug", "info", "warning", "error", "critical"):
        raise ConfigError(f"CDS_LOG_LEVEL={config.log_level!r}: expected debug, info, warning or error")


@dataclass
class Services:
    """What the entry points use; built once per process by :func:`bootstrap`."""

    config: Config
    evaluator: Evaluator
    audit: AuditSink
    replay: Any                                  # cds.api.auth.ReplayStore
    notes: list[str] = field(default_factory=list)  # start-up warnings to say loudly


def make_evaluator(config: Config) -> Evaluator:
    if "EVALUATOR" in config.extras:
        return config.extras["EVALUATOR"]  # type: ignore[no-any-return]
    return Evaluator(load_ruleset(config.ruleset_path))


def make_audit(config: Config) -> AuditSink:
    """The audit sink: an injected one, the SQL store when configured, else memory.

    The SQL store (cds.audit: SQLite or PostgreSQL, hash-chained, docs/audit.md)
    is used when CDS_DATABASE_URL is set.
    """
    if "AUDIT" in config.extras:
        return config.extras["AUDIT"]  # type: ignore[no-any-return]
    if config.database_url:
        import os

        from cds.audit import AuditSettings, AuditStore

        # CDS_AUDIT_* (docs/audit.md) come from the process environment; the URL from config.
        settings = AuditSettings.from_env({**os.environ, "CDS_DATABASE_URL": config.database_url})
        return AuditStore.from_settings(settings)  # migrates on start unless CDS_AUDIT_MIGRATE=0
    return MemoryAudit()


def make_replay_store(config: Config) -> Any:
    """Where used JWT ids are remembered: Redis (shared by every worker) or memory."""
    from cds.api.auth import MemoryReplayStore, RedisReplayStore

    if "REPLAY_STORE" in config.extras:
        return config.extras["REPLAY_STORE"]
    if config.redis_url:
        return RedisReplayStore(config.redis_url, prefix=config.redis_prefix)
    return MemoryReplayStore()


def bootstrap(config: Config) -> Services:
    """Load the ruleset and build the adapters; raises on a bad ruleset or setting."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        audit = make_audit(config)
    notes = [str(w.message) for w in caught]
    replay = make_replay_store(config)
    if config.auth and not config.redis_url and "REPLAY_STORE" not in config.extras:
        notes.append("CDS_REDIS_URL is not set: JWT replay protection (jti) is per process; with more "
                     "than one worker a token could be replayed against another worker")
    if isinstance(audit, MemoryAudit) and "AUDIT" not in config.extras:
        notes.append("audit records are kept in process memory only (no CDS_DATABASE_URL store)")
    return Services(config=config, evaluator=make_evaluator(config), audit=audit, replay=replay,
                    notes=notes)
