"""Prometheus metrics: what the broker counts, and how a scrape reaches them.

The families (docs/operations.md, "Metrics and logs", lists them with their labels)::

    broker_requests_total{protocol, action, outcome, error_code}
    broker_request_duration_seconds{protocol, action}          histogram
    broker_store_round_trips_total{store, operation}
    broker_store_errors_total{store, operation}
    broker_cache_lookups_total{cache, result}                  result: hit | miss
    broker_credentials_issued_total{action}
    broker_signins_total{kind, outcome}
    broker_throttled_total{kind}
    broker_workers                                             live worker processes

Every label value comes from the broker's own code — an operation's name from its registry,
an error code from an error class, a route's endpoint — never from what a request carries;
a caller that names an action the broker does not serve is counted under ``other``. So the
number of series is bounded whatever arrives.

The counters are prometheus-client's, which are process-wide by design (they live as long
as the process, as its loggers do): the stores, caches and endpoints count into them
without each being handed a registry. With several uvicorn workers, ``broker serve`` points
prometheus-client's multiprocess mode at a fresh directory (``PROMETHEUS_MULTIPROC_DIR``)
before the workers start, each worker writes its counts there, and a scrape adds them up.
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import os
import shutil
import tempfile
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import ThreadingWSGIServer

log = logging.getLogger("broker.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"

if os.environ.get(MULTIPROC_ENV):
    # prometheus-client opens its files there as soon as a family without labels is made.
    Path(os.environ[MULTIPROC_ENV]).mkdir(parents=True, exist_ok=True)

REQUESTS = Counter(
    "broker_requests", "Requests answered, by protocol, action, outcome and AWS error code.",
    ("protocol", "action", "outcome", "error_code"))
LATENCY = Histogram(
    "broker_request_duration_seconds",
    "Time from the request's arrival to its answer's last byte, by protocol and action.",
    ("protocol", "action"),
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
             10.0))
STORE_ROUND_TRIPS = Counter(
    "broker_store_round_trips",
    "Round trips to a store (entity: SQL statements and commits; ephemeral: Redis commands).",
    ("store", "operation"))
STORE_ERRORS = Counter(
    "broker_store_errors", "Round trips that failed (the store refused or could not be reached).",
    ("store", "operation"))
CACHE = Counter(
    "broker_cache_lookups", "Lookups in the broker's per-process caches, hit or miss.",
    ("cache", "result"))
CREDENTIALS = Counter(
    "broker_credentials_issued", "Temporary credentials issued, by action.", ("action",))
SIGNINS = Counter(
    "broker_signins", "Sign-ins by kind (password, saml, federation, portal, dev) and outcome.",
    ("kind", "outcome"))
THROTTLED = Counter(
    "broker_throttled", "Requests refused because their caller is throttled (locked out).",
    ("kind",))
WORKERS = Gauge(
    "broker_workers", "Worker processes serving requests.", multiprocess_mode="livesum")

# Whether this process counts at all (``metrics.enabled``, set by create_app): when it does
# not, every call below returns at once, so a broker without metrics pays one test.
_counting = [False]


def count(enabled: bool) -> None:
    _counting[0] = enabled


def counting() -> bool:
    return _counting[0]


# Series made so far (the labelled children, kept so the hot path does one dict lookup).
_MAX_SERIES = 4000
_request_series: dict[tuple[str, str, int, str], tuple[Any, Any, Any, Any]] = {}


def outcome(status: int) -> str:
    if status < 400:
        return "ok"
    if status == 503:
        return "unavailable"
    if status >= 500:
        return "server_error"
    return "client_error"


def request(protocol: str, action: str, status: int, error_code: str, seconds: float) -> None:
    """One answered request: its count and its latency."""
    if not _counting[0]:
        return
    key = (protocol, action, status, error_code)
    series = _request_series.get(key)
    if series is None:
        series = _new_request_series(key)
    calls, total, buckets, bounds = series
    calls.inc(1)
    total.inc(seconds)
    buckets[bisect_left(bounds, seconds)].inc(1)


def _new_request_series(key: tuple[str, str, int, str]) -> tuple[Any, Any, Any, Any]:
    protocol, action, status, code = key
    if len(_request_series) >= _MAX_SERIES:
        # A bound of its own, in case a code path ever names errors from data: past it, new
        # combinations share one series rather than grow the scrape.
        action, code = OTHER, OTHER if code else ""
    series = _direct(REQUESTS.labels(protocol, action, outcome(status), code),
                     LATENCY.labels(protocol, action))
    if len(_request_series) < _MAX_SERIES:
        _request_series[key] = series
    return series


def _direct(counter: Any, histogram: Any) -> tuple[Any, Any, Any, Any]:
    """The values under a counter and a histogram, written straight: the public ``inc`` and
    ``observe`` check their argument and look for exemplars on every call, which is half the
    cost on the hot path. An observation goes to the one bucket its value falls in (the
    histogram adds them up when collected), as ``observe`` does; tests/unit/test_json_logs.py
    compares the two, so a prometheus-client that stores them otherwise fails there."""
    return (counter._value, histogram._sum, histogram._buckets, histogram._upper_bounds)


def credentials_issued(action: str) -> None:
    if not _counting[0]:
        return
    CREDENTIALS.labels(action).inc()


_cache_series: dict[tuple[str, bool], Any] = {}


def cache_lookup(cache: str, hit: bool) -> None:
    """A lookup in one of the caches (``cache``: a name in the code, never from a request)."""
    if not _counting[0]:
        return
    series = _cache_series.get((cache, hit))
    if series is None:
        series = _cache_series[(cache, hit)] = \
            CACHE.labels(cache, "hit" if hit else "miss")._value
    series.inc(1)


def throttled(kind: str) -> None:
    if not _counting[0]:
        return
    THROTTLED.labels(kind).inc()


# Browser audit events that are sign-ins, and the kind each route prefix signs in by.
SIGNIN_EVENTS = frozenset({"ConsoleLogin", "UserAuthentication"})
_SIGNIN_KINDS = {"signin": "password", "saml": "saml", "federation": "federation",
                 "start": "portal", "dev": "dev"}


def signin(path: str, refused: bool) -> None:
    """A sign-in a browser endpoint answered (``path``: the endpoint's URL path)."""
    if not _counting[0]:
        return
    kind = _SIGNIN_KINDS.get(path.split("/", 2)[1] if path.startswith("/") else "", OTHER)
    SIGNINS.labels(kind, "refused" if refused else "ok").inc()


# -- stores -------------------------------------------------------------------------------------

_VERBS = frozenset({"select", "insert", "update", "delete", "begin", "savepoint", "release",
                    "pragma"})


def _verb(statement: str) -> str:
    word = statement.lstrip()[:10].split(None, 1)
    verb = word[0].lower() if word else ""
    return verb if verb in _VERBS else OTHER


def watch_engine(engine: Any) -> None:
    """Count an SQLAlchemy engine's round trips (each statement sent, each commit) and failures
    (``engine``: the synchronous Engine under an AsyncEngine)."""
    from sqlalchemy import event

    trips = {verb: STORE_ROUND_TRIPS.labels("entity", verb) for verb in (*_VERBS, OTHER)}
    commits = STORE_ROUND_TRIPS.labels("entity", "commit")

    def executed(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if _counting[0]:
            trips[_verb(statement)].inc()

    def committed(conn: Any) -> None:
        if _counting[0]:
            commits.inc()

    def failed(context: Any) -> None:
        if not _counting[0]:
            return
        statement = getattr(context, "statement", None)
        STORE_ERRORS.labels("entity", _verb(statement) if statement else "connect").inc()

    event.listen(engine, "before_cursor_execute", executed)
    event.listen(engine, "commit", committed)
    event.listen(engine, "handle_error", failed)


class EphemeralCounter:
    """The ephemeral store's round trips by operation (put_if_absent, take, get, ...)."""

    def __init__(self, operations: Iterable[str]) -> None:
        self._trips = {op: STORE_ROUND_TRIPS.labels("ephemeral", op) for op in operations}
        self._errors = {op: STORE_ERRORS.labels("ephemeral", op) for op in operations}

    def trip(self, operation: str) -> None:
        if _counting[0]:
            self._trips[operation].inc()

    def error(self, operation: str) -> None:
        if _counting[0]:
            self._errors[operation].inc()


# -- exposition ---------------------------------------------------------------------------------


def _reap(path: str) -> None:
    """``mark_process_dead`` for every worker that left files behind and is gone (killed, or
    replaced by uvicorn's supervisor): its live gauges stop counting; its counts stay."""
    pids: set[int] = set()
    for name in os.listdir(path):
        stem = name.rsplit(".", 1)[0]
        _, _, digits = stem.rpartition("_")
        if digits.isdigit():
            pids.add(int(digits))
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass


def exposition() -> bytes:
    """The scrape: every worker's counts in multiprocess mode, this process's otherwise."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return generate_latest(REGISTRY)
    _reap(path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


CONTENT_TYPE = CONTENT_TYPE_LATEST


def allowed(client: str | None, networks: tuple[str, ...]) -> bool:
    """Whether a caller of the public port may read /metrics (``metrics.public_networks``)."""
    if client is None:
        return False
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(n == "*" or address in ipaddress.ip_network(n, strict=False) for n in networks)


def _wsgi(environ: dict[str, Any], start: Callable[..., Any]) -> list[bytes]:
    if environ.get("PATH_INFO") != "/metrics":
        start("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not Found: the metrics are at /metrics\n"]
    if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
        start("405 Method Not Allowed", [("Content-Type", "text/plain"), ("Allow", "GET")])
        return [b"Method Not Allowed\n"]
    body = exposition()
    start("200 OK", [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))])
    return [body]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics listener: " + format, *args)


def listen(host: str, port: int) -> ThreadingWSGIServer:
    """The metrics listener (``metrics.port``): ``GET /metrics`` only, in a daemon thread of
    the process that calls it (with several workers, the supervisor, which serves nothing
    else and reads the workers' files)."""
    server = make_server(host, port, _wsgi, ThreadingWSGIServer, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="broker-metrics", daemon=True).start()
    return server


def prepare(enabled: bool, workers: int, host: str, port: int) -> None:
    """What ``broker serve`` does before uvicorn starts: with several workers, a clean
    multiprocess directory in the environment they inherit (``PROMETHEUS_MULTIPROC_DIR`` if
    set, emptied; else a new temporary one, removed at exit); the metrics listener when a
    port is set."""
    if not enabled:
        return
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        own = f"_{os.getpid()}.db"  # this process's own files, opened when it started
        for stale in directory.glob("*.db"):
            if not stale.name.endswith(own):
                stale.unlink()
    elif workers > 1:
        made = tempfile.mkdtemp(prefix="broker-metrics-")
        atexit.register(shutil.rmtree, made, True)
        os.environ[MULTIPROC_ENV] = made
    if port:
        listen(host, port)


def worker_started() -> None:
    """A worker process is serving (``broker_workers``; a dead one is reaped at scrape)."""
    if not _counting[0]:
        return
    WORKERS.set(1)
