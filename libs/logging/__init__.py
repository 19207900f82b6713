"""Structured logs: one JSON object per line on stdout, with service, correlation id and trace ids.

Every line's event, metadata and error are masked for contact data (`libs.logging.pii`) as the line is formatted,
so no caller can forget it: an email address or phone number inside an SMTP reply or a payload never reaches a log.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import trace

from libs.logging.pii import mask_pii, mask_pii_in

_correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
_LEVEL_NAMES = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error", "CRITICAL": "fatal"}


def current_correlation_id() -> str | None:
    return _correlation_id.get()


@contextmanager
def correlation_scope(correlation_id: str | None) -> Iterator[None]:
    """Bind a correlation id to every log line (and publish) made inside the block, including awaited tasks."""
    token = _correlation_id.set(correlation_id)
    try:
        yield
    finally:
        _correlation_id.reset(token)


def _trace_ids() -> tuple[str | None, str | None]:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def log_record_fields(record: logging.LogRecord, service: str) -> dict[str, Any]:
    trace_id, span_id = _trace_ids()
    fields: dict[str, Any] = {
        "level": _LEVEL_NAMES.get(record.levelname, record.levelname.lower()),
        "event": mask_pii(record.getMessage()),
        "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "service": service,
        "correlation_id": getattr(record, "correlation_id", None) or _correlation_id.get(),
        "trace_id": trace_id,
        "span_id": span_id,
        "logger": record.name,
        "metadata": mask_pii_in(getattr(record, "metadata", None) or {}),
    }
    if record.exc_info and record.exc_info[1] is not None:
        error = record.exc_info[1]
        fields["error"] = {
            "type": type(error).__name__,
            "message": mask_pii(str(error)),
            "stack": mask_pii("".join(traceback.format_exception(error))),
        }
    return fields


def _masked_text(value: object) -> str:
    """A value JSON has no type for (an exception, a custom object) logs as its text, masked like the rest."""
    return mask_pii(str(value))


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(log_record_fields(record, self.service), default=_masked_text).decode()


class ConsoleFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        fields = log_record_fields(record, self.service)
        line = f"{fields['timestamp']} {fields['level']:<5} {self.service} {fields['event']}"
        if fields["correlation_id"]:
            line += f" cid={fields['correlation_id']}"
        if fields["metadata"]:
            line += " " + orjson.dumps(fields["metadata"], default=_masked_text).decode()
        if "error" in fields:
            line += "\n" + fields["error"]["stack"]
        return line


def configure_logging(service: str, level: str = "INFO", log_format: str = "json") -> None:
    """Route every logger (ours, uvicorn's, FastStream's) through one stdout handler."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service) if log_format == "json" else ConsoleFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "faststream", "faststream.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # One line per HTTP request is already written by our own middleware, with the route template.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # No formatter prints them: not looking up the thread's and process's names spares every record the work.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


class Logger:
    """The plan's interface: info/warn/error(event, metadata) and with_correlation(id)."""

    def __init__(self, name: str, correlation_id: str | None = None) -> None:
        self._logger = logging.getLogger(name)
        self._correlation_id = correlation_id

    def _log(
        self, level: int, event: str, metadata: Mapping[str, Any] | None, error: BaseException | None = None
    ) -> None:
        if not self._logger.isEnabledFor(level):
            return
        extra = {"metadata": dict(metadata or {}), "correlation_id": self._correlation_id}
        exc_info = (type(error), error, error.__traceback__) if error is not None else None
        self._logger.log(level, event, extra=extra, exc_info=exc_info, stacklevel=3)

    def debug(self, event: str, metadata: Mapping[str, Any] | None = None) -> None:
        self._log(logging.DEBUG, event, metadata)

    def info(self, event: str, metadata: Mapping[str, Any] | None = None) -> None:
        self._log(logging.INFO, event, metadata)

    def warn(self, event: str, metadata: Mapping[str, Any] | None = None) -> None:
        self._log(logging.WARNING, event, metadata)

    def error(self, event: str, error: BaseException | None, metadata: Mapping[str, Any] | None = None) -> None:
        self._log(logging.ERROR, event, metadata, error)

    def with_correlation(self, correlation_id: str) -> Logger:
        return Logger(self._logger.name, correlation_id)


def get_logger(name: str) -> Logger:
    return Logger(name)


__all__ = [
    "ConsoleFormatter",
    "JsonFormatter",
    "Logger",
    "configure_logging",
    "correlation_scope",
    "current_correlation_id",
    "get_logger",
    "log_record_fields",
    "mask_pii",
    "mask_pii_in",
]
