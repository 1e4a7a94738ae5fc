"""The HTTP service: CDS Hooks 2.0 and a REST evaluation API over the
evaluation core.

Layout: ``service`` holds the use cases and ``cards``, ``fhir_client``,
``auth``, ``schemas``, ``openapi`` and ``metrics`` do their one job each,
all without Flask; ``http``, ``hooks`` and ``rest`` are the thin Flask
layer (parse the request, verify the caller, call one use case, map errors
to an OperationOutcome). Configuration comes from the environment, read
once here (cds.bootstrap).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


# Imports live inside the factory: gunicorn's config imports cds.api.server
# and must set up Prometheus' multiprocess directory before anything
# imports prometheus_client.
def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from the environment, or from ``test_config`` alone.

    ``test_config`` uses the environment's names (``CDS_AUTH``, ``CDS_BIND``,
    ...) and may add objects: ``AUDIT``, ``REPLAY_STORE``, ``EVALUATOR``,
    ``TRUSTED_CLIENTS`` (a TrustedClients), ``NOW`` (a clock returning an
    aware datetime), ``FETCHER`` (a FhirFetcher).
    """
    from flask import Flask

    from cds.api.auth import Authenticator, JkuFetcher, TrustedClients
    from cds.api.http import Runtime, install
    from cds.api.logs import configure, get_logger
    from cds.api.metrics import Metrics
    from cds.api.service import Api
    from cds.bootstrap import ConfigError, bootstrap, load_config
    from cds.fhir import MAX_BODY_BYTES

    config = load_config(os.environ if test_config is None else test_config)
    configure(config.log_level, config.log_format)
    services = bootstrap(config)
    metrics = Metrics()
    authenticator = None
    clients = None
    if config.auth:
        clients = config.extras.get("TRUSTED_CLIENTS") or TrustedClients.load(str(config.trusted_clients))
        authenticator = Authenticator(clients, services.replay, leeway=config.jwt_leeway_seconds,
                                      max_lifetime=config.jwt_max_lifetime_seconds,
                                      jku=JkuFetcher(ttl_seconds=config.jku_cache_seconds))
    api = Api(services, metrics, clients=clients, fetcher=config.extras.get("FETCHER"),
              now=config.extras.get("NOW"))

    app = Flask(__name__)
    app.config.from_mapping(MAX_CONTENT_LENGTH=MAX_BODY_BYTES, TESTING=test_config is not None)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["cds"] = Runtime(config, services, api, metrics, authenticator)
    install(app)

    from cds.api import hooks, rest

    app.register_blueprint(hooks.bp)
    app.register_blueprint(rest.bp)
    from cds.intake.http import register as register_intake  # /fhir and /worklist (docs/intake.md)

    register_intake(app, config, services, metrics)
    if config.auditor_tokens:
        # The audit read API (docs/audit.md): auditor tokens, never client JWTs.
        from cds.audit import AuditStore
        from cds.audit.auditors import AuditorTokens
        from cds.audit.http import audit_blueprint

        if not isinstance(services.audit, AuditStore):
            raise ConfigError("CDS_AUDITOR_TOKENS_FILE is set but there is no audit database "
                              "(CDS_DATABASE_URL) to read")
        app.register_blueprint(audit_blueprint(services.audit, AuditorTokens.load(config.auditor_tokens)))
    if config.web_users:
        # Clinician review and auditor pages with their own sign-in (docs/web.md).
        from cds.web import install as install_web

        install_web(app, config, api, services.audit)

    log = get_logger()
    ruleset = services.evaluator.ruleset
    log.info("service_started", ruleset=ruleset.name, version=ruleset.version, sha256=ruleset.sha256,
             rules=len(ruleset.rules), auth="on" if config.auth else "off", bind=config.bind)
    if not config.auth:
        log.critical("AUTHENTICATION IS OFF", detail="every caller is trusted; allowed only on a loopback bind",
                     bind=config.bind)
    for note in services.notes:
        log.warning("configuration_warning", detail=note)
    return app
