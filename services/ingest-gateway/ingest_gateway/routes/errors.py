"""The routes' one translation of refusals into HTTP: each domain error to its status, and a database that cannot
store the request now to 503 with Retry-After (never 500)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from litestar import Request, Response
from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.status_codes import HTTP_409_CONFLICT, HTTP_500_INTERNAL_SERVER_ERROR, HTTP_503_SERVICE_UNAVAILABLE
from litestar.types import ExceptionHandlersMap

from ingest_gateway.errors import Conflict, Forbidden, Invalid, NotFound
from libs.messaging.outage import is_unavailable
from libs.web.app import refusal_as_json

RETRY_AFTER_S = 5
DATABASE_DOWN = "the database cannot store this request now; nothing was changed, retry later"
# Lock and statement timeouts, deadlocks and serialization failures: the request did not happen, and the same
# request later can succeed (is_unavailable covers the connection, shutdown and resource classes).
RETRY_LATER_SQLSTATES = frozenset({"55P03", "57014", "40P01", "40001"})


def unavailable(detail: str) -> HTTPException:
    return HTTPException(
        status_code=HTTP_503_SERVICE_UNAVAILABLE, detail=detail, headers={"Retry-After": str(RETRY_AFTER_S)}
    )


def retry_later(error: BaseException) -> bool:
    """The request failed for a reason that says nothing about it: the database is away, busy or slow."""
    if is_unavailable(error) or isinstance(error, TimeoutError):
        return True
    original = getattr(error, "orig", None)
    return getattr(original, "sqlstate", None) in RETRY_LATER_SQLSTATES


def unexpected_error(request: Request[Any, Any, Any], error: Exception) -> Response[dict[str, Any]]:
    """503 with Retry-After when the database cannot take the request now; any other error stays a 500."""
    if retry_later(error):
        return refusal_as_json(request, unavailable(DATABASE_DOWN))
    return refusal_as_json(request, HTTPException(status_code=HTTP_500_INTERNAL_SERVER_ERROR))


EXCEPTION_HANDLERS: ExceptionHandlersMap = {Exception: unexpected_error}
"""For every gateway route and its dependencies (refusals keep the app's own HTTPException handler)."""


@contextmanager
def as_http() -> Iterator[None]:
    """404, 409, 403 or 400 for what the rules refuse."""
    try:
        yield
    except NotFound as error:
        raise NotFoundException(str(error)) from None
    except Conflict as error:
        raise ClientException(status_code=HTTP_409_CONFLICT, detail=str(error)) from None
    except Forbidden as error:
        raise PermissionDeniedException(str(error)) from None
    except Invalid as error:
        raise ValidationException(str(error), extra=[{"key": error.field, "message": error.message}]) from None
