"""``cds serve``: the HTTP service under gunicorn, from the command line."""

from __future__ import annotations

import os
import sys
from typing import Any

import click


def _base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes (several need CDS_REDIS_URL for shared JWT replay protection).")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Threads per worker.")
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Run the CDS Hooks and REST service on HOST:PORT.

    Configuration comes from the environment (docs/operations.md). With
    CDS_AUTH=off (loopback only) every caller is trusted; otherwise every
    call needs a JWT from a client in CDS_TRUSTED_CLIENTS.
    """
    from gunicorn.app.base import BaseApplication

    from cds.api.server import banner, child_exit, on_starting, prepare_metrics_dir

    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    os.environ["CDS_BIND"] = bind
    os.environ.setdefault("CDS_PUBLIC_BASE_URL", _base_url(host, port))
    prepare_metrics_dir()

    from cds.bootstrap import ConfigError, load_config

    try:
        config = load_config(os.environ)
    except ConfigError as exc:
        click.echo(f"cds: refusing to start: {exc}", err=True)
        sys.exit(2)
    public = config.public_base_url or _base_url(host, port)

    def when_ready(_server: Any) -> None:
        click.echo(banner(public, auth=config.auth))
        sys.stdout.flush()

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {"bind": [bind], "workers": workers, "worker_class": "gthread",
                               "threads": threads, "timeout": 30, "graceful_timeout": 10,
                               "accesslog": None, "errorlog": "-", "proc_name": "cds",
                               "limit_request_field_size": 16384, "on_starting": on_starting,
                               "child_exit": child_exit, "when_ready": when_ready,
                               "control_socket_disable": True}.items():
                if key in self.cfg.settings:  # control_socket_disable is new in gunicorn 25
                    self.cfg.set(key, value)

        def load(self) -> Any:
            from cds.api import create_app

            return create_app()

    Server().run()
