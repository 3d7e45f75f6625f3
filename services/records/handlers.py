"""The records service's units of work: assignments, edits, what waits for them, and expiry."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, exists, or_, select, update
from sqlalchemy.dialects.postgresql import insert

from contracts import topics
from contracts.base import Envelope
from contracts.codec import decode_stored
from contracts.inbound import PackageAssigned, RecordEditRequested
from contracts.outbound import AssignmentOrigin
from services.catalog import api as catalog
from services.kernel.unit_of_work import Outcome, UnitOfWork
from services.records import api, domain, repository
from services.records.tables import package_record, waiting_event

log = logging.getLogger(__name__)
_KEEP = object()


class Records:
    """Handlers that know how long an assignment or edit may wait for what it names."""

    def __init__(self, early_event_wait_s: float) -> None:
        self.wait = timedelta(seconds=early_event_wait_s)

    async def handle_batch(self, uow: UnitOfWork, events: Sequence[Envelope[Any]]) -> None:
        """Assignments and edits, one after another."""
        for event in events:
            allowed = (
                domain.ASSIGNERS if event.event_type == topics.PACKAGE_ASSIGNED else domain.EDITORS
            )
            if refusal := domain.permitted(event.actor.role if event.actor else None, allowed):
                uow.reject(event, refusal.reason, refusal.detail)
            elif event.event_type == topics.PACKAGE_ASSIGNED:
                await self.assign(uow, event)
            else:
                await self.edit(uow, event)

    async def assign(self, uow: UnitOfWork, event: Envelope[PackageAssigned]) -> None:
        """An assignment of a package not seen yet waits for it."""
        package = await catalog.find_package(uow.conn, event.business_id, event.data.package_id)
        if package is None:
            await self._keep(uow, event, package_id=event.data.package_id)
        else:
            await assign_package(uow, event, package)

    async def edit(self, uow: UnitOfWork, event: Envelope[RecordEditRequested]) -> None:
        """An edit of a record not created yet waits for it; later edits queue behind it."""
        data = event.data
        record = None
        if not await _edits_waiting(uow, event.business_id, data.package_record_id):
            record = await api.find_record(uow.conn, event.business_id, data.package_record_id)
        if record is None:
            await self._keep(uow, event, record_id=data.package_record_id)
        else:
            await edit_record(uow, event, record)

    async def _keep(
        self,
        uow: UnitOfWork,
        event: Envelope[Any],
        *,
        package_id: str | None = None,
        record_id: str | None = None,
    ) -> None:
        await uow.conn.execute(
            insert(waiting_event)
            .values(
                business_id=event.business_id,
                event_id=str(event.event_id),
                topic=event.event_type,
                envelope=event.model_dump(mode="json"),
                package_id=package_id,
                record_id=record_id,
                wait_until=uow.now + self.wait,
            )
            .on_conflict_do_nothing()
        )
        named = f"package {package_id}" if package_id else f"record {record_id}"
        uow.defer(event, "not_seen_yet", f"kept until {named} arrives")


async def _edits_waiting(uow: UnitOfWork, business_id: str, record_id: str) -> bool:
    found = await uow.conn.scalar(
        select(waiting_event.c.seq)
        .where(waiting_event.c.business_id == business_id, waiting_event.c.record_id == record_id)
        .limit(1)
    )
    return found is not None


async def assign_package(
    uow: UnitOfWork, event: Envelope[PackageAssigned], package: catalog.Package
) -> None:
    """Rule 5: a record given without invoicing is created unpaid, on the assignment's day."""
    if not package.active:
        uow.reject(event, "package_disabled", f"package {event.data.package_id} is disabled")
        return
    await api.create_records(
        uow,
        event.business_id,
        event.data.client_id,
        package.terms,
        AssignmentOrigin(assignment_id=event.data.assignment_id),
        quantity=1,
        paid=False,
        cause=event,
    )


