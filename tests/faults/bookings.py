"""A booking workload with a ledger of every event and the state the rules lead to."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from tests.support import events
from tests.support.flow import Platform

ENDING = ("cancelled", "no_show")


@dataclass
class Booking:
    """One booking's events, in version order, and how it should end."""

    booking_id: str
    client_id: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def created(self) -> dict[str, Any]:
        """Its booking.created."""
        return self.events[0]

    @property
    def ends_released(self) -> bool:
        """Cancelled or no-show at the end: holds nothing."""
        last = self.events[-1]
        return last["event_type"] == "booking.status_changed" and last["data"]["status"] in ENDING


@dataclass
class Workload:
    """A business, its clients (one record of plenty of sessions each) and their bookings."""

    business_id: str
    clients: list[str]
    bookings: list[Booking]

    def all_events(self) -> list[dict[str, Any]]:
        """Every event, each booking's in version order, bookings interleaved."""
        out: list[dict[str, Any]] = []
        longest = max(len(b.events) for b in self.bookings)
        for step in range(longest):
            out.extend(b.events[step] for b in self.bookings if step < len(b.events))
        return out

    def expected_used(self) -> dict[str, int]:
        """Sessions used per client: sessions are plentiful, so order cannot change this."""
        used = dict.fromkeys(self.clients, 0)
        for b in self.bookings:
            if not b.ends_released:
                used[b.client_id] += 1
        return used


def bookings(
    business_id: str,
    clients: list[str],
    n: int,
    *,
    seed: int,
    edit_share: float = 0.0,
    end_share: float = 0.0,
) -> Workload:
    """`n` bookings of random clients; some edited (new price), some cancelled or no-show."""
    rng = random.Random(seed)
    made = []
    for i in range(n):
        client = rng.choice(clients)
        b = Booking(f"bk-{i}", client)
        b.events.append(events.booking(business_id, b.booking_id, client_id=client))
        version = 1
        if rng.random() < edit_share:
            version += 1
            b.events.append(
                events.booking(
                    business_id,
                    b.booking_id,
                    client_id=client,
                    version=version,
                    topic="booking.updated",
                    price=f"{rng.randint(40, 90)}.00",
                )
            )
        if rng.random() < end_share:
            version += 1
            b.events.append(
                events.status_change(
                    business_id, b.booking_id, rng.choice(ENDING), version, client_id=client
                )
            )
        made.append(b)
    return Workload(business_id, clients, made)


async def business_with_clients(
    platform: Platform, n_clients: int, sessions: int
) -> tuple[str, list[str], list[dict[str, Any]]]:
    """A Pro business whose clients own one record of `sessions` massages each; its events."""
    business = events.new_business()
    clients = [f"cli-{i}" for i in range(n_clients)]
    setup = [events.plan(business), events.package(business, sessions=sessions)]
    await platform.send(*setup)
    invoices = [
        events.invoice(business, c, f"inv-{c}", lines=[events.package_line("l1")]) for c in clients
    ]
    await platform.send(*invoices)
    return business, clients, setup + invoices
