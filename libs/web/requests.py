"""Requests whose JSON body cannot crash a handler: a body the decoder chokes on is the client's error (400)."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import ClientException


class JsonSafeRequest(Request[Any, Any, Any]):
    """Litestar answers malformed JSON with 400 but lets two decoding failures through as 500: bytes that are not
    UTF-8 (UnicodeDecodeError) and nesting deeper than the decoder's recursion limit (RecursionError)."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except UnicodeDecodeError:
            raise ClientException("the body is not valid JSON: it is not UTF-8") from None
        except RecursionError:
            raise ClientException("the body is not valid JSON: it is nested too deeply") from None
