"""What the contract states of a value is the schema's to refuse: bad input, not a rule refusal."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from contracts.base import Money
from contracts.codec import MalformedMessage, decode
from contracts.inbound import PackageDefined, PackageLine
from services.catalog import domain as catalog
from services.invoicing import domain as invoicing
from tests.support import events

EXAMPLES = Path(__file__).resolve().parents[2] / "contracts" / "examples"

BUSINESS = "b-lumen-spa"
Event = dict[str, Any]


def _refusal(event: Event) -> MalformedMessage:
    with pytest.raises(MalformedMessage) as caught:
        decode(event["event_type"], orjson.dumps(event))
    assert caught.value.code == "invalid", "bad input is parked in the DLQ as invalid"
    return caught.value


def _package(**terms: Any) -> Event:
    return events.package(BUSINESS, **terms)


def _sessions(sessions: int | None) -> Event:
    return _package(services=[{"service_id": "svc-massage-60", "sessions": sessions}])


def _invoice(quantity: int, amount: str = "450.00") -> Event:
    line = {**events.package_line("l1", quantity=quantity)}
    line["unit_price"] = {"amount": amount, "currency": "EUR"}
    return events.invoice(BUSINESS, lines=[line])


# -- validity -------------------------------------------------------------------------------------


def test_an_until_validity_without_its_date_is_bad_input() -> None:
    refusal = _refusal(_package(validity={"type": "until"}))
    assert "data.validity.until.date: Field required" in refusal.detail


def test_an_until_validity_naming_its_date_under_another_key_is_bad_input() -> None:
    refusal = _refusal(_package(validity={"type": "until", "until": "2027-06-30"}))
    assert "data.validity.until.date: Field required" in refusal.detail


def test_an_until_validity_keeps_its_date() -> None:
    package = decode(
        "package.created", orjson.dumps(_package(validity={"type": "until", "date": "2027-06-30"}))
    )
    assert str(package.data.validity.date) == "2027-06-30"


# -- money ----------------------------------------------------------------------------------------


NEGATIVE = {
    "a booking's price": (
        events.booking(BUSINESS, "bk-refund", price="-60.00"),
        "data.price.amount",
    ),
    "a package's price": (
        events.envelope(
            "package.created",
            BUSINESS,
            {**_package()["data"], "price": {"amount": "-450.00", "currency": "EUR"}},
            actor=events.OWNER,
        ),
        "data.price.amount",
    ),
    "an amount discount": (
        _package(discount={"type": "amount", "value": {"amount": "-5.00", "currency": "EUR"}}),
        "data.discount.amount.value.amount",
    ),
    "an invoice line's unit price": (_invoice(1, amount="-450.00"), "unit_price.amount"),
    "a negative zero": (events.booking(BUSINESS, "bk-odd", price="-0.00"), "data.price.amount"),
}


@pytest.mark.parametrize(("event", "field"), NEGATIVE.values(), ids=NEGATIVE.keys())
def test_a_negative_money_amount_is_bad_input_naming_its_field(event: Event, field: str) -> None:
    refusal = _refusal(event)
    assert field in refusal.detail
    assert "must not be negative" in refusal.detail


def test_a_free_booking_costs_zero_and_is_good_input() -> None:
    booking = decode(
        "booking.created", orjson.dumps(events.booking(BUSINESS, "bk-gift", price="0"))
    )
    assert booking.data.price.amount == 0


def test_our_own_money_is_never_negative_either() -> None:
    with pytest.raises(ValidationError, match="must not be negative"):
        Money(amount="-0.01", currency="EUR")


# -- counts and percentages -----------------------------------------------------------------------


@pytest.mark.parametrize("sessions", [0, -3])
def test_a_package_of_fewer_than_one_session_is_bad_input(sessions: int) -> None:
    refusal = _refusal(_sessions(sessions))
    assert "data.services.0.sessions" in refusal.detail
    assert "greater than or equal to 1" in refusal.detail


@pytest.mark.parametrize("sessions", [1, None])
def test_one_session_or_unlimited_is_good_input(sessions: int | None) -> None:
    package = decode("package.created", orjson.dumps(_sessions(sessions)))
    assert package.data.services[0].sessions == sessions


@pytest.mark.parametrize("percent", ["150", "100.5", "-1", "-0"])
def test_a_percent_outside_zero_to_a_hundred_is_bad_input(percent: str) -> None:
    refusal = _refusal(_package(discount={"type": "percent", "value": percent}))
    assert "data.discount.percent.value" in refusal.detail
    assert 'a percent must be between "0" and "100"' in refusal.detail


@pytest.mark.parametrize("percent", ["0", "12.5", "100", "100.00"])
def test_a_percent_from_zero_to_a_hundred_is_good_input(percent: str) -> None:
    package = decode(
        "package.created", orjson.dumps(_package(discount={"type": "percent", "value": percent}))
    )
    assert str(package.data.discount.value) == percent


@pytest.mark.parametrize("quantity", [0, -2])
def test_an_invoice_line_selling_fewer_than_one_record_is_bad_input(quantity: int) -> None:
    refusal = _refusal(_invoice(quantity))
    assert "data.lines.0.package.quantity" in refusal.detail
    assert "greater than or equal to 1" in refusal.detail


# -- what stays a rule: the business's limits, past what the schema says --------------------------


def _decoded_package(**terms: Any) -> PackageDefined:
    data: PackageDefined = decode("package.created", orjson.dumps(_package(**terms))).data
    return data


def test_a_package_of_more_sessions_than_the_catalog_takes_is_refused_by_the_rule() -> None:
    refusal = catalog.validate(_decoded_package(sessions=catalog.MAX_SESSIONS + 1))
    assert refusal == catalog.Refusal(
        "invalid_package", f"services[0].sessions: must be at most {catalog.MAX_SESSIONS}"
    )
    assert catalog.validate(_decoded_package(sessions=catalog.MAX_SESSIONS)) is None


def test_a_discount_in_another_currency_is_refused_by_the_rule() -> None:
    dollars = {"type": "amount", "value": {"amount": "5.00", "currency": "USD"}}
    refusal = catalog.validate(_decoded_package(discount=dollars))
    assert refusal is not None
    assert refusal.detail == "discount.value.currency: must be the package's currency"


def test_a_line_selling_more_than_the_limit_is_refused_by_the_rule() -> None:
    line = decode("invoice.published", orjson.dumps(_invoice(invoicing.MAX_QUANTITY + 1)))
    [sold] = line.data.lines
    assert isinstance(sold, PackageLine)
    assert invoicing.quantity_refusal(sold.quantity) == (
        f"quantity: must be at most {invoicing.MAX_QUANTITY}, got {invoicing.MAX_QUANTITY + 1}"
    )
    assert invoicing.quantity_refusal(1) is None


def test_business_settings_need_a_real_time_zone_and_bounded_policies() -> None:
    example = json.loads((EXAMPLES / "business.settings_changed.json").read_text())
    assert decode("business.settings_changed", json.dumps(example).encode()).data.time_zone == (
        "Europe/Berlin"
    )
    for field, bad in [
        ("time_zone", "Mars/Olympus_Mons"),
        ("late_cancel_hours", 721),
        ("expiring_soon_days", -1),
        ("no_show", "keep"),
    ]:
        broken = copy.deepcopy(example)
        broken["data"][field] = bad
        with pytest.raises(MalformedMessage) as caught:
            decode("business.settings_changed", json.dumps(broken).encode())
        assert caught.value.code == "invalid"
        assert field in caught.value.detail
