"""EMF lines: the exact envelope CloudWatch extracts metrics from, and bad input rejected."""

from __future__ import annotations

import io
import json
import math

import jsonschema
import pytest

from sesguard.runtime.metrics import (
    GAUGES,
    NAMESPACE,
    UNITS,
    MetricError,
    ServiceMetrics,
    emit,
    envelope,
)

# The structural rules of the EMF specification (root node, metadata, directive).
EMF_SCHEMA = {
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer", "minimum": 0},
                "CloudWatchMetrics": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "additionalProperties": False,
                        "properties": {
                            "Namespace": {"type": "string", "minLength": 1, "maxLength": 1024},
                            "Dimensions": {
                                "type": "array",
                                "items": {
                                    "type": "array",
                                    "maxItems": 30,
                                    "items": {"type": "string", "minLength": 1},
                                },
                            },
                            "Metrics": {
                                "type": "array",
                                "maxItems": 100,
                                "items": {
                                    "type": "object",
                                    "required": ["Name"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "Name": {"type": "string", "minLength": 1},
                                        "Unit": {"enum": ["Count", "Seconds", "None"]},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}


def _lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def _check_references(doc: dict[str, object]) -> None:
    """Every dimension and metric a directive names is a top-level member (EMF rule)."""
    jsonschema.validate(doc, EMF_SCHEMA)
    for directive in doc["_aws"]["CloudWatchMetrics"]:  # type: ignore[index]
        for dim_set in directive["Dimensions"]:
            for dim in dim_set:
                assert isinstance(doc[dim], str)
        for metric in directive["Metrics"]:
            value = doc[metric["Name"]]
            assert isinstance(value, int | float) and not isinstance(value, bool)


def test_emit_writes_one_emf_line() -> None:
    buf = io.StringIO()
    doc = emit(
        "sesguard",
        {"Service": "sender"},
        stream=buf,
        timestamp_ms=1_700_000_000_123,
        jobs_sent=12,
        jobs_held=1,
    )
    (line,) = _lines(buf)
    assert line == doc
    assert line == {
        "Service": "sender",
        "jobs_sent": 12,
        "jobs_held": 1,
        "_aws": {
            "Timestamp": 1_700_000_000_123,
            "CloudWatchMetrics": [
                {
                    "Namespace": "sesguard",
                    "Dimensions": [["Service"]],
                    "Metrics": [
                        {"Name": "jobs_sent", "Unit": "Count"},
                        {"Name": "jobs_held", "Unit": "Count"},
                    ],
                }
            ],
        },
    }
    _check_references(line)
    assert buf.getvalue().endswith("\n") and buf.getvalue().count("\n") == 1


def test_emit_defaults_to_stdout_with_current_time(capsys: pytest.CaptureFixture[str]) -> None:
    emit(NAMESPACE, {"Service": "worker"}, event_lag_seconds=42.5)
    out = capsys.readouterr().out
    (line,) = [json.loads(x) for x in out.splitlines()]
    _check_references(line)
    assert line["event_lag_seconds"] == 42.5
    assert line["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": "event_lag_seconds", "Unit": "Seconds"}
    ]
    assert line["_aws"]["Timestamp"] > 1_600_000_000_000  # milliseconds, not seconds


def test_unknown_metric_name_gets_unit_none() -> None:
    doc = envelope("sesguard", {}, {"custom.thing": 3}, 1)
    assert doc["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": "custom.thing", "Unit": "None"}
    ]
    assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[]]


def test_every_service_metric_has_a_known_unit() -> None:
    expected = {
        "jobs_sent",
        "jobs_held",
        "jobs_dead_lettered",
        "events_counted",
        "malformed_records",
        "partners_paused",
        "event_lag_seconds",
    }
    assert expected <= set(UNITS)
    assert set(UNITS.values()) <= {"Count", "Seconds"}
    assert set(UNITS) >= GAUGES


@pytest.mark.parametrize(
    ("namespace", "dimensions", "metrics", "match"),
    [
        ("", {}, {"a": 1}, "namespace"),
        ("has space", {}, {"a": 1}, "namespace"),
        ("sesguard", {}, {}, "no metrics"),
        ("sesguard", {"Service": ""}, {"a": 1}, "dimension"),
        ("sesguard", {"Service": 3}, {"a": 1}, "dimension"),
        ("sesguard", {"bad key": "x"}, {"a": 1}, "dimension"),
        ("sesguard", {"Service": "x"}, {"Service": 1}, "metric name"),
        ("sesguard", {}, {"_aws": 1}, "metric name"),
        ("sesguard", {}, {"a b": 1}, "metric name"),
        ("sesguard", {}, {"a": True}, "number"),
        ("sesguard", {}, {"a": "1"}, "number"),
        ("sesguard", {}, {"a": math.nan}, "finite"),
        ("sesguard", {}, {"a": math.inf}, "finite"),
        ("sesguard", {f"d{i}": "x" for i in range(31)}, {"a": 1}, "dimensions"),
        ("sesguard", {}, {f"m{i}": 1 for i in range(101)}, "metrics"),
    ],
)
def test_envelope_rejects_what_cloudwatch_would(
    namespace: str, dimensions: dict[str, str], metrics: dict[str, float], match: str
) -> None:
    with pytest.raises(MetricError, match=match):
        envelope(namespace, dimensions, metrics, 0)


def test_service_metrics_accumulate_and_flush_once_per_interval() -> None:
    buf = io.StringIO()
    m = ServiceMetrics("worker", stream=buf)
    assert m.flush() is None and buf.getvalue() == ""  # nothing happened: no line
    m.add("events_counted", 100)
    m.add("events_counted", 23)
    m.add("malformed_records")
    m.observe("event_lag_seconds", 70.0)
    m.observe("event_lag_seconds", 310.5)
    m.observe("event_lag_seconds", 12.0)
    doc = m.flush(timestamp_ms=5)
    assert doc is not None
    assert doc["events_counted"] == 123
    assert doc["malformed_records"] == 1
    assert doc["event_lag_seconds"] == 310.5  # the interval's maximum
    assert doc["Service"] == "worker"
    _check_references(doc)
    assert m.flush() is None  # reset after flushing
    m.add("partners_paused")
    m.flush(timestamp_ms=6)
    lines = _lines(buf)
    assert [line["_aws"]["Timestamp"] for line in lines] == [5, 6]
    assert "events_counted" not in lines[1]


def test_service_metrics_reject_typos_and_wrong_kinds() -> None:
    m = ServiceMetrics("sender", stream=io.StringIO())
    with pytest.raises(MetricError, match="unknown metric"):
        m.add("jobs_snet")
    with pytest.raises(MetricError, match="gauge"):
        m.add("event_lag_seconds", 3)
    with pytest.raises(MetricError, match="counter"):
        m.observe("jobs_sent", 3)
    with pytest.raises(MetricError, match="number"):
        m.add("jobs_sent", "1")  # type: ignore[arg-type]
    with pytest.raises(MetricError, match="finite"):
        m.observe("event_lag_seconds", math.inf)
    assert m.flush() is None  # rejected values left nothing behind
