"""AMQP frames a publisher got wrong are read, never fatal: a bad property costs one message, not the connection.

pamqp decodes every short string (`message_id`, `type`, a routing key) as strict UTF-8 and timestamps as
datetimes; one invalid byte or an out-of-range timestamp raises inside aiormq's frame reader, which closes the
connection with every channel on it, and the broker redelivers the same message to the next consumer. Installed
once per process (`create_broker` does it), the decoders here keep such a value instead: short strings with their
invalid bytes as surrogate escapes (so `raw_bytes` gets the exact bytes back), timestamps out of range as None in
the properties and as the integer in headers, and a property list that still cannot be read as one header
holding its raw bytes. The consumer policy then dead-letters that message (`undecodable_properties`).
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Callable, Mapping
from typing import Any

from pamqp import commands, common, decode

UNDECODABLE_PROPERTIES = "fmhl-undecodable-properties"
"""Set by the decoder, never by a publisher of ours: the raw property bytes of a content header it could not read."""

SHORT_STRING_PROPERTIES = (
    "content_type", "content_encoding", "correlation_id", "reply_to", "expiration", "message_id",
    "message_type", "user_id", "app_id", "cluster_id",
)  # fmt: skip


def _short_str(value: bytes) -> tuple[int, str]:
    if not value:
        raise ValueError("Could not unpack short string value")
    length = value[0]
    return length + 1, value[1 : length + 1].decode("utf-8", "surrogateescape")


def _epoch(value: bytes) -> tuple[int, int, datetime.datetime | None]:
    consumed, seconds = decode.long_long_int(value)
    try:
        _, when = decode.timestamp(value)
    except (OverflowError, OSError, ValueError):
        return consumed, seconds, None
    return consumed, seconds, when


def _property_timestamp(value: bytes) -> tuple[int, datetime.datetime | None]:
    consumed, _, when = _epoch(value)
    return consumed, when


def _table_timestamp(value: bytes) -> tuple[int, datetime.datetime | int]:
    consumed, seconds, when = _epoch(value)
    return consumed, seconds if when is None else when


def _field_table(value: bytes) -> tuple[int, common.FieldTable]:
    """pamqp's table decoder, with keys read like short strings (pamqp decodes them as strict UTF-8 inline)."""
    try:
        length = common.Struct.integer.unpack(value[0:4])[0]
        end = 4 + length
        if end > len(value):
            raise ValueError("Field table length exceeds available data")
        offset, table = 4, {}
        while offset < end:
            key_length = value[offset]
            key = value[offset + 1 : offset + 1 + key_length].decode("utf-8", "surrogateescape")
            offset += 1 + key_length
            consumed, table[key] = decode.embedded_value(value[offset:])
            offset += consumed
    except (struct.error, IndexError) as error:
        raise ValueError("Could not unpack field table") from error
    return end, table


def _properties_unmarshal(original: Callable[[commands.Basic.Properties, int, bytes], None]) -> Any:
    def unmarshal(self: commands.Basic.Properties, flags: int, data: bytes) -> None:
        try:
            original(self, flags, data)
        except Exception:
            # Nothing of it is trusted: the message keeps its body and these bytes, and is dead-lettered.
            for name in self.__slots__:
                setattr(self, name, None)
            self.headers = {UNDECODABLE_PROPERTIES: bytes(data)}

    return unmarshal


def install_tolerant_decoding() -> None:
    """Idempotent; affects every AMQP connection of the process (pamqp's decoders are module state)."""
    if decode.METHODS["shortstr"] is _short_str:
        return
    decode.METHODS["shortstr"] = _short_str
    decode.METHODS["timestamp"] = _property_timestamp
    decode.METHODS["table"] = _field_table
    decode.TABLE_MAPPING[b"F"] = _field_table
    decode.TABLE_MAPPING[b"T"] = _table_timestamp
    properties = commands.Basic.Properties
    properties.unmarshal = _properties_unmarshal(properties.unmarshal)  # type: ignore[method-assign]


def is_clean(text: str) -> bool:
    """False when the text came from invalid UTF-8 (it holds surrogate escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def raw_bytes(text: str) -> bytes:
    """The bytes a tolerant decode read `text` from."""
    return text.encode("utf-8", "surrogateescape")


def printable(text: str) -> str:
    """Text safe to publish, log and store: invalid bytes as `\\xff`, NUL as `\\x00`."""
    if is_clean(text) and "\x00" not in text:
        return text
    return raw_bytes(text).decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def short_text(text: str | None) -> str | None:
    """`printable`, cut to the 255 bytes an AMQP short string holds (escaping may have made it longer)."""
    if text is None:
        return None
    encoded = printable(text).encode()
    return encoded[:255].decode("utf-8", "ignore") if len(encoded) > 255 else printable(text)


def undecodable(properties: Mapping[str, Any], headers: Mapping[str, Any]) -> list[str]:
    """Names of the properties (and header keys) that were not valid UTF-8, or the decoder's own marker."""
    found = [name for name, value in properties.items() if isinstance(value, str) and not is_clean(value)]
    found += [f"header {printable(key)!r}" for key in headers if not is_clean(key)]
    if UNDECODABLE_PROPERTIES in headers:
        found.append("the whole property list")
    return found
