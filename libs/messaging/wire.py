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


_LENGTH = struct.Struct(">I")
_LONG_STRING = ord("S")
_TABLE = ord("F")


def _table_at(data: bytes, start: int) -> tuple[int, common.FieldTable]:
    """pamqp's table decoder reading at `start` of `data` (the property list or a method's arguments, where the table
    begins): the bytes consumed and the table. Keys are read like short strings (pamqp decodes them as strict UTF-8
    inline). Long strings and nested tables are read in place; pamqp's own decoders, which take the rest of the
    buffer as a copy of its own for each value, read the other values. A dead letter carries a dozen headers, one
    a stack trace: reading them was a tenth of the dlq-service's CPU while capturing (a quarter less now)."""
    try:
        end = start + 4 + _LENGTH.unpack_from(data, start)[0]
        if end > len(data):
            raise ValueError("Field table length exceeds available data")
        table: common.FieldTable = {}
        offset = start + 4
        while offset < end:
            key_end = offset + 1 + data[offset]
            key = data[offset + 1 : key_end].decode("utf-8", "surrogateescape")
            if key_end >= len(data):  # as pamqp reads a key at the very end: no value
                offset, table[key] = key_end, None
                continue
            kind = data[key_end]
            if kind == _LONG_STRING:
                value_start = key_end + 5
                offset = value_start + _LENGTH.unpack_from(data, key_end + 1)[0]
                raw = data[value_start:offset]
                try:
                    table[key] = raw.decode("utf-8")
                except UnicodeDecodeError:
                    table[key] = raw
            elif kind == _TABLE:
                consumed, table[key] = _table_at(data, key_end + 1)
                offset = key_end + 1 + consumed
            else:
                consumed, table[key] = decode.embedded_value(data[key_end:])
                offset = key_end + consumed
    except (struct.error, IndexError) as error:
        raise ValueError("Could not unpack field table") from error
    return end - start, table


def _field_table(value: bytes) -> tuple[int, common.FieldTable]:
    return _table_at(value, 0)


Reader = Callable[[bytes, int], tuple[int, Any]]
"""Reads one property at an offset of the property list: the offset after it and its value."""


def _short_str_at(data: bytes, offset: int) -> tuple[int, str]:
    end = offset + 1 + data[offset]
    return end, data[offset + 1 : end].decode("utf-8", "surrogateescape")


def _octet_at(data: bytes, offset: int) -> tuple[int, int]:
    return offset + 1, data[offset]


def _table_property_at(data: bytes, offset: int) -> tuple[int, common.FieldTable]:
    consumed, table = _table_at(data, offset)
    return offset + consumed, table


def _by_type_at(data_type: str) -> Reader:
    def read(data: bytes, offset: int) -> tuple[int, Any]:
        consumed, value = decode.by_type(data[offset:], data_type)
        return offset + consumed, value

    return read


_READERS: dict[str, Reader] = {"shortstr": _short_str_at, "octet": _octet_at, "table": _table_property_at}


def _properties_unmarshal(properties: type[commands.Basic.Properties]) -> Any:
    """Reads each property present in the flags, in the class's order, at its offset (pamqp's own unmarshal cuts a
    copy of the rest of the list for each one); the decoders are pamqp's as installed here."""
    plan = [
        (name, properties.flags[name], _READERS.get(data_type) or _by_type_at(data_type))
        for name in properties.__slots__
        for data_type in [getattr(properties, "_" + name)]
    ]

    def unmarshal(self: commands.Basic.Properties, flags: int, data: bytes) -> None:
        try:
            offset = 0
            for name, flag, read in plan:
                if flags & flag:
                    offset, value = read(data, offset)
                    setattr(self, name, value)
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
    properties.unmarshal = _properties_unmarshal(properties)  # type: ignore[method-assign]


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
    if text.isascii():  # nearly every text, told without a copy (ASCII holds no escaped byte)
        return text if "\x00" not in text else text.replace("\x00", "\\x00")
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
