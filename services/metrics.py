"""The service's Prometheus metrics, with labels nobody outside can multiply.

BentoML's own HTTP metrics middleware sits outside every service middleware and labels
its series with the raw request path: each distinct path anyone sends (404s and 401s
included) creates new series in ``/metrics`` and in the worker's memory, without bound.
The service therefore turns BentoML's metrics off and serves ``/metrics`` from this
registry instead, where ``endpoint`` is one of the service's declared routes or
``"other"``, and ``code`` is an HTTP status (a bounded set).

One registry per import (the module is re-imported when a bento is built), one worker per
bento, so no multiprocess aggregation is needed.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

OTHER = "other"
REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "recops_http_requests_total",
    "HTTP requests answered, by declared route (or 'other') and status code.",
    labelnames=["endpoint", "code"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "recops_http_request_duration_seconds",
    "Time to the last byte of the answer, by declared route (or 'other').",
    labelnames=["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
BY_SOURCE = Counter(
    "recops_recommend_requests_total",
    "Recommendation requests answered, by source (model or cold_start).",
    labelnames=["source"],
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "recops_batch_size",
    "Queries per model call (concurrent requests merged by the batcher).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)
SERVING_LOG_ROWS = Counter(
    "recops_serving_log_rows_total",
    "Rows of the serving/feedback logs, by log and outcome "
    "(written, dropped: buffer full, failed: lost to a write error).",
    labelnames=["log", "outcome"],
    registry=REGISTRY,
)
SERVING_LOG_ERRORS = Counter(
    "recops_serving_log_write_errors_total",
    "Failed writes of the serving/feedback logs (full disk, bad folder).",
    labelnames=["log"],
    registry=REGISTRY,
)


def endpoint_label(path: str, known: frozenset[str] | None) -> str:
    """``path`` when it is a declared route, else :data:`OTHER`."""
    return path if known is not None and path in known else OTHER


def exposition() -> tuple[bytes, str]:
    """(body, content type) of the ``/metrics`` answer."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
