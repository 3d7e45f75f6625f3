"""The contract models read the platform's examples, refuse bad input readably, accept extras."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from contracts import inbound
from contracts.codec import MalformedMessage, decode
from contracts.topics import INBOUND

# The platform's examples, kept in the project so that a clone alone runs every test.
EXAMPLES = Path(__file__).resolve().parents[2] / "contracts" / "examples"


def _examples() -> list[Path]:
    found = sorted(EXAMPLES.glob("*.json"))
    assert found, f"no contract examples at {EXAMPLES}"
    return found


def _topic(path: Path) -> str:
    return ".".join(path.name.split(".")[:2])


@pytest.mark.parametrize("path", _examples(), ids=lambda p: p.name)
def test_every_platform_example_parses_into_its_model(path: Path) -> None:
    envelope = decode(_topic(path), path.read_bytes())
    assert isinstance(envelope.data, INBOUND[_topic(path)].model)
    assert envelope.event_type == _topic(path)


def test_every_inbound_topic_has_an_example() -> None:
    assert {_topic(p) for p in _examples()} == set(INBOUND)


def _booking() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EXAMPLES / "booking.created.json").read_text())
    return document


def _refusal(document: dict[str, Any], topic: str = "booking.created") -> MalformedMessage:
    with pytest.raises(MalformedMessage) as caught:
        decode(topic, orjson.dumps(document))
    return caught.value


def test_a_missing_required_field_is_refused_naming_it() -> None:
    booking = _booking()
    del booking["data"]["client_id"]
    refusal = _refusal(booking)
    assert refusal.code == "invalid"
    assert "data.client_id" in refusal.detail
    assert "Field required" in refusal.detail


def test_a_wrong_type_is_refused_naming_the_field() -> None:
    booking = _booking()
    booking["data"]["version"] = "two"
    assert "data.version" in _refusal(booking).detail


def test_a_money_amount_must_be_a_decimal_string() -> None:
    booking = _booking()
    booking["data"]["price"]["amount"] = 60.0
    assert "data.price.amount" in _refusal(booking).detail


def test_unknown_extra_fields_are_accepted_and_ignored() -> None:
    booking = _booking()
    booking["data"]["room"] = "blue"
    booking["tracing"] = {"span": 1}
    envelope = decode("booking.created", orjson.dumps(booking))
    assert isinstance(envelope.data, inbound.BookingSnapshot)
    assert not hasattr(envelope.data, "room")


def test_package_events_need_an_actor() -> None:
    package = json.loads((EXAMPLES / "package.created.json").read_text())
    package["actor"] = None
    assert "actor" in _refusal(package, "package.created").detail


def test_the_event_type_must_match_the_topic() -> None:
    assert _refusal(_booking(), "booking.updated").code == "wrong_event_type"


def test_bytes_that_are_not_json_are_refused() -> None:
    with pytest.raises(MalformedMessage) as caught:
        decode("booking.created", b"\xff\xfe not json")
    assert caught.value.code == "not_json"


def test_deeply_nested_json_is_refused_before_validation() -> None:
    booking = _booking()
    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(100):
        cursor["x"] = {}
        cursor = cursor["x"]
    booking["data"]["extra"] = deep
    assert _refusal(booking).code == "too_deep"


def test_unknown_invoice_line_types_are_kept_as_other_lines() -> None:
    document = json.loads((EXAMPLES / "invoice.published.json").read_text())
    lines = decode("invoice.published", orjson.dumps(document)).data.lines
    assert [type(line).__name__ for line in lines] == ["PackageLine", "RecordLine", "OtherLine"]


def test_a_package_line_without_quantity_is_refused() -> None:
    document = json.loads((EXAMPLES / "invoice.published.json").read_text())
    bad = copy.deepcopy(document)
    del bad["data"]["lines"][0]["quantity"]
    assert "quantity" in _refusal(bad, "invoice.published").detail
