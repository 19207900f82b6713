"""Structured logs: one JSON object per line on stdout, with service, correlation id and trace ids.

Every line's event, metadata and error are masked for contact data (`libs.logging.pii`) as the line is formatted,
so no caller can forget it: an email address or phone number inside an SMTP reply or a payload never reaches a log.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TextIO

import orjson
from opentelemetry import trace

from libs.logging.pii import mask_pii, mask_pii_in

_correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
_LEVEL_NAMES = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error", "CRITICAL": "fatal"}
_LEVEL_NAMES_BY_NUMBER = {logging.getLevelNamesMapping()[name]: short for name, short in _LEVEL_NAMES.items()}


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
    error = record.exc_info[1] if record.exc_info else None
    return _fields(
        _LEVEL_NAMES.get(record.levelname, record.levelname.lower()),
        record.getMessage(),
        record.created,
        service,
        record.name,
        getattr(record, "correlation_id", None),
        getattr(record, "metadata", None),
        error,
    )


def _fields(
    level: str,
    event: str,
    created: float,
    service: str,
    logger: str,
    correlation_id: str | None,
    metadata: Mapping[str, Any] | None,
    error: BaseException | None,
) -> dict[str, Any]:
    trace_id, span_id = _trace_ids()
    fields: dict[str, Any] = {
        "level": level,
        "event": mask_pii(event),
        "timestamp": _timestamp(created),
        "service": service,
        "correlation_id": correlation_id or _correlation_id.get(),
        "trace_id": trace_id,
        "span_id": span_id,
        "logger": logger,
        "metadata": mask_pii_in(metadata or {}),
    }
    if error is not None:
        fields["error"] = {
            "type": type(error).__name__,
            "message": mask_pii(str(error)),
            "stack": mask_pii("".join(traceback.format_exception(error))),
        }
    return fields


def _timestamp(created: float) -> str:
    """ISO 8601 in UTC to the millisecond, as `datetime.isoformat` writes it."""
    second = int(created)
    microseconds = round((created - second) * 1_000_000)  # rounded first, as datetime.fromtimestamp does
    if microseconds == 1_000_000:
        second, microseconds = second + 1, 0
    return f"{_date_and_time(second)}.{microseconds // 1000:03d}+00:00"


@lru_cache(maxsize=2)
def _date_and_time(second: int) -> str:
    # Formatted once per second: lines come by the hundred per second under load.
    return datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds").removesuffix("+00:00")


def _masked_text(value: object) -> str:
    """A value JSON has no type for (an exception, a custom object) logs as its text, masked like the rest."""
    return mask_pii(str(value))


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(log_record_fields(record, self.service), default=_masked_text).decode()


class JsonLines(logging.StreamHandler[TextIO]):
    """The handler `configure_logging` installs for JSON lines: it formats records as `JsonFormatter`, and writes
    the lines our `Logger` renders itself when this handler is the only place they can go (no LogRecord, no
    caller frame looked up, no formatter's indirection: a fifth of the cost of a line through `logging`)."""

    def __init__(self, service: str, stream: TextIO) -> None:
        super().__init__(stream)
        self.service = service
        self.setFormatter(JsonFormatter(service))

    def write_fields(self, fields: dict[str, Any]) -> None:
        """As `emit` would write the record these fields came from, errors reported as `logging` reports them."""
        try:
            line = orjson.dumps(fields, default=_masked_text).decode()
            with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
                self.stream.write(line + self.terminator)
                self.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": fields.get("event"), "levelname": fields.get("level")}))


def _direct(logger: logging.Logger, level: int) -> JsonLines | None:
    """The `JsonLines` handler a line of `logger` at `level` goes to, when it goes there alone and nothing on the
    way filters it or sends it elsewhere; None: the line takes `logging`'s way (tests' handlers, other setups)."""
    current = logger
    while current.parent is not None:
        if current.handlers or current.filters or not current.propagate:
            return None
        current = current.parent
    if len(current.handlers) != 1 or current.filters:
        return None
    handler = current.handlers[0]
    if type(handler) is not JsonLines or handler.filters or level < handler.level:
        return None
    return handler


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
    handler: logging.Handler
    if log_format == "json":
        handler = JsonLines(service, sys.stdout)
    else:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(ConsoleFormatter(service))
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
        handler = _direct(self._logger, level)
        if handler is not None:
            handler.write_fields(
                _fields(_LEVEL_NAMES_BY_NUMBER[level], event, time.time(), handler.service, self._logger.name,
                        self._correlation_id, metadata, error)
            )  # fmt: skip
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
    "JsonLines",
    "Logger",
    "configure_logging",
    "correlation_scope",
    "current_correlation_id",
    "get_logger",
    "log_record_fields",
    "mask_pii",
    "mask_pii_in",
]
