"""A reproducible booking burst: the records to seed, earlier bookings, and the events to send.

Every random choice comes from one seeded generator, so the same parameters always give the
same bytes. The burst is N `booking.created` for K clients (one record each) of M businesses,
plus status changes and edits. The changes and edits concern *earlier* bookings (seeded as
already redeemed, as last week's bookings are on a Monday morning), never bookings of the
burst: the three booking topics are consumed in no fixed order relative to each other, so a
cancel racing its own booking would make the expected outcomes depend on fetch order.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import orjson

from contracts import topics

CREATED = topics.BOOKING_CREATED
UPDATED = topics.BOOKING_UPDATED
STATUS_CHANGED = topics.BOOKING_STATUS_CHANGED
INBOUND_TOPICS = (CREATED, UPDATED, STATUS_CHANGED)

# The platform's service catalogue and list prices; a business prices around them.
SERVICES: dict[str, Decimal] = {
    "svc-massage-60": Decimal("60.00"),
    "svc-massage-90": Decimal("85.00"),
    "svc-facial-45": Decimal("55.00"),
    "svc-sauna-30": Decimal("20.00"),
    "svc-pilates-55": Decimal("25.00"),
    "svc-physio-40": Decimal("48.00"),
    "svc-nails-30": Decimal("30.00"),
    "svc-haircut-45": Decimal("38.50"),
}
DISCOUNTS = ("100", "100", "50", "25", "10")
SOURCES = ("widget", "widget", "widget", "calendar", "calendar", "api")
BURST_STARTS = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday morning
EARLIER_STARTS = BURST_STARTS - timedelta(days=7)
DEFAULT_SEED = 20260302

Expect = Literal["applied", "not_applied", "removed", "none"]
BalanceKey = tuple[str, str, str]
"""(business_id, client_id, service_id): one record per client, so this names a balance."""


@dataclass(frozen=True, slots=True)
class Params:
    """The size and mix of a workload."""

    events: int = 100_000
    records: int = 2_000
    businesses: int = 50
    partitions: int = 6
    seed: int = DEFAULT_SEED
    status_share: float = 0.05
    edit_share: float = 0.05
    uncovered_share: float = 0.05

    def __post_init__(self) -> None:
        if self.events < 1 or self.records < 1 or self.businesses < 1 or self.partitions < 1:
            raise ValueError("events, records, businesses and partitions must be at least 1")
        for share in (self.status_share, self.edit_share, self.uncovered_share):
            if not 0 <= share <= 1:
                raise ValueError("shares are between 0 and 1")


@dataclass(frozen=True, slots=True)
class Business:
    """A business and the one package its clients hold."""

    business_id: str
    package_id: str
    services: tuple[str, ...]
    sessions: int
    discount_percent: str
    prices: dict[str, str]


@dataclass(frozen=True, slots=True)
class RecordSpec:
    """A record to seed: one per client, assigned without an invoice."""

    business_id: str
    client_id: str
    assignment_id: str


@dataclass(frozen=True, slots=True)
class Event:
    """An inbound event as sent, with what the checker expects of it."""

    topic: str
    key: bytes
    value: bytes
    event_id: str
    business_id: str
    client_id: str
    booking_id: str
    service_id: str
    expect: Expect

    @property
    def balance(self) -> BalanceKey:
        """The balance the event's booking draws on."""
        return (self.business_id, self.client_id, self.service_id)


@dataclass(frozen=True)
class Workload:
    """Everything a run needs: seeds, earlier bookings, and the burst in send order."""

    params: Params
    businesses: dict[str, Business]
    records: list[RecordSpec]
    earlier: list[Event]
    events: list[Event]

    def reference(self, count: int | None = None) -> dict[BalanceKey, int]:
        """Sessions used per balance after the first `count` events (all by default)."""
        # Exact whatever order the events are handled in: every record has more sessions than
        # all its bookings need, so no booking's fate depends on another's.
        used: Counter[BalanceKey] = Counter()
        for r in self.records:
            for s in self.businesses[r.business_id].services:
                used[(r.business_id, r.client_id, s)] = 0
        for e in self.earlier:
            used[e.balance] += 1
        for e in self.events[:count]:
            if e.expect == "applied":
                used[e.balance] += 1
            elif e.expect == "removed":
                used[e.balance] -= 1
        return dict(used)


