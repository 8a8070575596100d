"""broker/logformat.py's JSON lines and broker/metrics.py's bounds, one record or call at a time.

The whole path (a real ``broker serve``, its access log, its scrape) is in
tests/integration/test_metrics.py; these pin the shapes and the refusals.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

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
    # Control: outside any request (a fresh context: an earlier test in this process may
    # have made an id in the main one), no id is made up.
    def outside_any_request() -> dict[str, object]:
        assert REQUEST_ID.get() is None
        line: dict[str, object] = json.loads(JsonFormatter().format(_record("broker", "ready")))
        return line

    assert "request_id" not in contextvars.Context().run(outside_any_request)


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


# -- the multiprocess directory -----------------------------------------------------------------

# A process that counts as a broker worker does, in prometheus-client's multiprocess mode: a
# counter and a live gauge, written to the directory it inherits; it exits, or stays alive
# until its standard input closes.
_WORKER = """
import sys
from prometheus_client import Counter, Gauge
Counter("broker_unit", "Unit.", ("action",)).labels("A").inc(int(sys.argv[1]))
Gauge("broker_unit_live", "Live.", multiprocess_mode="livesum").set(1)
print("counted", flush=True)
if sys.argv[2] == "stay":
    sys.stdin.read()
"""


class _Worker:
    def __init__(self, directory: Path, count: int, stay: bool) -> None:
        env = {**os.environ, metrics.MULTIPROC_ENV: str(directory)}
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(count),
                                      "stay" if stay else "exit"], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "counted\n"
        self.pid = self.proc.pid
        if not stay:
            self.end()

    def end(self) -> None:
        self.proc.communicate(timeout=30)  # closes its input: it ends, if it had not
        assert self.proc.returncode == 0


def _files(directory: Path) -> set[str]:
    return {p.name for p in directory.glob("*.db")}


def _scrape() -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = metrics.exposition().decode()
    return {s.name: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name.startswith("broker_unit")}


def test_a_start_keeps_a_live_brokers_files_and_drops_the_dead(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two brokers given one PROMETHEUS_MULTIPROC_DIR: the second's start removes what a
    process that is gone left, never the files of the first, which still serves."""
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    live, dead = _Worker(tmp_path, 3, stay=True), _Worker(tmp_path, 5, stay=False)
    try:
        assert {f"counter_{dead.pid}.db", f"counter_{live.pid}.db"} <= _files(tmp_path)
        metrics.prepare(True, 2, "127.0.0.1", 0)
        assert _files(tmp_path) == {f"counter_{live.pid}.db", f"gauge_livesum_{live.pid}.db"}
        assert _scrape() == {"broker_unit_total": 3, "broker_unit_live": 1}
    finally:
        live.end()
    # The control: once that broker is gone too, a start empties the directory.
    metrics.prepare(True, 2, "127.0.0.1", 0)
    assert _files(tmp_path) == set()


def test_restarted_workers_add_up_into_a_bounded_number_of_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers replaced one after another (as SIGHUP does): each scrape adds the counts of
    those that are gone into one file, so the total stays exact, the live gauge counts only
    the live worker, and the files do not pile up."""
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    live = _Worker(tmp_path, 2, stay=True)
    try:
        for _ in range(4):
            _Worker(tmp_path, 1, stay=False)
        assert len(_files(tmp_path)) == 2 * 5
        assert _scrape() == {"broker_unit_total": 6, "broker_unit_live": 1}
        kept = {f"counter_{live.pid}.db", f"gauge_livesum_{live.pid}.db", "counter_reaped.db"}
        assert _files(tmp_path) == kept
        assert _scrape() == {"broker_unit_total": 6, "broker_unit_live": 1}  # counted once
        _Worker(tmp_path, 10, stay=False)
        assert _scrape() == {"broker_unit_total": 16, "broker_unit_live": 1}
        assert _files(tmp_path) == kept
        # A file whose name ends in more digits than any process id (os.kill would raise
        # OverflowError): the scrape still answers, and counts it as prometheus-client reads it.
        shutil.copy(tmp_path / f"counter_{live.pid}.db", tmp_path / f"counter_{'9' * 30}.db")
        assert _scrape() == {"broker_unit_total": 18, "broker_unit_live": 1}
    finally:
        live.end()


# -- what BrokerApp counts ----------------------------------------------------------------------


def test_an_app_that_raises_is_counted_as_a_server_error() -> None:
    """BrokerApp's wrapper around the rest-json, SCIM and Starlette apps: an app that raises
    before answering (the server then answers 500) is counted, beside the control of the same
    wrapper around an app that answers."""
    from broker.app import _observed

    async def answers(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def raises(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("a bug")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    def count(app: Any, action: str) -> dict[str, float]:
        asyncio.run(_observed("unit", lambda scope: action, app, {"type": "http"}, receive,
                              send))
        return {outcome: metrics.REQUESTS.labels("unit", action, outcome, "")._value.get()
                for outcome in ("ok", "server_error")}

    before = metrics.counting()
    metrics.count(True)
    try:
        assert count(answers, "Answers") == {"ok": 1, "server_error": 0}
        with pytest.raises(RuntimeError):
            count(raises, "Raises")
        assert {
            outcome: metrics.REQUESTS.labels("unit", "Raises", outcome, "")._value.get()
            for outcome in ("ok", "server_error")} == {"ok": 0, "server_error": 1}
    finally:
        metrics.count(before)
