"""Running the app under gunicorn: hooks shared by deploy/gunicorn.conf.py
and ``cds serve``.

The master checks the configuration once before any worker starts (a bad
setting stops the service instead of crash-looping workers) and records the
real bind in CDS_BIND, so the app can refuse CDS_AUTH=off off loopback
whatever the command line said. Prometheus' multiprocess directory must be
set before prometheus_client is imported: gunicorn.conf.py does that first.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any


def prepare_metrics_dir() -> str:
    """PROMETHEUS_MULTIPROC_DIR for this server: given, or a fresh private directory."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        directory = tempfile.mkdtemp(prefix="cds-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):  # numbers of an earlier run are not ours
        if name.endswith(".db"):
            os.unlink(os.path.join(directory, name))
    return directory


def on_starting(server: Any) -> None:
    from cds.audit.settings import default_database_url
    from cds.bootstrap import ConfigError, load_config

    os.environ["CDS_BIND"] = ",".join(server.cfg.bind)
    # A served process always keeps a durable audit trail: with no database
    # configured it is the embedded SQLite file under CDS_INSTANCE_DIR
    # (default ./instance), shared by every worker. The in-memory sink is
    # for tests that build the app from a mapping.
    os.environ.setdefault("CDS_DATABASE_URL", default_database_url(os.environ.get("CDS_INSTANCE_DIR")))
    try:
        load_config(os.environ)
    except ConfigError as exc:
        sys.stderr.write(f"cds: refusing to start: {exc}\n")
        sys.exit(2)


def child_exit(_server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def _redacted(url: str) -> str:
    """A database URL without its password, for the start-up banner."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def banner(base_url: str, *, auth: bool) -> str:
    """Where the service listens and how to call it."""
    from cds.api import examples

    lines = [f"cds: listening on {base_url}",
             f"cds: audit trail {_redacted(os.environ.get('CDS_DATABASE_URL', 'in memory'))}",
             f"cds: discovery  {base_url}/cds-services    API  {base_url}/openapi.json",
             "cds: try it:", examples.curl(base_url, token=auth)]
    if auth:
        lines.insert(3, "cds: every call needs a CDS Hooks client JWT (ES384/RS384, aud = the URL called) "
                        "in $CDS_TOKEN; see docs/operations.md")
    else:
        lines.insert(0, "cds: *** AUTHENTICATION IS OFF (CDS_AUTH=off): every caller on this machine is "
                        "trusted. Loopback only. ***")
    return "\n".join(lines)
