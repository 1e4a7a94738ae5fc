"""Prometheus metrics: requests and latency per endpoint, evaluations by
triage, firings per rule.

Each app has its own registry (tests build many apps). Under gunicorn,
PROMETHEUS_MULTIPROC_DIR is set by the config before any worker starts, and
``/metrics`` aggregates every worker's numbers (prometheus_client's
multiprocess mode). No Flask here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# The *_created series double the output and no dashboard reads them.
disable_created_metrics()

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("cds_http_requests_total", "HTTP requests by endpoint, method and status",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("cds_http_request_duration_seconds", "HTTP request latency by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.evaluations = Counter("cds_evaluations_total", "Evaluations by triage and channel",
                                   ["triage", "channel"], registry=self.registry)
        self.firings = Counter("cds_rule_firings_total", "Rule firings by rule", ["rule"],
                               registry=self.registry)
        self.auth_failures = Counter("cds_auth_failures_total", "Refused bearer tokens", registry=self.registry)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_evaluation(self, evaluation: Mapping[str, Any], channel: str) -> None:
        self.evaluations.labels(evaluation["triage"], channel).inc()
        counts: dict[str, int] = {}
        for firing in evaluation["firings"]:
            counts[firing["rule"]] = counts.get(firing["rule"], 0) + 1
        for rule, n in counts.items():
            self.firings.labels(rule).inc(n)

    def exposition(self) -> tuple[bytes, str]:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory and os.path.isdir(directory):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=directory)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
