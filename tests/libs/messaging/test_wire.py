"""Decoding AMQP content headers a publisher got wrong: every property survives as something, nothing raises."""

from __future__ import annotations

import datetime
import decimal
import struct

import pytest
from pamqp import commands, common, decode, encode, header

from libs.messaging.wire import (
    UNDECODABLE_PROPERTIES,
    install_tolerant_decoding,
    is_clean,
    printable,
    raw_bytes,
    short_text,
    undecodable,
)

PLACEHOLDER = "PLACEHOLDER-1"


def received(properties: commands.Basic.Properties, *replacements: tuple[bytes, bytes]) -> commands.Basic.Properties:
    """The properties as a consumer decodes them after the placeholders were swapped for raw bytes on the wire."""
    install_tolerant_decoding()
    wire = header.ContentHeader(0, 2, properties).marshal()
    for placeholder, raw in replacements:
        assert len(placeholder) == len(raw), "a replacement keeps every length prefix right"
        wire = wire.replace(placeholder, raw)
    decoded = header.ContentHeader()
    decoded.unmarshal(wire)
    return decoded.properties


def test_a_short_string_that_is_not_utf8_keeps_its_bytes() -> None:
    properties = received(
        commands.Basic.Properties(message_id=PLACEHOLDER, message_type=PLACEHOLDER),
        (PLACEHOLDER.encode(), b"id-\xff\xfe-bytes12"),
    )
    assert properties.message_id is not None
    assert not is_clean(properties.message_id)
    assert raw_bytes(properties.message_id) == b"id-\xff\xfe-bytes12"
    assert printable(properties.message_id) == "id-\\xff\\xfe-bytes12"
    assert undecodable({"message_id": properties.message_id, "type": "fine"}, {}) == ["message_id"]


def test_a_header_name_that_is_not_utf8_keeps_its_bytes_and_its_value() -> None:
    properties = received(
        commands.Basic.Properties(headers={"KEYKEY": "value", "other": 1}), (b"KEYKEY", b"k\xffk\xfeKK")
    )
    headers = properties.headers or {}
    assert headers["other"] == 1
    [(key, value)] = [(key, value) for key, value in headers.items() if key != "other"]
    assert (raw_bytes(key), value) == (b"k\xffk\xfeKK", "value")
    assert undecodable({}, headers) == ["header 'k\\\\xffk\\\\xfeKK'"]


def test_a_timestamp_past_the_calendar_is_none_as_a_property_and_its_number_in_headers() -> None:
    far = encode.long_long_int(2**62)
    properties = received(
        commands.Basic.Properties(timestamp=datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC), headers={"at": 1}),
        (encode.timestamp(datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)), far),
    )
    assert properties.timestamp is None
    consumed, value = decode.TABLE_MAPPING[b"T"](far)
    assert (consumed, value) == (8, 2**62)


def _nested_table(depth: int) -> bytes:
    """A header table nested `depth` levels deep, as bytes (pamqp's own encoder cannot go that deep either)."""
    table = struct.pack(">I", 0)
    for _ in range(depth):
        entry = b"\x01nF" + table
        table = struct.pack(">I", len(entry)) + entry
    return table


def test_a_property_list_nothing_can_read_is_one_header_with_its_raw_bytes() -> None:
    install_tolerant_decoding()
    headers_flag = commands.Basic.Properties.flags["headers"]
    # Deeper than the decoder's recursion can follow: it would raise RecursionError inside the frame reader.
    wire = struct.pack(">HHQH", commands.Basic.frame_id, 0, 2, headers_flag) + _nested_table(3_000)
    decoded = header.ContentHeader()
    decoded.unmarshal(wire)
    headers = decoded.properties.headers or {}
    assert list(headers) == [UNDECODABLE_PROPERTIES]
    assert headers[UNDECODABLE_PROPERTIES] == _nested_table(3_000)
    assert undecodable({}, headers) == ["the whole property list"]


def test_installing_twice_changes_nothing() -> None:
    install_tolerant_decoding()
    unmarshal = commands.Basic.Properties.unmarshal
    install_tolerant_decoding()
    assert commands.Basic.Properties.unmarshal is unmarshal


@pytest.mark.parametrize(
    ("text", "shown"),
    [("plain", "plain"), ("nul\x00", "nul\\x00"), (b"\xffx".decode("utf-8", "surrogateescape"), "\\xffx")],
    ids=["clean", "nul", "invalid-utf8"],
)
def test_printable_text_can_be_published_logged_and_stored(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert printable(text).encode()


def test_a_short_text_fits_an_amqp_short_string_even_after_escaping() -> None:
    escaped_long = b"\xff".decode("utf-8", "surrogateescape") * 200
    short = short_text(escaped_long)
    assert short is not None
    assert len(short.encode()) <= 255
    assert short.startswith("\\xff")


def test_every_kind_of_header_value_reads_back_as_it_was_sent() -> None:
    sent: common.FieldTable = {
        "text": "a stack trace\nwith lines é€",
        "empty": "",
        "small": 7,
        "int32": -(2**31),
        "int64": 2**40,
        "flag": True,
        "ratio": 0.25,
        "price": decimal.Decimal("12.50"),
        "at": datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC),
        "raw": bytearray(b"\x00\xff"),
        "nothing": None,
        "x-death": [{"queue": "leads", "count": 2, "routing-keys": ["lead.approved"]}],
        "nested": {"deeper": {"deepest": "yes"}},
    }
    properties = received(commands.Basic.Properties(message_id="m-1", delivery_mode=2, headers=sent))
    assert (properties.message_id, properties.delivery_mode, properties.headers) == ("m-1", 2, sent)


def test_a_long_string_header_that_is_not_utf8_keeps_its_bytes() -> None:
    properties = received(
        commands.Basic.Properties(headers={"why": "PLACEHOLDER-1"}), (b"PLACEHOLDER-1", b"bad-\xff-bytes12")
    )
    assert properties.headers == {"why": b"bad-\xff-bytes12"}
