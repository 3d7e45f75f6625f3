"""Rules 9-12 through the real redemption handler on a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import topics
from contracts.base import Money
from contracts.outbound import RecordLowBalance, RecordState
from services.records import api as records
from services.records import repository as records_repository
from services.redemption import api as redemption_api
from services.redemption.tables import redemption, restoration
from tests.support.redemption import (
    APPOINTMENT,
    Clock,
    NoDeadLetters,
    Shop,
    kinds,
    outbox,
    package,
    raw,
    redemption_kernel_on,
)

pytest_plugins = ["tests.integration.redemption_db"]  # a PostgreSQL of its own

MASSAGE = "svc-massage-60"
FACIAL = "svc-facial"
SAUNA = "svc-sauna"
ANA = "cli-ana"
BEN = "cli-ben"
APPLIED = topics.PACKAGE_APPLIED
REMOVED = topics.PACKAGE_REMOVED
NOT_APPLIED = topics.PACKAGE_NOT_APPLIED
UPDATED = topics.RECORD_UPDATED


@pytest.fixture
def shop(redemption_engine: AsyncEngine) -> Shop:
    """A business of its own for each test."""
    return Shop(redemption_engine)


async def test_the_chosen_record_is_redeemed_even_when_another_expires_first(shop: Shop) -> None:
    soon = await shop.sell(ANA, package({MASSAGE: 10}, until=date(2026, 12, 1)))
    chosen = await shop.sell(ANA, package({MASSAGE: 10}))

    out = await shop.handle(shop.created("bk-1", ANA, MASSAGE, record=chosen))

    assert kinds(out) == [APPLIED, UPDATED]
    applied = out[0].data
    assert applied == {
        "booking_id": "bk-1",
        "client_id": ANA,
        "package_record_id": chosen,
        "service_id": MASSAGE,
        "price_before": {"amount": "60.00", "currency": "EUR"},
        "price_after": {"amount": "0.00", "currency": "EUR"},
        "sessions_remaining": 9,
    }
    assert out[1].data["package_record_id"] == chosen
    assert out[1].data["services"][0]["sessions_used"] == 1
    assert (await shop.used(chosen, MASSAGE), await shop.used(soon, MASSAGE)) == (1, 0)
    assert await shop.held("bk-1") == chosen
    assert (await shop.history(chosen))[-1] == ("redeemed", "bk-1")


async def test_without_a_choice_the_record_expiring_first_then_the_oldest_is_used(
    shop: Shop,
) -> None:
    forever = await shop.sell(ANA, package({MASSAGE: 1}), on=datetime(2026, 10, 1, tzinfo=UTC))
    younger = await shop.sell(
        ANA, package({MASSAGE: 1}, until=date(2027, 1, 31)), on=datetime(2026, 11, 10, tzinfo=UTC)
    )
    older = await shop.sell(
        ANA, package({MASSAGE: 1}, until=date(2027, 1, 31)), on=datetime(2026, 11, 1, tzinfo=UTC)
    )

    out = await shop.handle(*(shop.created(f"bk-{n}", ANA, MASSAGE) for n in range(1, 5)))

    picked = [e["package_record_id"] for e in shop.of(APPLIED)]
    assert picked == [older, younger, forever]
    assert shop.of(NOT_APPLIED) == [
        {
            "booking_id": "bk-4",
            "client_id": ANA,
            "reason": "no_eligible_record",
            "package_record_id": None,
        }
    ]
    assert kinds(out).count(UPDATED) == 3


async def test_a_widget_booking_uses_the_eligible_record(shop: Shop) -> None:
    record = await shop.sell(ANA, package({MASSAGE: 5}))

    await shop.handle(shop.created("bk-web", ANA, MASSAGE, source="widget", status="pending"))

    assert await shop.held("bk-web") == record
    assert await shop.used(record, MASSAGE) == 1


async def test_a_pending_booking_still_redeems(shop: Shop) -> None:
    record = await shop.sell(ANA, package({MASSAGE: 5}))

    await shop.handle(shop.created("bk-1", ANA, MASSAGE, status="pending", record=record))

    assert shop.of(APPLIED, "bk-1")[0]["sessions_remaining"] == 4


async def test_no_eligible_record_is_not_applied(shop: Shop) -> None:
    await shop.sell(ANA, package({FACIAL: 5}))

    out = await shop.handle(shop.created("bk-1", ANA, MASSAGE))

    assert [(p.topic, p.data["reason"]) for p in out] == [(NOT_APPLIED, "no_eligible_record")]
    assert await shop.held("bk-1") is None


async def test_a_booking_that_asks_for_no_package_gets_no_not_applied(shop: Shop) -> None:
    record = await shop.sell(ANA, package({MASSAGE: 5}))

    out = await shop.handle(shop.created("bk-1", ANA, MASSAGE, use_package=False))

    assert out == []
    assert await shop.used(record, MASSAGE) == 0


async def test_a_chosen_record_must_be_the_clients_live_one_with_a_session_left(shop: Shop) -> None:
    bens = await shop.sell(BEN, package({MASSAGE: 5}))
    used_up = await shop.sell(ANA, package({MASSAGE: 1}))
    await shop.handle(shop.created("bk-0", ANA, MASSAGE, record=used_up))

    await shop.handle(
        shop.created("bk-1", ANA, MASSAGE, record=bens),
        shop.created("bk-2", ANA, MASSAGE, record=used_up),
        shop.created("bk-3", ANA, MASSAGE, record="rec-nowhere"),
    )

    assert [
        (e["booking_id"], e["reason"], e["package_record_id"]) for e in shop.of(NOT_APPLIED)
    ] == [
        ("bk-1", "record_not_found", bens),
        ("bk-2", "record_not_eligible", used_up),
        ("bk-3", "record_not_found", "rec-nowhere"),
    ]
    assert await shop.used(bens, MASSAGE) == 0


@pytest.mark.parametrize(
    ("discount", "price", "after"),
    [
        ({"type": "percent", "value": "20"}, "60.00", "48.00"),
        ({"type": "percent", "value": "33.3"}, "10.00", "6.67"),
        ({"type": "amount", "value": {"amount": "15.00", "currency": "EUR"}}, "60.00", "45.00"),
        ({"type": "amount", "value": {"amount": "80.00", "currency": "EUR"}}, "60.00", "0.00"),
    ],
    ids=["percent", "percent-rounded", "amount", "amount-floored-at-zero"],
)
async def test_the_package_discount_applies_to_the_booked_price(
    shop: Shop, discount: dict[str, object], price: str, after: str
) -> None:
    await shop.sell(ANA, package({MASSAGE: 5}, discount=discount))

    await shop.handle(shop.created("bk-1", ANA, MASSAGE, price=price))

    applied = shop.of(APPLIED, "bk-1")[0]
    assert applied["price_before"] == {"amount": price, "currency": "EUR"}
    assert applied["price_after"] == {"amount": after, "currency": "EUR"}


async def test_a_chosen_record_whose_discount_is_in_another_currency_is_rejected(
    shop: Shop,
) -> None:
    record = await shop.sell(
        ANA,
        package(
            {MASSAGE: 5},
            discount={"type": "amount", "value": {"amount": "15.00", "currency": "EUR"}},
        ),
    )
    event = shop.created("bk-1", ANA, MASSAGE, currency="USD", record=record)

    out = await shop.handle(event)

    assert [(p.topic, p.data["reason"]) for p in out] == [
        (topics.MESSAGE_REJECTED, "currency_mismatch")
    ]
    assert out[0].data["rejected_event_id"] == str(event.event_id)
    assert await shop.used(record, MASSAGE) == 0
    assert await shop.held("bk-1") is None


async def test_auto_pick_passes_over_a_discount_in_another_currency(shop: Shop) -> None:
    euros_off = {"type": "amount", "value": {"amount": "15.00", "currency": "EUR"}}
    in_euros = await shop.sell(
        ANA, package({MASSAGE: 5}, discount=euros_off, until=date(2027, 1, 1))
    )
    any_currency = await shop.sell(ANA, package({MASSAGE: 5}))

    await shop.handle(shop.created("bk-1", ANA, MASSAGE, currency="USD"))

    assert [e["package_record_id"] for e in shop.of(APPLIED)] == [any_currency]
    assert await shop.used(in_euros, MASSAGE) == 0


async def test_a_no_show_gives_the_session_back_once(shop: Shop) -> None:
    record = await shop.sell(ANA, package({MASSAGE: 5}))
    await shop.handle(shop.created("bk-1", ANA, MASSAGE))
    no_show = shop.status("bk-1", ANA, "no_show", version=2)

    out = await shop.handle(no_show)
    again = await shop.handle(no_show)  # a resend the inbox did not catch: stale by version
    later = await shop.handle(shop.status("bk-1", ANA, "no_show", version=3))

    assert kinds(out) == [REMOVED, UPDATED]
    assert out[0].data == {
        "booking_id": "bk-1",
        "client_id": ANA,
        "package_record_id": record,
        "reason": "booking_no_show",
        "session_restored": True,
        "sessions_remaining": 5,
    }
    assert again == []
    assert later == []
    assert shop.outcomes[no_show.event_id] == "stale_version"
    assert await shop.used(record, MASSAGE) == 0
    assert [(r.reason, r.session_restored) for r in await shop.restorations("bk-1")] == [
        ("booking_no_show", True)
    ]
    assert [k for k, b in await shop.history(record) if b == "bk-1"] == ["redeemed", "restored"]


async def test_a_no_show_delivered_three_times_restores_once(shop: Shop) -> None:
    record = await shop.sell(ANA, package({MASSAGE: 5}))
    parked = NoDeadLetters()
    kernel = redemption_kernel_on(shop.engine, Clock(), parked)
    no_show = raw(shop.status("bk-1", ANA, "no_show", version=2))

    await kernel.handle([raw(shop.created("bk-1", ANA, MASSAGE))])
    await kernel.handle([no_show, no_show])  # twice in one fetch
    await kernel.handle([no_show])  # and once more after a rebalance

    published = [p["event_type"] for p in await outbox(shop.engine, shop.business_id)]
    assert published == [APPLIED, UPDATED, REMOVED, UPDATED]
    assert parked.parked == []
    assert await shop.used(record, MASSAGE) == 0
    assert len(await shop.restorations("bk-1")) == 1


async def test_a_cancellation_after_a_no_show_does_not_restore_twice(shop: Shop) -> None:
    record = await shop.sell(ANA, package({MASSAGE: 5}))
    await shop.handle(shop.created("bk-1", ANA, MASSAGE))
    await shop.handle(shop.status("bk-1", ANA, "no_show", version=2))

    out = await shop.handle(shop.status("bk-1", ANA, "cancelled", version=3))

    assert out == []
    assert await shop.used(record, MASSAGE) == 0
    assert len(await shop.restorations("bk-1")) == 1


async def test_a_booking_back_out_of_cancelled_does_not_redeem_again(shop: Shop) -> None:
    record = await shop.sell(ANA, package({MASSAGE: 5}))
    await shop.handle(
        shop.created("bk-1", ANA, MASSAGE), shop.status("bk-1", ANA, "cancelled", version=2)
    )

    out = await shop.handle(
        shop.status("bk-1", ANA, "confirmed", version=3),
        shop.updated("bk-1", ANA, FACIAL, version=4),
    )

    assert out == []
    assert await shop.used(record, MASSAGE) == 0
    assert (await shop.booking_row("bk-1")).released is True


async def test_other_status_changes_change_nothing(shop: Shop) -> None:
    record = await shop.sell(ANA, package({MASSAGE: 5}))
    await shop.handle(shop.created("bk-1", ANA, MASSAGE, status="pending"))

    out = await shop.handle(
        shop.status("bk-1", ANA, "confirmed", version=2),
        shop.status("bk-1", ANA, "completed", version=3),
    )

    assert out == []
    assert await shop.held("bk-1") == record


async def test_an_edit_after_the_record_expired_removes_it_without_a_session_back(
    shop: Shop,
) -> None:
    record = await shop.sell(ANA, package({MASSAGE: 5}, until=date(2026, 11, 25)))
    await shop.handle(
        shop.created("bk-1", ANA, MASSAGE, starts_at=datetime(2026, 11, 24, 10, tzinfo=UTC))
    )

    # Moved past the record's last day, once that day has gone.
    moved = shop.updated("bk-1", ANA, MASSAGE, version=2)
    out = await shop.handle(moved, now=datetime(2026, 11, 30, tzinfo=UTC))

    assert [(p.topic, p.data.get("reason"), p.data.get("session_restored")) for p in out] == [
        (REMOVED, "record_expired", False),
        (NOT_APPLIED, "no_eligible_record", None),
    ]
    assert await shop.used(record, MASSAGE) == 1
    assert await shop.held("bk-1") is None
    assert (await shop.history(record))[-1] == ("released", "bk-1")


async def test_an_edit_keeps_a_record_that_still_serves_the_appointment_s_day(shop: Shop) -> None:
    record = await shop.sell(ANA, package({MASSAGE: 5}, until=date(2026, 11, 25)))
    before_expiry = datetime(2026, 11, 24, 10, tzinfo=UTC)
    await shop.handle(shop.created("bk-1", ANA, MASSAGE, starts_at=before_expiry))

    # Edited after the record's last day, the appointment still on a day it was valid.
    note = shop.updated(
        "bk-1", ANA, MASSAGE, version=2, starts_at=before_expiry, status="completed"
    )
    out = await shop.handle(note, now=datetime(2026, 11, 30, tzinfo=UTC))

    assert [p.topic for p in out] == []
    assert await shop.used(record, MASSAGE) == 1
    assert (await shop.held("bk-1")) is not None


async def test_an_edit_after_the_record_was_cancelled_removes_it_without_a_session_back(
    shop: Shop,
) -> None:
    record = await shop.sell(ANA, package({MASSAGE: 5}))
    await shop.handle(shop.created("bk-1", ANA, MASSAGE))
    await shop.cancel_record(record)

    out = await shop.handle(shop.updated("bk-1", ANA, MASSAGE, version=2, price="70.00"))
    cancel = await shop.handle(shop.status("bk-1", ANA, "cancelled", version=3))

    assert [(p.data["reason"], p.data["session_restored"]) for p in out] == [
        ("record_cancelled", False)
    ]
    assert cancel == []
    assert await shop.used(record, MASSAGE) == 1


async def test_a_new_service_the_record_does_not_cover_gives_the_session_back_and_rematches(
    shop: Shop,
) -> None:
    massages = await shop.sell(ANA, package({MASSAGE: 5}))
    facials = await shop.sell(ANA, package({FACIAL: 5}, package_id="pkg-facial"))
    await shop.handle(shop.created("bk-1", ANA, MASSAGE))

    out = await shop.handle(shop.updated("bk-1", ANA, FACIAL, version=2))

    assert kinds(out) == [REMOVED, APPLIED, UPDATED, UPDATED]
    assert (out[0].data["reason"], out[0].data["session_restored"]) == ("service_changed", True)
    assert out[1].data["package_record_id"] == facials
    assert (await shop.used(massages, MASSAGE), await shop.used(facials, FACIAL)) == (0, 1)


async def test_a_new_service_the_record_covers_moves_the_session_to_it(shop: Shop) -> None:
    spa = await shop.sell(ANA, package({MASSAGE: 5, SAUNA: 5}))
    await shop.handle(shop.created("bk-1", ANA, MASSAGE))

    out = await shop.handle(shop.updated("bk-1", ANA, SAUNA, version=2))

    assert [(p.topic, p.data.get("reason")) for p in out][:2] == [
        (REMOVED, "service_changed"),
        (APPLIED, None),
    ]
    assert await shop.held("bk-1") == spa
    assert (await shop.used(spa, MASSAGE), await shop.used(spa, SAUNA)) == (0, 1)


async def test_turning_the_package_off_gives_the_session_back(shop: Shop) -> None:
    record = await shop.sell(ANA, package({MASSAGE: 5}))
    await shop.handle(shop.created("bk-1", ANA, MASSAGE))

    out = await shop.handle(shop.updated("bk-1", ANA, MASSAGE, version=2, use_package=False))

    assert [(p.topic, p.data.get("reason")) for p in out] == [
        (REMOVED, "package_deselected"),
        (UPDATED, None),
    ]
    assert await shop.used(record, MASSAGE) == 0


async def test_choosing_another_record_gives_the_session_back_and_uses_the_new_one(
    shop: Shop,
) -> None:
    first = await shop.sell(ANA, package({MASSAGE: 5}, until=date(2026, 12, 31)))
    second = await shop.sell(ANA, package({MASSAGE: 5}))
    await shop.handle(shop.created("bk-1", ANA, MASSAGE))

    out = await shop.handle(shop.updated("bk-1", ANA, MASSAGE, version=2, record=second))

    assert [(p.topic, p.data["package_record_id"]) for p in out[:2]] == [
        (REMOVED, first),
        (APPLIED, second),
    ]
    assert (await shop.used(first, MASSAGE), await shop.used(second, MASSAGE)) == (0, 1)


async def test_an_unchanged_booking_changes_nothing(shop: Shop) -> None:
    await shop.sell(ANA, package({FACIAL: 5}))
    await shop.handle(shop.created("bk-1", ANA, MASSAGE))
    record = await shop.sell(ANA, package({MASSAGE: 5}))

    out = await shop.handle(shop.updated("bk-1", ANA, MASSAGE, version=2, price="65.00"))

    assert out == []
    assert await shop.used(record, MASSAGE) == 0


async def test_a_stale_version_is_ignored(shop: Shop) -> None:
    record = await shop.sell(ANA, package({MASSAGE: 5}))
    await shop.handle(shop.updated("bk-1", ANA, MASSAGE, version=2, use_package=False))
    created = shop.created("bk-1", ANA, MASSAGE, version=1)

    out = await shop.handle(created)

    assert out == []
    assert shop.outcomes[created.event_id] == "stale_version"
    assert await shop.used(record, MASSAGE) == 0
    assert (await shop.booking_row("bk-1")).snapshot_version == 2


async def test_a_cancellation_before_its_booking_ends_as_if_in_order(shop: Shop) -> None:
    record = await shop.sell(ANA, package({MASSAGE: 5}))

    early = await shop.handle(shop.status("bk-1", ANA, "cancelled", version=2))
    out = await shop.handle(shop.created("bk-1", ANA, MASSAGE, version=1))
    await shop.handle(shop.created("bk-2", ANA, MASSAGE, version=1))
    await shop.handle(shop.status("bk-2", ANA, "cancelled", version=2))

    assert early == []
    assert out == []
    assert await shop.used(record, MASSAGE) == 0
    for booking_id in ("bk-1", "bk-2"):
        row = await shop.booking_row(booking_id)
        assert (row.status, row.released, await shop.held(booking_id)) == ("cancelled", True, None)


async def test_a_confirmation_before_its_booking_still_redeems(shop: Shop) -> None:
    record = await shop.sell(ANA, package({MASSAGE: 5}))

    await shop.handle(
        shop.status("bk-1", ANA, "confirmed", version=2),
        shop.created("bk-1", ANA, MASSAGE, version=1, status="pending"),
    )

    assert await shop.held("bk-1") == record
    assert (await shop.booking_row("bk-1")).status == "confirmed"


async def test_another_business_record_is_never_used(shop: Shop) -> None:
    other = Shop(shop.engine)
    theirs = await other.sell(ANA, package({MASSAGE: 5}))

    await shop.handle(
        shop.created("bk-1", ANA, MASSAGE, record=theirs), shop.created("bk-2", ANA, MASSAGE)
    )

    assert [e["reason"] for e in shop.of(NOT_APPLIED)] == ["record_not_found", "no_eligible_record"]
    assert await other.used(theirs, MASSAGE) == 0


async def test_the_last_session_exhausts_the_record_and_a_restore_reactivates_it(
    shop: Shop,
) -> None:
    record = await shop.sell(ANA, package({MASSAGE: 1}))

    used = await shop.handle(shop.created("bk-1", ANA, MASSAGE))
    exhausted = await shop.record_status(record)
    back = await shop.handle(shop.status("bk-1", ANA, "cancelled", version=2))

    assert exhausted == "exhausted"
    assert [p.data["status"] for p in used + back if p.topic == UPDATED] == ["exhausted", "active"]
    assert await shop.record_status(record) == "active"


async def test_an_unlimited_service_redeems_without_a_balance(shop: Shop) -> None:
    record = await shop.sell(ANA, package({MASSAGE: None}))

    out = await shop.handle(shop.created("bk-1", ANA, MASSAGE), shop.created("bk-2", ANA, MASSAGE))

    assert [e["sessions_remaining"] for e in shop.of(APPLIED)] == [None, None]
    updates = [p.data["services"][0] for p in out if p.topic == UPDATED]
    assert [u["sessions_remaining"] for u in updates] == [None]
    assert await shop.used(record, MASSAGE) == 2
    assert await shop.record_status(record) == "active"


async def test_a_batch_redeems_and_restores_the_same_booking_and_publishes_the_record_once(
    shop: Shop,
) -> None:
    record = await shop.sell(ANA, package({MASSAGE: 5}))

    out = await shop.handle(
        shop.created("bk-1", ANA, MASSAGE),
        shop.status("bk-1", ANA, "no_show", version=2),
        shop.created("bk-2", ANA, MASSAGE),
        shop.created("bk-3", BEN, MASSAGE),
    )

    assert kinds(out) == [APPLIED, REMOVED, APPLIED, NOT_APPLIED, UPDATED]
    assert out[-1].data["services"][0]["sessions_used"] == 1
    assert await shop.used(record, MASSAGE) == 1
    assert [(r.reason, r.session_restored) for r in await shop.restorations("bk-1")] == [
        ("booking_no_show", True)
    ]


async def test_the_database_holds_one_redemption_per_booking_and_one_restoration_each(
    shop: Shop,
) -> None:
    record = await shop.sell(ANA, package({MASSAGE: 5}))
    await shop.handle(shop.created("bk-1", ANA, MASSAGE))
    row = {
        "business_id": shop.business_id,
        "booking_id": "bk-1",
        "client_id": ANA,
        "record_id": record,
        "service_id": MASSAGE,
        "price_before": Decimal(60),
        "price_after": Decimal(0),
        "currency": "EUR",
    }

    with pytest.raises(IntegrityError, match="uq_redemption_held"):
        async with shop.engine.begin() as conn:
            await conn.execute(redemption.insert().values(row))
    with pytest.raises(IntegrityError, match="restoration"):
        async with shop.engine.begin() as conn:
            await conn.execute(
                restoration.insert().values(
                    redemption_id=-1, reason="booking_cancelled", session_restored=True
                )
            )


async def test_the_read_api_shows_the_booking_package_and_the_record_history(shop: Shop) -> None:
    quarter_off = {"type": "percent", "value": "25"}
    record = await shop.sell(ANA, package({MASSAGE: 5}, discount=quarter_off))
    await shop.handle(
        shop.created("bk-1", ANA, MASSAGE),
        shop.created("bk-2", ANA, MASSAGE),
        shop.created("bk-3", ANA, MASSAGE, use_package=False),
    )
    await shop.handle(shop.status("bk-2", ANA, "cancelled", version=2))

    async with shop.engine.connect() as conn:
        held = await redemption_api.booking_package(conn, shop.business_id, "bk-1")
        none = await redemption_api.booking_package(conn, shop.business_id, "bk-3")
        unknown = await redemption_api.booking_package(conn, shop.business_id, "bk-404")
        elsewhere = await redemption_api.booking_package(conn, "biz-other", "bk-1")
        history = await records.record_with_history(conn, shop.business_id, record)

    assert held is not None
    assert none is not None
    assert held.model_dump(mode="json") == {
        "booking_id": "bk-1",
        "client_id": ANA,
        "package_record_id": record,
        "service_id": MASSAGE,
        "price_before": {"amount": "60.00", "currency": "EUR"},
        "price_after": {"amount": "45.00", "currency": "EUR"},
    }
    assert (none.package_record_id, none.price_before, none.price_after) == (None, None, None)
    assert unknown is None
    assert elsewhere is None
    assert history is not None
    assert [(h.kind, h.booking_id) for h in history.history] == [
        ("created", None),
        ("redeemed", "bk-1"),
        ("redeemed", "bk-2"),
        ("restored", "bk-2"),
    ]


async def test_a_published_record_state_is_the_contract_model_of_the_stored_record(
    shop: Shop,
) -> None:
    """`record.updated` is serialised straight from the rows: it must be what the model says."""
    record = await shop.sell(ANA, package({MASSAGE: 2, FACIAL: None}, until=date(2027, 3, 31)))

    out = await shop.handle(shop.created("bk-1", ANA, MASSAGE), shop.created("bk-2", ANA, MASSAGE))

    [published] = [p.data for p in out if p.topic == UPDATED]
    # Exactly the model's own JSON form: no field missing, extra, renamed or differently written.
    assert published == RecordState.model_validate(published).model_dump(mode="json")
    assert published["package_record_id"] == record
    assert published["expires_on"] == "2027-03-31"
    assert published["discount"] == {"type": "percent", "value": "100"}
    assert published["origin"]["type"] == "assignment"
    balances = [
        (s["service_id"], s["sessions_total"], s["sessions_used"], s["sessions_remaining"])
        for s in published["services"]
    ]
    assert balances == [(FACIAL, None, 0, None), (MASSAGE, 2, 2, 0)]
    assert published["status"] == "active"  # the unlimited facial keeps it alive
    # Built from the rows locked at the start of the batch: it is what reads back afterwards.
    async with shop.engine.connect() as conn:
        stored = await records_repository.states(conn, [record])
    assert published == stored[record].model_dump(mode="json")


async def test_a_held_booking_whose_price_changes_is_repriced_with_the_same_record(
    shop: Shop,
) -> None:
    record = await shop.sell(
        ANA, package({MASSAGE: 5}, discount={"type": "percent", "value": "50"})
    )
    await shop.handle(shop.created("bk-1", ANA, MASSAGE, price="60.00"))

    out = await shop.handle(shop.updated("bk-1", ANA, MASSAGE, version=2, price="80.00"))

    assert [
        (p.topic, p.data["price_before"]["amount"], p.data["price_after"]["amount"]) for p in out
    ] == [(topics.PACKAGE_REPRICED, "80.00", "40.00")]
    assert await shop.prices("bk-1") == (Decimal("80.00"), Decimal("40.00"))
    assert await shop.used(record, MASSAGE) == 1
    assert await shop.held("bk-1") == record


async def test_a_booking_created_and_repriced_in_one_batch_is_stored_at_its_new_price(
    shop: Shop,
) -> None:
    await shop.sell(ANA, package({MASSAGE: 5}, discount={"type": "percent", "value": "50"}))

    await shop.handle(
        shop.created("bk-1", ANA, MASSAGE, price="60.00"),
        shop.updated("bk-1", ANA, MASSAGE, version=2, price="90.00"),
    )

    assert await shop.prices("bk-1") == (Decimal("90.00"), Decimal("45.00"))


async def test_a_booking_waiting_for_a_package_redeems_when_its_record_is_sold(shop: Shop) -> None:
    first = await shop.handle(shop.created("bk-1", ANA, MASSAGE))
    assert [p.data["reason"] for p in first] == ["no_eligible_record"]

    record = await shop.sell(ANA, package({MASSAGE: 5}))
    out = await shop.rematch()

    assert [
        (p.topic, p.data.get("booking_id")) for p in out if p.topic != topics.RECORD_UPDATED
    ] == [(APPLIED, "bk-1")]
    assert await shop.held("bk-1") == record
    assert await shop.used(record, MASSAGE) == 1
    assert not (await shop.booking_row("bk-1")).awaits_package
    assert await shop.rematch() == []  # the record's news was taken once


async def test_a_waiting_booking_that_ended_or_whose_day_passed_is_not_matched_again(
    shop: Shop,
) -> None:
    await shop.handle(
        shop.created("bk-cancelled", ANA, MASSAGE),
        shop.status("bk-cancelled", ANA, "cancelled", version=2),
        shop.created("bk-past", ANA, MASSAGE, starts_at=datetime(2026, 11, 19, 10, tzinfo=UTC)),
    )
    record = await shop.sell(ANA, package({MASSAGE: 5}))

    assert await shop.rematch(now=datetime(2026, 11, 20, 9, tzinfo=UTC)) == []
    assert await shop.used(record, MASSAGE) == 0
    assert not (await shop.booking_row("bk-cancelled")).awaits_package


async def test_a_redemption_leaving_one_session_sends_a_low_balance_notice_each_time(
    shop: Shop,
) -> None:
    record = await shop.sell(ANA, package({MASSAGE: 3, FACIAL: None}))

    first = await shop.handle(shop.created("bk-1", ANA, MASSAGE), shop.created("bk-u", ANA, FACIAL))
    second = await shop.handle(shop.created("bk-2", ANA, MASSAGE))
    back = await shop.handle(shop.status("bk-2", ANA, "cancelled", version=2))
    again = await shop.handle(shop.created("bk-3", ANA, MASSAGE))

    def notices(out: list[Any]) -> list[tuple[str, str, int]]:
        return [
            (
                p.data["package_record_id"],
                p.data["service_id"],
                p.data["services"][1]["sessions_remaining"],
            )
            for p in out
            if p.topic == topics.RECORD_LOW_BALANCE
        ]

    assert notices(first) == []
    assert notices(second) == [(record, MASSAGE, 1)]
    assert notices(back) == []
    assert notices(again) == [(record, MASSAGE, 1)]
    [notice] = [p for p in again if p.topic == topics.RECORD_LOW_BALANCE]
    RecordLowBalance.model_validate(notice.data)  # the record's body, plus the service


async def test_the_first_package_option_is_the_record_a_booking_then_redeems(shop: Shop) -> None:
    dollars_off = {"type": "amount", "value": {"amount": "5.00", "currency": "USD"}}
    await shop.sell(ANA, package({MASSAGE: 5}, discount=dollars_off, until=date(2026, 12, 1)))
    later = await shop.sell(
        ANA,
        package({MASSAGE: 5}, discount={"type": "percent", "value": "20"}, until=date(2027, 6, 1)),
    )
    sooner = await shop.sell(ANA, package({MASSAGE: 1}, until=date(2027, 1, 1)))
    await shop.sell(ANA, package({FACIAL: 5}))
    price = Money(amount=Decimal("60.00"), currency="EUR")

    async with shop.engine.connect() as conn:
        options = await redemption_api.package_options(
            conn, shop.business_id, ANA, service_id=MASSAGE, starts_at=APPOINTMENT, price=price
        )

    assert [
        (o.package_record_id, o.sessions_remaining, str(o.price_after.amount)) for o in options
    ] == [
        (sooner, 1, "0.00"),
        (later, 5, "48.00"),
    ]
    await shop.handle(shop.created("bk-1", ANA, MASSAGE))
    assert await shop.held("bk-1") == options[0].package_record_id
