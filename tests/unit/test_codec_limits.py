"""The codec's limits: size, depth, length, encoding and shape are refused with a stable code."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from contracts.codec import MAX_JSON_DEPTH, MAX_MESSAGE_BYTES, MalformedMessage, decode
from contracts.inbound import OtherLine, PackageLine, RecordLine
from tests.support import events

BUSINESS = "b-lumen-spa"


def _booking(**data: Any) -> dict[str, Any]:
    booking = events.booking(BUSINESS, "bk-sunday-massage")
    booking["data"].update(data)
    return booking


def _refusal(topic: str, raw: bytes | None) -> MalformedMessage:
    with pytest.raises(MalformedMessage) as caught:
        decode(topic, raw)
    return caught.value


def _padded_to(document: dict[str, Any], size: int) -> bytes:
    """The document with an ignored extra field that brings it to exactly `size` bytes."""
    bare = orjson.dumps({**document, "padding": ""})
    padded = orjson.dumps({**document, "padding": "x" * (size - len(bare))})
    assert len(padded) == size
    return padded


def _nested(levels: int) -> dict[str, Any]:
    """A booking whose JSON nests exactly `levels` deep (the envelope itself is level 1)."""
    deepest: dict[str, Any] = {}
    for _ in range(levels - 3):  # envelope and data are two levels, the innermost {} one more
        deepest = {"x": deepest}
    return _booking(notes=deepest)


# -- size -----------------------------------------------------------------------------------------


def test_a_message_at_the_size_limit_is_decoded() -> None:
    envelope = decode("booking.created", _padded_to(_booking(), MAX_MESSAGE_BYTES))
    assert envelope.data.booking_id == "bk-sunday-massage"


def test_a_message_one_byte_over_the_size_limit_is_refused_before_parsing() -> None:
    refusal = _refusal("booking.created", _padded_to(_booking(), MAX_MESSAGE_BYTES + 1))
    assert refusal.code == "too_large"
    assert refusal.detail == f"{MAX_MESSAGE_BYTES + 1} bytes exceeds {MAX_MESSAGE_BYTES}"


def test_a_huge_value_that_is_not_even_json_is_refused_by_size_alone() -> None:
    assert _refusal("invoice.published", b"\x00" * (5 * MAX_MESSAGE_BYTES)).code == "too_large"


# -- depth ----------------------------------------------------------------------------------------


def test_json_nested_to_the_depth_limit_is_decoded() -> None:
    envelope = decode("booking.created", orjson.dumps(_nested(MAX_JSON_DEPTH)))
    assert envelope.data.client_id == "cli-ana"


def test_json_nested_one_level_past_the_limit_is_refused() -> None:
    refusal = _refusal("booking.created", orjson.dumps(_nested(MAX_JSON_DEPTH + 1)))
    assert refusal.code == "too_deep"
    assert str(MAX_JSON_DEPTH) in refusal.detail


def test_nesting_deeper_than_the_json_parser_goes_is_refused_as_too_deep() -> None:
    brackets = 100_000
    assert _refusal("booking.created", b"[" * brackets + b"]" * brackets).code == "too_deep"


def test_nesting_inside_a_string_is_only_text() -> None:
    envelope = decode("booking.created", orjson.dumps(_booking(notes="[" * 5000)))
    assert envelope.data.service_id == "svc-massage-60"


# -- many lines -----------------------------------------------------------------------------------


def _invoice_lines(count: int) -> list[dict[str, Any]]:
    """Mostly retail and services, a package line every hundred, a record line every thousand."""
    lines: list[dict[str, Any]] = []
    for n in range(count):
        if n % 1000 == 999:
            lines.append({"line_id": f"r{n}", "type": "package_record", "package_record_id": "r-1"})
        elif n % 100 == 0:
            lines.append(events.package_line(f"p{n}"))
        else:
            kind = "product" if n % 2 else "service"
            lines.append({"line_id": f"l{n}", "type": kind, "product_id": f"oil-{n}"})
    return lines


def test_an_invoice_of_ten_thousand_lines_is_decoded_line_by_line() -> None:
    raw = orjson.dumps(events.invoice(BUSINESS, lines=_invoice_lines(10_000)))
    lines = decode("invoice.published", raw).data.lines
    kinds = [type(line) for line in lines]
    assert (kinds.count(PackageLine), kinds.count(RecordLine), kinds.count(OtherLine)) == (
        100,
        10,
        9890,
    )


def test_an_invoice_over_ten_thousand_lines_is_refused_naming_the_lines() -> None:
    raw = orjson.dumps(events.invoice(BUSINESS, lines=_invoice_lines(10_001)))
    refusal = _refusal("invoice.published", raw)
    assert refusal.code == "invalid"
    assert refusal.detail.startswith("data.lines: List should have at most 10000 items")


def test_the_error_report_stays_short_however_many_fields_are_wrong() -> None:
    broken = [{"line_id": f"l{n}", "type": "package"} for n in range(5000)]
    refusal = _refusal("invoice.published", orjson.dumps(events.invoice(BUSINESS, lines=broken)))
    assert refusal.detail.endswith("more)")
    assert len(refusal.detail) < 1000


# -- long strings ---------------------------------------------------------------------------------


def test_an_id_of_sixty_four_characters_is_accepted() -> None:
    envelope = decode("booking.created", orjson.dumps(_booking(booking_id="b" * 64)))
    assert len(envelope.data.booking_id) == 64


def test_an_id_longer_than_sixty_four_characters_is_refused_naming_it() -> None:
    refusal = _refusal("booking.created", orjson.dumps(_booking(booking_id="b" * 65)))
    assert refusal.code == "invalid"
    assert refusal.detail == "data.booking_id: String should have at most 64 characters"


def test_a_package_name_of_a_hundred_thousand_characters_is_refused_without_echoing_it() -> None:
    package = events.package(BUSINESS)
    package["data"]["name"] = "Relax " * 20_000
    refusal = _refusal("package.created", orjson.dumps(package))
    assert refusal.detail == "data.name: String should have at most 200 characters"


def test_every_other_string_is_capped_at_four_kilobytes() -> None:
    lines = [{"line_id": "l1", "type": "gift-card-" + "x" * 5000}]
    refusal = _refusal("invoice.published", orjson.dumps(events.invoice(BUSINESS, lines=lines)))
    assert refusal.detail == "data.lines.0.other.type: String should have at most 4096 characters"


def test_a_long_string_in_an_unknown_field_is_ignored_with_the_field() -> None:
    envelope = decode("booking.created", orjson.dumps(_booking(notes="n" * 100_000)))
    assert not hasattr(envelope.data, "notes")


def test_a_money_amount_with_too_many_digits_is_refused() -> None:
    price = {"amount": "9" * 13 + ".00", "currency": "EUR"}
    refusal = _refusal("booking.created", orjson.dumps(_booking(price=price)))
    assert refusal.detail.startswith("data.price.amount: Value error, must be a decimal string")


@pytest.mark.parametrize("version", [2**31, 2**40, 2**63 - 1])
def test_a_version_past_32_bits_is_refused_before_it_reaches_the_database(version: int) -> None:
    refusal = _refusal("booking.created", orjson.dumps(_booking(version=version)))
    assert refusal.detail == "data.version: Input should be less than or equal to 2147483647"


def test_a_session_total_past_32_bits_is_refused_naming_it() -> None:
    edit = events.envelope(
        "package_record.edit_requested",
        BUSINESS,
        {
            "request_id": "req-topup",
            "package_record_id": "rec-1",
            "client_id": "cli-ana",
            "changes": {"sessions": [{"service_id": "svc-massage-60", "sessions_total": 2**40}]},
        },
    )
    refusal = _refusal("package_record.edit_requested", orjson.dumps(edit))
    assert refusal.detail.startswith("data.changes.sessions.0.sessions_total: Input should be less")


# -- encodings and shapes -------------------------------------------------------------------------


def _latin1(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document).decode().encode("latin-1")


CAFE = _booking(client_id="cli-zoé-café")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(_latin1(CAFE), id="latin-1"),
        pytest.param(orjson.dumps(CAFE).decode().encode("utf-16"), id="utf-16 with BOM"),
        pytest.param(orjson.dumps(CAFE).decode().encode("utf-16-le"), id="utf-16 without BOM"),
        pytest.param(b"\xef\xbb\xbf" + orjson.dumps(CAFE), id="utf-8 with BOM"),
        pytest.param(orjson.dumps(CAFE).replace("é".encode(), b"\xc3\x28"), id="invalid utf-8"),
        pytest.param(orjson.dumps(CAFE).replace("é".encode(), b"\\ud800"), id="lone surrogate"),
    ],
)
def test_anything_but_utf8_json_is_refused_as_not_json(raw: bytes) -> None:
    assert _refusal("booking.created", raw).code == "not_json"


def test_the_same_booking_in_utf8_is_decoded() -> None:
    assert decode("booking.created", orjson.dumps(CAFE)).data.client_id == "cli-zoé-café"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(orjson.dumps([_booking()]), id="array of one event"),
        pytest.param(orjson.dumps([_booking()] * 20), id="array of many events"),
        pytest.param(b"null", id="null"),
        pytest.param(b"42", id="number"),
        pytest.param(b'"booking.created"', id="string"),
    ],
)
def test_json_that_is_not_an_object_is_refused_as_such(raw: bytes) -> None:
    refusal = _refusal("booking.created", raw)
    assert (refusal.code, refusal.detail) == ("not_an_object", "the message must be a JSON object")


@pytest.mark.parametrize("raw", [None, b""], ids=["tombstone", "zero bytes"])
def test_an_empty_value_is_refused_as_empty(raw: bytes | None) -> None:
    assert _refusal("booking.created", raw).code == "empty"
