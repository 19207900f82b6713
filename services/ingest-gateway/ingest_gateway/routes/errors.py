"""The routes' one translation of refusals into HTTP: each domain error and an unconfirmed publish to its status."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.status_codes import HTTP_409_CONFLICT, HTTP_503_SERVICE_UNAVAILABLE

from ingest_gateway.errors import Conflict, Forbidden, Invalid, NotFound
from libs.messaging.publisher import PublishFailed

BROKER_DOWN = "the message broker did not confirm; nothing was changed, retry later"


def broker_unavailable() -> HTTPException:
    return HTTPException(status_code=HTTP_503_SERVICE_UNAVAILABLE, detail=BROKER_DOWN, headers={"Retry-After": "5"})


@contextmanager
def as_http() -> Iterator[None]:
    """404, 409, 403 or 400 for what the rules refuse; 503 with Retry-After when the broker did not confirm."""
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
    except PublishFailed:
        raise broker_unavailable() from None
