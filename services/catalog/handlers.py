"""The catalog's units of work: plans and packages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert

from contracts import topics
from contracts.base import Envelope
from contracts.codec import decode_stored
from contracts.inbound import PackageDefined, PackageStatusChanged, PlanChanged, SettingsChanged
from services.catalog import domain
from services.catalog.tables import business_plan, business_settings, package, waiting_event
from services.kernel.unit_of_work import Outcome, UnitOfWork
from services.records import api as records


class Catalog:
    """Handlers that know how long a package event may wait for its business's plan."""

    def __init__(self, plan_wait_s: float) -> None:
        self.plan_wait = timedelta(seconds=plan_wait_s)

    async def handle_batch(self, uow: UnitOfWork, events: Sequence[Envelope[Any]]) -> None:
        """In fetch order: each package event is judged by the plan of its own time."""
        for event in events:
            if event.event_type == topics.BUSINESS_PLAN_CHANGED:
                await change_plan(uow, event)
            elif event.event_type == topics.BUSINESS_SETTINGS_CHANGED:
                await change_settings(uow, event)
            elif not await self._waits_for_plan(uow, event):
                await apply_package_event(uow, event)

    async def _waits_for_plan(self, uow: UnitOfWork, event: Envelope[Any]) -> bool:
        """A business never seen may be one whose plan is still on its way: keep its event."""
        if await _plans(uow, event.business_id):
            return False
        await uow.conn.execute(
            insert(waiting_event)
            .values(
                business_id=event.business_id,
                event_id=str(event.event_id),
                topic=event.event_type,
                envelope=event.model_dump(mode="json"),
                occurred_at=event.occurred_at,
                wait_until=uow.now + self.plan_wait,
            )
            .on_conflict_do_nothing()
        )
        uow.defer(event, "plan_not_seen_yet", "kept until the business's plan arrives")
        return True


async def apply_package_event(uow: UnitOfWork, event: Envelope[Any]) -> None:
    """Route a package event to its unit of work."""
    if event.event_type in (topics.PACKAGE_CREATED, topics.PACKAGE_UPDATED):
        await define_package(uow, event)
    else:
        await change_package_status(uow, event)


async def change_plan(uow: UnitOfWork, event: Envelope[PlanChanged]) -> None:
    """Keep the plan change with its time; apply what waited for the business's first plan."""
    stmt = insert(business_plan).values(
        business_id=event.business_id, plan=event.data.plan, changed_at=event.occurred_at
    )
    await uow.conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[business_plan.c.business_id, business_plan.c.changed_at],
            set_={"plan": stmt.excluded.plan},
        )
    )
    await release_waiting(uow, waiting_event.c.business_id == event.business_id)


async def change_settings(uow: UnitOfWork, event: Envelope[SettingsChanged]) -> None:
    """The business's time zone and policies, from the owner (or the platform); versioned:
    a stale one changes nothing, a gap applies. They apply to what is handled after them."""
    if refusal := domain.may_set(event.actor):
        uow.reject(event, refusal.reason, refusal.detail)
        return
    data = event.data
    stmt = insert(business_settings).values(
        business_id=event.business_id,
        **data.model_dump(include={"time_zone", "no_show", "late_cancel_hours"}),
        expiring_soon_days=data.expiring_soon_days,
        version=data.version,
    )
    applied = await uow.conn.scalar(
        stmt.on_conflict_do_update(
            index_elements=[business_settings.c.business_id],
            set_={
                "time_zone": stmt.excluded.time_zone,
                "no_show": stmt.excluded.no_show,
                "late_cancel_hours": stmt.excluded.late_cancel_hours,
                "expiring_soon_days": stmt.excluded.expiring_soon_days,
                "version": stmt.excluded.version,
                "updated_at": func.now(),
            },
            where=business_settings.c.version < stmt.excluded.version,
        ).returning(business_settings.c.version)
    )
    if applied is None:
        uow.ignore(event, "stale_version", f"version {data.version} is not newer")