def generate(params: Params) -> Workload:
    """The workload of these parameters: the same every time."""
    rng = random.Random(params.seed)  # noqa: S311 - reproducible data, not a secret
    businesses = _businesses(params, rng)
    ids = sorted(businesses)
    records = [
        RecordSpec(ids[i % len(ids)], f"cli-{i:05d}", f"asg-{i:05d}") for i in range(params.records)
    ]
    n_status = round(params.events * params.status_share)
    n_edits = round(params.events * params.edit_share)
    stamp = Stamp(rng)
    earlier = [
        created(businesses[r.business_id], r, f"bk-e{n:06d}", rng, stamp.at(EARLIER_STARTS, n))
        for n in range(n_status + n_edits)
        for r in (rng.choice(records),)
    ]
    kinds = ["created"] * params.events + ["status"] * n_status + ["edit"] * n_edits
    rng.shuffle(kinds)
    follow_ups = iter(rng.sample(earlier, len(earlier)))
    events: list[Event] = []
    for n, kind in enumerate(kinds):
        at = stamp.at(BURST_STARTS, n)
        if kind == "created":
            r = rng.choice(records)
            business = businesses[r.business_id]
            covered = rng.random() >= params.uncovered_share
            events.append(created(business, r, f"bk-{n:07d}", rng, at, covered=covered))
        elif kind == "status":
            events.append(_status_changed(next(follow_ups), rng, at))
        else:
            before = next(follow_ups)
            events.append(_edited(businesses[before.business_id], before, rng, at))
    _size_packages(businesses, earlier, events)
    return Workload(params, businesses, records, earlier, events)


def _businesses(params: Params, rng: random.Random) -> dict[str, Business]:
    catalogue = sorted(SERVICES)
    found: dict[str, Business] = {}
    for m in range(min(params.businesses, params.records)):
        business_id = f"biz-{m:03d}"
        factor = Decimal(rng.choice(("0.8", "0.9", "1.0", "1.1", "1.25")))
        found[business_id] = Business(
            business_id=business_id,
            package_id=f"pkg-{m:03d}-bundle",
            services=tuple(sorted(rng.sample(catalogue, rng.randint(1, 3)))),
            sessions=0,  # sized once every booking is known (_size_packages)
            discount_percent=rng.choice(DISCOUNTS),
            prices={s: str((p * factor).quantize(Decimal("0.01"))) for s, p in SERVICES.items()},
        )
    return found


def _size_packages(
    businesses: dict[str, Business],
    earlier: Sequence[Event],
    events: Sequence[Event],
) -> None:
    """Give each package more sessions of each service than any of its clients books."""
    # No record ever runs out, so the reference count holds in any order of handling.
    need: Counter[BalanceKey] = Counter(e.balance for e in earlier)
    need.update(e.balance for e in events if e.expect == "applied")
    most: Counter[str] = Counter()
    for (business_id, _, _), n in need.items():
        most[business_id] = max(most[business_id], n)
    for business_id, b in businesses.items():
        # A round package size with headroom, as a business would sell it.
        sessions = (most[business_id] // 10 + 2) * 10
        businesses[business_id] = Business(
            b.business_id, b.package_id, b.services, sessions, b.discount_percent, b.prices
        )


class Stamp:
    """Occurred-at times a few milliseconds apart, as a burst has them."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def at(self, start: datetime, n: int) -> str:
        moment = start + timedelta(milliseconds=n * 20 + self._rng.randrange(20))
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_id(rng: random.Random) -> str:
    """A random (version 4) event id drawn from `rng`, so it is reproducible."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def created(
    business: Business,
    record: RecordSpec,
    booking_id: str,
    rng: random.Random,
    occurred_at: str,
    *,
    covered: bool = True,
) -> Event:
    """A `booking.created` for the record's client: a service of the package, or another."""
    others = [s for s in sorted(SERVICES) if s not in business.services]
    service_id = rng.choice(business.services if covered or not others else others)
    source = rng.choice(SOURCES)
    starts = BURST_STARTS + timedelta(days=rng.randint(1, 21), minutes=15 * rng.randint(32, 76))
    data = {
        "booking_id": booking_id,
        "client_id": record.client_id,
        "service_id": service_id,
        "starts_at": _iso(starts),
        "status": "pending" if source == "widget" else "confirmed",
        "price": {"amount": business.prices[service_id], "currency": "EUR"},
        "source": source,
        "package_record_id": None,
        "use_package": True,
        "version": 1,
        # The platform adds its own fields; our contracts ignore them, the wire carries them.
        "staff_id": f"stf-{business.business_id[4:]}-{rng.randint(1, 6)}",
    }
    actor = (
        {"user_id": record.client_id, "role": "client"}
        if source == "widget"
        else {"user_id": f"usr-{business.business_id[4:]}-desk", "role": "staff"}
    )
    expect: Expect = "applied" if service_id in business.services else "not_applied"
    return _event(
        CREATED,
        business_id=business.business_id,
        actor=actor,
        data=data,
        rng=rng,
        occurred_at=occurred_at,
        expect=expect,
    )