async def edit_record(
    uow: UnitOfWork, event: Envelope[RecordEditRequested], record: domain.Record
) -> None:
    """Rule 7: expiry and totals change, or the record is cancelled; never reactivated."""
    data = event.data
    if record.client_id != data.client_id:
        uow.reject(
            event, "record_not_found", f"record {data.package_record_id} is not this client's"
        )
        return
    changes = data.changes
    result = domain.edit(
        record,
        expires=changes.expires_on if "expires_on" in changes.model_fields_set else _KEEP,
        totals={s.service_id: s.sessions_total for s in changes.sessions}
        if changes.sessions
        else None,
        status=changes.status,
        keep=_KEEP,
        frozen_until=changes.frozen_until if "frozen_until" in changes.model_fields_set else _KEEP,
        # The request's own day: a freeze starts on it, however late it is handled.
        today=(await catalog.settings_of(uow.conn, [event.business_id]))[event.business_id].today(
            event.occurred_at
        ),
    )
    if isinstance(result, domain.EditRefused):
        uow.reject(event, result.reason, result.detail)
        return
    await repository.save(uow.conn, record, result)
    cancelled = result.status == "cancelled" and record.status != "cancelled"
    await repository.note(
        uow.conn,
        [
            {
                "record_id": record.record_id,
                "kind": "cancelled" if cancelled else "edited",
                "actor": repository.actor_json(event.actor),
                "detail": {
                    "request_id": data.request_id,
                    "changes": changes.model_dump(mode="json", exclude_unset=True),
                },
            }
        ],
    )
    if not cancelled:
        await api.mark_usable(uow.conn, [(record.business_id, record.client_id)])
    topic = topics.RECORD_CANCELLED if cancelled else topics.RECORD_UPDATED
    await repository.publish_states(uow, topic, event.business_id, [record.record_id], event)


async def settle_waiting(uow: UnitOfWork, limit: int = 200) -> int:
    """Apply, in arrival order, what waited and can go now: assignments whose package arrived,
    edits whose record was created; refuse, as in order, what waited too long. Returns how many.
    """
    record_known = exists().where(
        package_record.c.business_id == waiting_event.c.business_id,
        package_record.c.record_id == waiting_event.c.record_id,
    )
    due = or_(
        waiting_event.c.wait_until <= uow.now,
        record_known,
        catalog.package_known(waiting_event.c.business_id, waiting_event.c.package_id),
    )
    rows = (
        await uow.conn.execute(
            select(waiting_event).where(due).order_by(waiting_event.c.seq).limit(limit)
        )
    ).all()
    for row in rows:
        await uow.conn.execute(delete(waiting_event).where(waiting_event.c.seq == row.seq))
        event = decode_stored(row.topic, row.envelope)
        uow.outcomes[event.event_id] = Outcome("applied", "after_waiting", "")
        if row.package_id is not None:
            await _assign_after_waiting(uow, event)
        else:
            await _edit_after_waiting(uow, event)
    return len(rows)


async def _assign_after_waiting(uow: UnitOfWork, event: Envelope[PackageAssigned]) -> None:
    package = await catalog.find_package(uow.conn, event.business_id, event.data.package_id)
    if package is None:
        uow.reject(
            event,
            "package_not_found",
            f"package {event.data.package_id} is not in this business",
        )
    else:
        await assign_package(uow, event, package)


async def _edit_after_waiting(uow: UnitOfWork, event: Envelope[RecordEditRequested]) -> None:
    data = event.data
    record = await api.find_record(uow.conn, event.business_id, data.package_record_id)
    if record is None:
        uow.reject(
            event, "record_not_found", f"record {data.package_record_id} is not this client's"
        )
    else:
        await edit_record(uow, event, record)


