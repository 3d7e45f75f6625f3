"""The records service's units of work: assignments, edits and expiry."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import and_, select

from contracts import topics
from contracts.base import Envelope
from contracts.inbound import PackageAssigned, RecordEditRequested
from contracts.outbound import AssignmentOrigin
from services.catalog import api as catalog
from services.kernel.unit_of_work import UnitOfWork
from services.records import api, domain, repository
from services.records.tables import package_record

log = logging.getLogger(__name__)
_KEEP = object()


async def handle_batch(uow: UnitOfWork, events: Sequence[Envelope[Any]]) -> None:
    """Assignments and edits, one after another."""
    for event in events:
        if event.event_type == topics.PACKAGE_ASSIGNED:
            await assign_package(uow, event)
        else:
            await edit_record(uow, event)


async def assign_package(uow: UnitOfWork, event: Envelope[PackageAssigned]) -> None:
    """Rule 5: a record given without invoicing is created unpaid."""
    data = event.data
    package = await catalog.find_package(uow.conn, event.business_id, data.package_id)
    if package is None:
        uow.reject(event, "package_not_found", f"package {data.package_id} is not in this business")
        return
    if not package.active:
        uow.reject(event, "package_disabled", f"package {data.package_id} is disabled")
        return
    await api.create_records(
        uow,
        event.business_id,
        data.client_id,
        package.terms,
        AssignmentOrigin(assignment_id=data.assignment_id),
        quantity=1,
        paid=False,
        cause=event,
    )


async def edit_record(uow: UnitOfWork, event: Envelope[RecordEditRequested]) -> None:
    """Rule 7: expiry and totals change, or the record is cancelled; never reactivated."""
    data = event.data
    found = await repository.load(
        uow.conn,
        event.business_id,
        and_(
            package_record.c.record_id == data.package_record_id,
            package_record.c.client_id == data.client_id,
        ),
    )
    if not found:
        uow.reject(
            event, "record_not_found", f"record {data.package_record_id} is not this client's"
        )
        return
    record = found[0]
    changes = data.changes
    result = domain.edit(
        record,
        expires=changes.expires_on if "expires_on" in changes.model_fields_set else _KEEP,
        totals={s.service_id: s.sessions_total for s in changes.sessions}
        if changes.sessions
        else None,
        status=changes.status,
        keep=_KEEP,
        today=uow.now.date(),
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
    topic = topics.RECORD_CANCELLED if cancelled else topics.RECORD_UPDATED
    await repository.publish_states(uow, topic, event.business_id, [record.record_id], event)


async def expire_due(uow: UnitOfWork, limit: int = 1000) -> int:
    """Rule 8: mark records past their last valid day expired, once each; returns how many."""
    rows = (
        await uow.conn.execute(
            select(package_record.c.record_id, package_record.c.business_id)
            .where(
                package_record.c.status.in_(domain.LIVE),
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