def _status_changed(before: Event, rng: random.Random, occurred_at: str) -> Event:
    """An earlier booking cancelled or missed: its session comes back."""
    status = "no_show" if rng.random() < 0.3 else "cancelled"
    data = {
        "booking_id": before.booking_id,
        "client_id": before.client_id,
        "status": status,
        "previous_status": "confirmed",
        "version": 2,
        "reason_code": "client_request" if status == "cancelled" else "did_not_attend",
    }
    actor = {"user_id": f"usr-{before.business_id[4:]}-desk", "role": "staff"}
    event = _event(
        STATUS_CHANGED,
        business_id=before.business_id,
        actor=actor,
        data=data,
        rng=rng,
        occurred_at=occurred_at,
        expect="removed",
    )
    return _with_service(event, before.service_id)


def _edited(business: Business, before: Event, rng: random.Random, occurred_at: str) -> Event:
    """An earlier booking moved or repriced; what matching depends on stays the same."""
    doc = orjson.loads(before.value)
    data = doc["data"]
    if rng.random() < 0.5:
        price = Decimal(business.prices[before.service_id]) * Decimal("0.9")
        data["price"] = {"amount": str(price.quantize(Decimal("0.01"))), "currency": "EUR"}
    else:
        moved = timedelta(minutes=30 * rng.randint(1, 8))
        data["starts_at"] = _iso(datetime.fromisoformat(data["starts_at"]) + moved)
    data["status"] = "confirmed"
    data["version"] = 2
    return _event(
        UPDATED,
        business_id=business.business_id,
        actor=doc["actor"],
        data=data,
        rng=rng,
        occurred_at=occurred_at,
        expect="none",
    )


def _event(
    topic: str,
    *,
    business_id: str,
    actor: dict[str, str],
    data: dict[str, Any],
    rng: random.Random,
    occurred_at: str,
    expect: Expect,
) -> Event:
    eid = event_id(rng)
    client_id = str(data["client_id"])
    return Event(
        topic=topic,
        key=client_id.encode(),
        value=envelope(
            topic, eid, business_id=business_id, actor=actor, data=data, occurred_at=occurred_at
        ),
        event_id=eid,
        business_id=business_id,
        client_id=client_id,
        booking_id=str(data["booking_id"]),
        service_id=str(data.get("service_id", "")),
        expect=expect,
    )


def envelope(
    topic: str,
    event_id: str,
    *,
    business_id: str,
    actor: dict[str, str],
    data: dict[str, Any],
    occurred_at: str,
) -> bytes:
    """The bytes of an inbound event as the platform sends it."""
    doc = {
        "event_id": event_id,
        "event_type": topic,
        "occurred_at": occurred_at,
        "business_id": business_id,
        "actor": actor,
        "data": data,
    }
    return orjson.dumps(doc)


def _with_service(event: Event, service_id: str) -> Event:
    return Event(
        event.topic,
        event.key,
        event.value,
        event.event_id,
        event.business_id,
        event.client_id,
        event.booking_id,
        service_id,
        event.expect,
    )


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


PLACEHOLDER = b"0000-00-00T00:00:00.000000Z"
"""Where a live booking's `occurred_at` goes: the sender stamps it at the moment of sending."""


def live_bookings(workload: Workload, tag: str) -> Iterator[Event]:
    """Endless new `booking.created` for the latency phases, `occurred_at` left to stamp."""
    rng = random.Random(f"{workload.params.seed}/{tag}")  # noqa: S311 - reproducible data
    placeholder = PLACEHOLDER.decode()
    for n in itertools.count():
        record = rng.choice(workload.records)
        business = workload.businesses[record.business_id]
        yield created(business, record, f"lat-{tag}-{n:07d}", rng, placeholder)


def stamped(event: Event, occurred_at: datetime) -> bytes:
    """A live booking's bytes with `occurred_at` set."""
    moment = occurred_at.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return event.value.replace(PLACEHOLDER, moment.encode(), 1)
