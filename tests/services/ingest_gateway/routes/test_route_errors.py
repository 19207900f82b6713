"""Each refusal of the rules is answered with its own HTTP status and its words."""

from __future__ import annotations

import pytest
from litestar.exceptions import HTTPException, ValidationException

from ingest_gateway.errors import Conflict, Forbidden, Invalid, NotFound
from ingest_gateway.routes.errors import as_http


@pytest.mark.parametrize(
    ("refusal", "status"),
    [(NotFound("lead x not found"), 404), (Conflict("lead is already approved"), 409),
     (Forbidden("only the provider"), 403), (Invalid("bad cursor", field="cursor"), 400)],
)  # fmt: skip
def test_a_refusal_is_answered_with_its_status_and_its_words(refusal: Exception, status: int) -> None:
    with pytest.raises(HTTPException) as answered, as_http():
        raise refusal
    assert (answered.value.status_code, answered.value.detail) == (status, str(refusal))


def test_an_invalid_input_is_named_in_the_answer() -> None:
    with pytest.raises(ValidationException) as answered, as_http():
        raise Invalid("provider_id is required for a ledger statement", field="provider_id", message="required")
    assert answered.value.extra == [{"key": "provider_id", "message": "required"}]


def test_anything_else_passes_through_unchanged() -> None:
    with pytest.raises(KeyError), as_http():
        raise KeyError("a bug is a 500, not a refusal")
