"""Server-rendered pages on the service's Flask app: clinician review and
auditor pages (docs/web.md), behind their own sign-in.

``review``, ``graph``, ``chart`` and ``users`` know no Flask; ``signin``
(sessions, CSRF, roles) and ``views`` (the blueprint) are the thin web
layer: parse the form, call one use case of the service layer or one
audit-store function, render a template. Opened by CDS_WEB_USERS_FILE;
they read the audit database, so CDS_DATABASE_URL is needed too.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from cds.api.service import Api
    from cds.audit import AuditStore
    from cds.bootstrap import Config
    from cds.web.chain import ChainStatus
    from cds.web.review import Review
    from cds.web.users import Users

SESSION_HOURS = 8


@dataclass
class WebRuntime:
    review: Review
    store: AuditStore
    users: Users
    chain: ChainStatus


def install(app: Flask, config: Config, api: Api, audit: Any) -> None:
    """Register the pages on ``app``; raises ConfigError when they cannot run safely."""
    from cds.api.logs import get_logger
    from cds.audit import AuditStore
    from cds.bootstrap import ConfigError
    from cds.web.chain import ChainStatus
    from cds.web.review import Review
    from cds.web.users import Users
    from cds.web.views import bp

    if not isinstance(audit, AuditStore):
        raise ConfigError("CDS_WEB_USERS_FILE is set but there is no audit database (CDS_DATABASE_URL): the "
                          "review and auditor pages read the trail")
    users = Users.load(str(config.web_users))
    secret = config.web_secret_key
    if not secret:
        # bootstrap.check allows this only on a loopback bind: sessions then
        # last as long as the process and are not shared between workers.
        secret = secrets.token_hex(32)
        get_logger().warning("configuration_warning", detail="CDS_WEB_SECRET_KEY is not set: web sessions use a "
                                                             "key generated for this process (development only)")
    app.secret_key = secret
    app.config.update(
        SESSION_COOKIE_NAME="cds_web_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=not config.loopback_only,
        SESSION_COOKIE_PATH="/web",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
    )
    app.extensions["cds_web"] = WebRuntime(Review(api, audit), audit, users, ChainStatus(audit))
    app.register_blueprint(bp)
