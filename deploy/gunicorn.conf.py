# Production server: gunicorn -c deploy/gunicorn.conf.py
#
# Settings come from the environment (docs/operations.md). gthread workers:
# the rules engine serializes its calls per process, so CPU parallelism
# comes from worker processes and threads cover the I/O (FHIR fetches,
# audit writes). Workers are recycled now and then to bound memory.
import os

from cds.api.server import prepare_metrics_dir

# Before anything imports prometheus_client: every worker then writes its
# numbers where /metrics can add them up.
prepare_metrics_dir()

from cds.api.server import child_exit, on_starting  # noqa: E402,F401 - gunicorn hooks

wsgi_app = "cds.api:create_app()"
bind = os.environ.get("CDS_BIND", "127.0.0.1:8080").split(",")
workers = int(os.environ.get("CDS_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("CDS_THREADS", "4"))
timeout = int(os.environ.get("CDS_WORKER_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
max_requests = 20000
max_requests_jitter = 2000
# A JWT rides in a header: room for 16 KiB, and no more.
limit_request_line = 8190
limit_request_fields = 64
limit_request_field_size = 16384
# The app writes its own JSON access log without paths' PHI; gunicorn's
# would print raw request lines.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("CDS_LOG_LEVEL", "info")
proc_name = "cds"
# No runtime control socket: nothing here uses it, and two servers on one
# machine would fight over its default path.
control_socket_disable = True
