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
import contextlib
import fcntl
import ipaddress
import logging
import os
import shutil
import tempfile
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
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
from prometheus_client.mmap_dict import MmapedDict

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
    from sqlalchemy.exc import IntegrityError

    trips = {verb: STORE_ROUND_TRIPS.labels("entity", verb) for verb in (*_VERBS, OTHER)}
    commits = STORE_ROUND_TRIPS.labels("entity", "commit")

    def executed(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if _counting[0]:
            trips[_verb(statement)].inc()

    def committed(conn: Any) -> None:
        if _counting[0]:
            commits.inc()

    def failed(context: Any) -> None:
        # A unique key refused (AlreadyExists: CreateUser of a name taken) is the store
        # answering, not failing: counted among the round trips only.
        if not _counting[0] or isinstance(context.sqlalchemy_exception, IntegrityError):
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


# The multiprocess directory's files are prometheus-client's, one per kind of value and process:
# ``counter_1234.db``, ``gauge_livesum_1234.db``. The counts of processes that are gone are added
# into one file per kind (``counter_reaped.db``), so that workers replaced again and again (a
# SIGHUP restarts them all) leave a bounded number of files, and a scrape reads as many files
# as there are live processes, not as many as there ever were.
_REAPED = "reaped"
_ADDITIVE = ("counter", "histogram", "summary")
_LOCK = "broker-metrics.lock"  # not *.db: prometheus-client reads only those


def _pid_of(name: str) -> int | None:
    """The process id a file of the directory belongs to, or None: not a process's file (the
    ``reaped`` ones), or digits no process id has (os.kill would raise OverflowError for
    them): such a file is left as it is."""
    stem = name.removesuffix(".db")
    _, _, digits = stem.rpartition("_")
    return int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 9 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """One process at a time reaps or reads the directory (the supervisor's listener and,
    with metrics.public, every worker's /metrics): a file added up and removed by one never
    goes missing under another's read."""
    with open(os.path.join(path, _LOCK), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _processes(path: str) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for name in os.listdir(path):
        pid = _pid_of(name) if name.endswith(".db") else None
        if pid is not None:
            found.setdefault(pid, []).append(name)
    return found


def _reap(path: str) -> None:
    """For every process that left files behind and is gone (killed, or replaced by uvicorn's
    supervisor): ``mark_process_dead`` (its live gauges stop counting) and its counts added
    into the ``reaped`` files (they stay in every scrape), its own files removed."""
    for pid, names in _processes(path).items():
        if _alive(pid):
            continue
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
        for name in names:
            kind = name.split("_", 1)[0]
            if kind in _ADDITIVE:
                # Added up, then removed: a crash between the two would count it twice, never
                # lose it (the lock keeps every other reader out meanwhile).
                _add_into(os.path.join(path, f"{kind}_{_REAPED}.db"), os.path.join(path, name))
                os.unlink(os.path.join(path, name))


def _add_into(total_path: str, dead_path: str) -> None:
    """Each value of a dead process's file added to the same key's in ``total_path`` (the
    files hold counts and histogram buckets as they were observed, so sums stay exact)."""
    values = list(MmapedDict.read_all_values_from_file(dead_path))  # type: ignore[no-untyped-call]
    total = MmapedDict(total_path)  # type: ignore[no-untyped-call]
    try:
        for key, value, timestamp, _ in values:
            before, _ = total.read_value(key)  # type: ignore[no-untyped-call]
            total.write_value(key, before + value, timestamp)  # type: ignore[no-untyped-call]
    finally:
        total.close()  # type: ignore[no-untyped-call]


def exposition() -> bytes:
    """The scrape: every worker's counts in multiprocess mode, this process's otherwise."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return generate_latest(REGISTRY)
    with _locked(path):
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
    set, emptied of what processes that are gone left, see ``_empty``; else a new temporary
    one, removed at exit); the metrics listener when a port is set."""
    if not enabled:
        return
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        _empty(given)
    elif workers > 1:
        made = tempfile.mkdtemp(prefix="broker-metrics-")
        atexit.register(shutil.rmtree, made, True)
        os.environ[MULTIPROC_ENV] = made
    if port:
        listen(host, port)


def _empty(path: str) -> None:
    """A given multiprocess directory made fresh for this start: the files of processes that
    are gone removed, and the counts they left (``reaped``) too unless another live process
    still writes here. The files of a live process — this one's own, opened when its families
    were made, or another broker's that shares the directory — are never touched."""
    with _locked(path):
        processes = _processes(path)
        others = any(_alive(pid) for pid in processes if pid != os.getpid())
        for pid, names in processes.items():
            if not _alive(pid):
                for name in names:
                    os.unlink(os.path.join(path, name))
        if not others:
            for kind in _ADDITIVE:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(path, f"{kind}_{_REAPED}.db"))


def worker_started() -> None:
    """A worker process is serving (``broker_workers``; a dead one is reaped at scrape)."""
    if not _counting[0]:
        return
    WORKERS.set(1)
