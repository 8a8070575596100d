"""The broker's log lines: uvicorn's and Python's usual text, or one JSON object per line.

``log.format = "json"`` (``BROKER_LOG_FORMAT``) gives every line — the broker's own, uvicorn's
and its access log — the same shape::

    {"time": "2026-12-07T20:31:02.114Z", "level": "info", "logger": "broker.query",
     "message": "...", "request_id": "2b1c…"}

``request_id`` is the AWS request id the answer carries (``x-amzn-RequestId``), set when the
request's id is made (``aws/ids.py``); an access line adds ``method``, ``path`` (without its
query string, which may hold a presigned URL's signature and token), ``status``, ``client`` and
``duration_ms`` (from the request's arrival to its answer's headers). The standard library's
logging with a Formatter subclass: no dependency for a few fields.
"""

from __future__ import annotations

import json
import logging
import logging.config
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from broker.aws.ids import REQUEST_ID
from broker.web.logs import redact

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# When the request being answered arrived (time.time()), set by BrokerApp for each request.
REQUEST_STARTED: ContextVar[float | None] = ContextVar("request_started", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            client, method, path, version, status = args
            path = str(path).split("?", 1)[0]
            doc["message"] = f"{method} {path} {status}"
            doc.update(method=method, path=path, status=status, client=client,
                       http_version=version)
            started = REQUEST_STARTED.get()
            if started is not None:
                doc["duration_ms"] = round((record.created - started) * 1000, 3)
        else:
            doc["message"] = redact(record.getMessage())
        request_id = REQUEST_ID.get()
        if request_id is not None:
            doc["request_id"] = request_id
        if record.exc_info:
            doc["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False, default=str)


def uvicorn_config(level: str) -> dict[str, Any]:
    """``log_config`` for uvicorn (its workers apply it too): every logger, uvicorn's access
    log included, through the JSON formatter to standard error — standard output stays the
    audit log's."""
    handler = {"class": "logging.StreamHandler", "formatter": "json",
               "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "broker.logformat.JsonFormatter"}},
        "handlers": {"default": handler, "access": dict(handler)},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
        "root": {"handlers": ["default"], "level": level.upper()},
    }


def configure(log_format: str, level: str) -> dict[str, Any] | None:
    """Set up this process's logging; the ``log_config`` to hand uvicorn (None: its own)."""
    if log_format == "json":
        config = uvicorn_config(level)
        logging.config.dictConfig(config)
        return config
    logging.basicConfig(level=level.upper(), format=TEXT_FORMAT)
    return None