async def expire_due(uow: UnitOfWork, limit: int = 1000) -> int:
    """Rule 8: mark records past their last valid day expired, once each; returns how many."""
    rows = (
        await uow.conn.execute(
            select(package_record.c.record_id, package_record.c.business_id)
            .where(
                # A frozen record's expiry moves when its freeze ends: it is not due before.
                package_record.c.status.in_(domain.SETTLED),
                package_record.c.expires_on < uow.now.date(),
            )
            .order_by(package_record.c.expires_on)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    by_business: dict[str, list[str]] = {}
    for r in rows:
        by_business.setdefault(r.business_id, []).append(r.record_id)
    for business_id, ids in by_business.items():
        for record in await repository.load(
            uow.conn, business_id, package_record.c.record_id.in_(ids)
        ):
            await repository.save(uow.conn, record, replace(record, status="expired"))
        await repository.note(uow.conn, [{"record_id": rid, "kind": "expired"} for rid in ids])
        await repository.publish_states(uow, topics.RECORD_EXPIRED, business_id, ids, None)
    return len(rows)


async def thaw_due(uow: UnitOfWork, limit: int = 500) -> int:
    """Freezes past their last day end, once each: the expiry moves by the days frozen, and
    bookings waiting for a package may now be matched. Returns how many."""
    today = catalog.business_today(package_record.c.business_id, uow.now)
    rows = (
        await uow.conn.execute(
            select(package_record.c.record_id, package_record.c.business_id)
            .where(package_record.c.status == "frozen", package_record.c.frozen_until < today)
            .order_by(package_record.c.frozen_until)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    by_business: dict[str, list[str]] = {}
    for r in rows:
        by_business.setdefault(r.business_id, []).append(r.record_id)
    settings = await catalog.settings_of(uow.conn, by_business)
    for business_id, ids in by_business.items():
        records = await repository.load(uow.conn, business_id, package_record.c.record_id.in_(ids))
        for record in records:
            thawed = domain.thaw(record, settings[business_id].today(uow.now))
            await repository.save(uow.conn, record, thawed)
        await repository.note(uow.conn, [{"record_id": rid, "kind": "thawed"} for rid in ids])
        await api.mark_usable(uow.conn, [(r.business_id, r.client_id) for r in records])
        await repository.publish_states(uow, topics.RECORD_UPDATED, business_id, ids, None)
    return len(rows)


async def notice_expiring(uow: UnitOfWork, limit: int = 500) -> int:
    """`package_record.expiring_soon` once per record and expiry date, the business's lead
    time before it, in its time zone, while sessions remain; returns how many were sent."""
    today = catalog.business_today(package_record.c.business_id, uow.now)
    lead = catalog.expiring_soon_days(package_record.c.business_id)
    rows = (
        await uow.conn.execute(
            select(package_record.c.record_id, package_record.c.business_id)
            .add_columns((package_record.c.expires_on - today).label("days_left"))
            .where(
                package_record.c.status.in_(domain.SETTLED),  # as the expiry index has it
                package_record.c.status == "active",  # a session of some service remains
                # The widest window any business may have, so the index on the expiry serves.
                package_record.c.expires_on.between(
                    uow.now.date() - timedelta(days=1), uow.now.date() + timedelta(days=91)
                ),
                package_record.c.expiry_noticed_on.is_distinct_from(package_record.c.expires_on),
                lead > 0,
                package_record.c.expires_on >= today,
                package_record.c.expires_on - lead <= today,
            )
            .order_by(package_record.c.expires_on)
            .limit(limit)
            .with_for_update(of=package_record, skip_locked=True)
        )
    ).all()
    if not rows:
        return 0
    await uow.conn.execute(
        update(package_record)
        .where(package_record.c.record_id.in_([r.record_id for r in rows]))
        .values(expiry_noticed_on=package_record.c.expires_on)
    )
    due = {r.record_id: r for r in rows}
    for row in await repository.state_rows(uow.conn, list(due)):
        notice = {"days_left": due[row.record_id].days_left}
        state = repository.state_json(row, row.status, repository.balances_of(row), notice)
        business_id = due[row.record_id].business_id
        uow.publish_json(topics.RECORD_EXPIRING_SOON, row.client_id, state, business_id=business_id)
    return len(rows)
