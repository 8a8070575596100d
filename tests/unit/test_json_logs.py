"""broker/logformat.py's JSON lines and broker/metrics.py's bounds, one record or call at a time.

The whole path (a real ``broker serve``, its access log, its scrape) is in
tests/integration/test_metrics.py; these pin the shapes and the refusals.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time

from broker import metrics
from broker.aws.ids import REQUEST_ID, new_request_id
from broker.logformat import REQUEST_STARTED, JsonFormatter


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)


def test_a_line_is_one_object_with_the_request_id_made_for_the_request() -> None:
    def inside_a_request() -> dict[str, object]:
        request_id = new_request_id()
        doc: dict[str, object] = json.loads(JsonFormatter().format(
            _record("broker.query", "request %s: done", request_id)))
        assert doc["request_id"] == request_id
        return doc

    doc = contextvars.copy_context().run(inside_a_request)
    assert {"time", "level", "logger", "message"} <= set(doc)
    assert doc["level"] == "info" and doc["logger"] == "broker.query"
    # Control: outside any request, no id is made up.
    outside = json.loads(JsonFormatter().format(_record("broker", "ready")))
    assert "request_id" not in outside and REQUEST_ID.get() is None


def test_access_line_drops_the_query_string_and_times_the_request() -> None:
    secret_url = "/?Action=GetCallerIdentity&X-Amz-Signature=abc123&X-Amz-Security-Token=tok"

    def access() -> dict[str, object]:
        REQUEST_STARTED.set(time.time() - 0.25)
        record = _record("uvicorn.access", '%s - "%s %s HTTP/%s" %d',
                         "127.0.0.1:5000", "GET", secret_url, "1.1", 200)
        line = JsonFormatter().format(record)
        assert "abc123" not in line and "tok" not in line
        out: dict[str, object] = json.loads(line)
        return out

    doc = contextvars.copy_context().run(access)
    assert doc["path"] == "/" and doc["method"] == "GET" and doc["status"] == 200
    assert doc["message"] == "GET / 200"
    assert isinstance(doc["duration_ms"], float) and doc["duration_ms"] >= 250


def test_other_lines_have_secret_parameters_redacted() -> None:
    line = JsonFormatter().format(_record(
        "broker.web", "redirect to %s", "/federation?Action=login&SigninToken=s3cr3t"))
    assert "s3cr3t" not in line and "SigninToken=(redacted)" in line
    # Control: a parameter that is no secret is written as it is.
    assert "Action=login" in line


def test_public_metrics_networks() -> None:
    assert metrics.allowed("127.0.0.1", ("127.0.0.1/32",))
    assert not metrics.allowed("10.0.0.5", ("127.0.0.1/32",))
    assert not metrics.allowed(None, ("127.0.0.1/32",))
    assert not metrics.allowed("not-an-address", ("*",))
    assert metrics.allowed("10.0.0.5", ("10.0.0.0/8",))


def test_request_series_are_bounded() -> None:
    before = metrics.counting()
    metrics.count(True)
    try:
        saved = dict(metrics._request_series)
        metrics._request_series.clear()
        metrics._request_series.update({("x", str(i), 200, ""): (None, None, None, None)
                                        for i in range(metrics._MAX_SERIES)})
        metrics.request("query", "MadeUpAction", 400, "MadeUpCode", 0.001)
        # Past the bound a new combination shares the "other" series and is not kept.
        assert len(metrics._request_series) == metrics._MAX_SERIES
        other = metrics.REQUESTS.labels("query", "other", "client_error", "other")
        assert other._value.get() >= 1
    finally:
        metrics._request_series.clear()
        metrics._request_series.update(saved)
        metrics.count(before)


def test_nothing_is_counted_when_metrics_are_off() -> None:
    before = metrics.counting()
    series = metrics.CREDENTIALS.labels("AssumeRole")
    start = series._value.get()
    try:
        metrics.count(False)
        metrics.credentials_issued("AssumeRole")
        assert series._value.get() == start
        metrics.count(True)  # control: the same call counts when they are on
        metrics.credentials_issued("AssumeRole")
        assert series._value.get() == start + 1
    finally:
        metrics.count(before)


def test_direct_writes_match_prometheus_clients_own() -> None:
    from prometheus_client import REGISTRY

    before = metrics.counting()
    metrics.count(True)
    try:
        labels = {"protocol": "unit", "action": "Direct"}

        def bucket(le: str) -> float:
            return REGISTRY.get_sample_value("broker_request_duration_seconds_bucket",
                                             {**labels, "le": le}) or 0.0

        metrics.request("unit", "Direct", 200, "", 0.003)
        assert bucket("0.0025") == 0 and bucket("0.005") == 1 and bucket("+Inf") == 1
        assert REGISTRY.get_sample_value("broker_request_duration_seconds_sum",
                                         labels) == 0.003
        # Control: prometheus-client's own observe lands in the same buckets.
        metrics.LATENCY.labels("unit", "Direct").observe(0.003)
        assert bucket("0.0025") == 0 and bucket("0.005") == 2
        assert REGISTRY.get_sample_value(
            "broker_requests_total",
            {**labels, "outcome": "ok", "error_code": ""}) == 1
    finally:
        metrics.count(before)
