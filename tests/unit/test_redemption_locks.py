"""The deployed redemption service holds a batch's bookings alone while it handles them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from services.records import api as records
from services.redemption import handlers
from services.redemption.app import service


def _booking(business: str, booking_id: str, client_id: str = "cli-ana") -> Any:
    """What the keys read of a booking event's envelope."""
    return SimpleNamespace(
        business_id=business, data=SimpleNamespace(booking_id=booking_id, client_id=client_id)
    )


def test_the_deployed_service_locks_each_batch_s_bookings() -> None:
    assert service.locks is handlers.BOOKING_LOCKS
    # The space bookings were always locked in: a consumer of the release before, still
    # running during a rolling deploy, takes turns with this one.
    assert handlers.BOOKING_LOCKS.space == 7304


def test_a_booking_has_one_key_and_another_booking_another() -> None:
    keys = handlers.BOOKING_LOCKS.keys
    same = keys([_booking("biz-1", "bk-1"), _booking("biz-1", "bk-1")])
    other = keys([_booking("biz-1", "bk-2", "cli-ben"), _booking("biz-2", "bk-1")])
    assert len(set(same)) == 2  # the booking, and its client's records
    assert len(set(other)) == 4
    assert not set(other) & set(same)


def test_a_batch_holds_its_clients_as_a_sale_to_them_does() -> None:
    keys = handlers.BOOKING_LOCKS.keys([_booking("biz-1", "bk-1", "cli-ana")])
    assert records.client_lock_key("biz-1", "cli-ana") in keys
    assert handlers.BOOKING_LOCKS.space == records.CLIENT_LOCK_SPACE