async def release_waiting(uow: UnitOfWork, where: Any) -> int:
    """Apply the waiting package events matching `where`, oldest first; returns how many."""
    rows = (
        await uow.conn.execute(
            delete(waiting_event)
            .where(where)
            .returning(waiting_event.c.topic, waiting_event.c.envelope)
        )
    ).all()
    for row in sorted(rows, key=lambda r: r.envelope["occurred_at"]):
        event = decode_stored(row.topic, row.envelope)
        uow.outcomes[event.event_id] = Outcome("applied", "after_waiting", "")
        await apply_package_event(uow, event)
    return len(rows)


async def expire_waiting(uow: UnitOfWork) -> int:
    """Events that waited too long for a plan are applied now, and so refused as not entitled."""
    return await release_waiting(uow, waiting_event.c.wait_until <= uow.now)


async def _plans(uow: UnitOfWork, business_id: str) -> list[tuple[datetime, str]]:
    """The business's plan changes, oldest first (a handful at most)."""
    rows = await uow.conn.execute(
        select(business_plan.c.changed_at, business_plan.c.plan)
        .where(business_plan.c.business_id == business_id)
        .order_by(business_plan.c.changed_at)
    )
    return [(r.changed_at, r.plan) for r in rows]


async def _refused(uow: UnitOfWork, event: Envelope[Any]) -> bool:
    plan = domain.plan_at(await _plans(uow, event.business_id), event.occurred_at)
    refusal = domain.may_manage(plan, event.actor)
    if refusal:
        uow.reject(event, refusal.reason, refusal.detail)
    return refusal is not None


async def _current(uow: UnitOfWork, event: Envelope[Any]) -> Any:
    return (
        await uow.conn.execute(
            select(package.c.terms, package.c.terms_version, package.c.status_version)
            .where(
                package.c.business_id == event.business_id,
                package.c.package_id == event.data.package_id,
            )
            .with_for_update()
        )
    ).first()


async def define_package(uow: UnitOfWork, event: Envelope[PackageDefined]) -> None:
    """Create or redefine a package; a redefinition reaches every live record (rule 3)."""
    if await _refused(uow, event):
        return
    data = event.data
    refusal = domain.validate(data)
    if refusal:
        uow.reject(event, refusal.reason, refusal.detail)
        return
    current = await _current(uow, event)
    if current and domain.is_stale(data.version, current.terms_version):
        uow.ignore(event, "stale_version", f"version {data.version} <= {current.terms_version}")
        return
    status_wins = current is None or data.version > current.status_version
    stmt = insert(package).values(
        business_id=event.business_id,
        package_id=data.package_id,
        terms=data.model_dump(mode="json"),
        terms_version=data.version,
        status=data.status,
        status_version=data.version,
    )
    update: dict[str, Any] = {
        "terms": stmt.excluded.terms,
        "terms_version": stmt.excluded.terms_version,
        "updated_at": func.now(),
    }
    if status_wins:
        update |= {"status": stmt.excluded.status, "status_version": stmt.excluded.status_version}
    await uow.conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[package.c.business_id, package.c.package_id], set_=update
        )
    )
    if current is not None and current.terms is not None:
        await records.apply_new_terms(uow, event.business_id, data, cause=event)


async def change_package_status(uow: UnitOfWork, event: Envelope[PackageStatusChanged]) -> None:
    """Disable or enable sales of a package (rule 4); existing records are not touched."""
    if await _refused(uow, event):
        return
    data = event.data
    current = await _current(uow, event)
    if current and domain.is_stale(
        data.version, max(current.terms_version, current.status_version)
    ):
        uow.ignore(event, "stale_version", f"version {data.version} is not newer")
        return
    status = "disabled" if event.event_type == topics.PACKAGE_DISABLED else "active"
    stmt = insert(package).values(
        business_id=event.business_id,
        package_id=data.package_id,
        terms=None,
        status=status,
        status_version=data.version,
    )
    await uow.conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[package.c.business_id, package.c.package_id],
            set_={"status": status, "status_version": data.version, "updated_at": func.now()},
        )
    )
