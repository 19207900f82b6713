"""The routes' one translation of refusals into HTTP: each domain error to its status (a database that cannot take
the request now is every API's 503, `libs.web.app`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from litestar.exceptions import (
    ClientException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.status_codes import HTTP_409_CONFLICT

from ingest_gateway.errors import Conflict, Forbidden, Invalid, NotFound


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
