"""CloudWatch metrics as Embedded Metric Format (EMF) lines: no agent, no PutMetricData.

Services accumulate counts in a `ServiceMetrics` and `flush()` them every minute or so;
`emit` writes a single line. See docs/design.md, "Heartbeat and health"; the metric names
are in docs/deploy.md, "Where to look".
Format: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import orjson

from sesguard.errors import Refused

# The namespace the template's alarms and dashboard read (deploy/sesguard.yaml).
NAMESPACE = "sesguard"

# Every metric the services report, with its CloudWatch unit. Counters are summed over
# a flush interval; gauges (`GAUGES`) report the largest value seen in the interval.
UNITS: dict[str, str] = {
    "jobs_sent": "Count",  # sender: SES accepted the message
    "jobs_held": "Count",  # sender: partner paused, job stored for replay
    "jobs_dead_lettered": "Count",  # sender/worker: message moved to the DLQ
    "jobs_retried": "Count",  # sender: returned to the queue (throttling, errors)
    "events_counted": "Count",  # worker: SES event records applied to counters
    "events_ignored": "Count",  # worker: Subscription and unknown event types
    "events_misspelled": "Count",  # worker: eventType spellings SES never writes (bounce)
    "malformed_records": "Count",  # worker: records skipped inside an object
    "wrong_pipeline_records": "Count",  # worker: SNS identity notifications, never counted
    "objects_processed": "Count",  # worker: S3 objects applied (exactly once)
    "events_duplicate": "Count",  # worker: SES records seen before (counted once)
    "partners_paused": "Count",  # sender/worker: pause transitions this task won
    "event_lag_seconds": "Seconds",  # worker: now minus the S3 object's time
    "event_loop_lag_seconds": "Seconds",  # both: worst event-loop lag in the interval
    "breakers_open": "Count",  # both: dependencies down (SES, DynamoDB, S3) while any is
}
GAUGES = frozenset({"event_lag_seconds", "event_loop_lag_seconds", "breakers_open"})

_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,255}$")
MAX_DIMENSIONS = 30  # EMF limit per dimension set
MAX_METRICS = 100  # EMF limit per directive


class MetricError(Refused):
    """A metric name, dimension or value CloudWatch would reject."""


def _check_value(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MetricError(f"metric {name!r}: value must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise MetricError(f"metric {name!r}: value must be finite")
    return value


def envelope(
    namespace: str,
    dimensions: Mapping[str, str],
    metrics: Mapping[str, float],
    timestamp_ms: int,
) -> dict[str, Any]:
    """The EMF document for one set of values under one dimension set (pure)."""
    if not _NAME_RE.fullmatch(namespace):
        raise MetricError(f"invalid namespace {namespace!r}")
    if not metrics:
        raise MetricError("no metrics to emit")
    if len(metrics) > MAX_METRICS:
        raise MetricError(f"at most {MAX_METRICS} metrics per line")
    if len(dimensions) > MAX_DIMENSIONS:
        raise MetricError(f"at most {MAX_DIMENSIONS} dimensions")
    doc: dict[str, Any] = {}
    for key, val in dimensions.items():
        if not _NAME_RE.fullmatch(key) or not isinstance(val, str) or not val:
            raise MetricError(f"invalid dimension {key!r}={val!r}")
        doc[key] = val
    definitions = []
    for name, value in metrics.items():
        if not _NAME_RE.fullmatch(name) or name == "_aws" or name in dimensions:
            raise MetricError(f"invalid metric name {name!r}")
        doc[name] = _check_value(name, value)
        definitions.append({"Name": name, "Unit": UNITS.get(name, "None")})
    doc["_aws"] = {
        "Timestamp": timestamp_ms,
        "CloudWatchMetrics": [
            {"Namespace": namespace, "Dimensions": [list(dimensions)], "Metrics": definitions}
        ],
    }
    return doc


def emit(
    namespace: str,
    dimensions: Mapping[str, str],
    *,
    stream: TextIO | None = None,
    timestamp_ms: int | None = None,
    **metrics: float,
) -> dict[str, Any]:
    """Write one EMF line (stdout by default) and return the document written."""
    ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
    doc = envelope(namespace, dimensions, metrics, ts)
    out = stream if stream is not None else sys.stdout
    out.write(orjson.dumps(doc).decode() + "\n")
    out.flush()
    return doc


class ServiceMetrics:
    """Per-task accumulator: `add` on each outcome, `flush` once per interval.

    Only names in `UNITS` are accepted, so a typo fails in tests instead of creating a
    metric no alarm watches. Not thread-safe; the services are single-threaded asyncio.
    """

    def __init__(
        self, service: str, namespace: str = NAMESPACE, stream: TextIO | None = None
    ) -> None:
        self.service = service
        self.namespace = namespace
        self.stream = stream
        self._values: dict[str, float] = {}

    def add(self, name: str, n: float = 1) -> None:
        self._known(name, gauge=False)
        self._values[name] = self._values.get(name, 0) + _check_value(name, n)

    def observe(self, name: str, value: float) -> None:
        """A gauge sample; the flushed value is the interval's maximum."""
        self._known(name, gauge=True)
        value = _check_value(name, value)
        self._values[name] = max(self._values.get(name, value), value)

    def flush(self, timestamp_ms: int | None = None) -> dict[str, Any] | None:
        """Emit everything accumulated since the last flush; nothing if nothing happened."""
        if not self._values:
            return None
        values, self._values = self._values, {}
        return emit(
            self.namespace,
            {"Service": self.service},
            stream=self.stream,
            timestamp_ms=timestamp_ms,
            **values,
        )

    @staticmethod
    def _known(name: str, gauge: bool) -> None:
        if name not in UNITS:
            raise MetricError(f"unknown metric {name!r}: add it to sesguard.runtime.metrics.UNITS")
        if (name in GAUGES) != gauge:
            kind = "gauge (use observe)" if name in GAUGES else "counter (use add)"
            raise MetricError(f"metric {name!r} is a {kind}")
