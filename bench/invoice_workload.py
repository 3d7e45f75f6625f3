"""A reproducible day of invoices: the businesses' plans and packages, and the invoices to send.

Every random choice comes from one seeded generator, so the same parameters always give the
same bytes. M businesses on a plan that sells packages define a few packages each (seeded in
the catalog before a run, as the platform sent them long ago); N `invoice.published` for their
clients each sell 1-3 package lines of quantity 1-2, shaped as the platform's example invoice
(some also sell a product, which invoicing ignores), keyed by client.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from bench.workload import BURST_STARTS, DEFAULT_SEED, DISCOUNTS, SERVICES, Stamp, envelope
from bench.workload import event_id as new_event_id
from contracts import topics

PUBLISHED = topics.INVOICE_PUBLISHED
PLANS = ("pro", "pro", "enterprise")  # only these may manage packages
SESSIONS = (5, 10, 10, 20, None)  # None: unlimited
VALIDITY: tuple[dict[str, Any], ...] = (
    {"type": "days", "days": 365},
    {"type": "days", "days": 180},
    {"type": "never"},
    {"type": "until", "date": "2027-12-31"},
)
PRODUCTS = {"prd-oil": "12.50", "prd-cream": "24.90", "prd-voucher": "50.00"}
SYSTEM = {"user_id": "system", "role": "system"}
CATALOG_STARTS = BURST_STARTS - timedelta(days=365)  # plans and packages came long before


@dataclass(frozen=True, slots=True)
class InvoiceParams:
    """The size and mix of an invoice workload."""

    invoices: int = 20_000
    businesses: int = 50
    clients: int = 5_000
    partitions: int = 6
    seed: int = DEFAULT_SEED
    product_share: float = 0.3

    def __post_init__(self) -> None:
        if min(self.invoices, self.businesses, self.clients, self.partitions) < 1:
            raise ValueError("invoices, businesses, clients and partitions must be at least 1")
        if not 0 <= self.product_share <= 1:
            raise ValueError("product_share is between 0 and 1")


@dataclass(frozen=True, slots=True)
class Inbound:
    """An inbound event as sent."""

    topic: str
    key: bytes
    value: bytes
    event_id: str


@dataclass(frozen=True, slots=True)
class Invoice(Inbound):
    """An `invoice.published` as sent, with the package lines the checker expects records of."""

    business_id: str
    invoice_id: str
    lines: tuple[tuple[str, int], ...]
    """(line_id, quantity) of each package line."""

    @property
    def records(self) -> int:
        """Records the invoice must create: one per unit of each package line."""
        return sum(quantity for _, quantity in self.lines)


@dataclass(frozen=True)
class InvoiceWorkload:
    """The catalog to seed (plans, then packages) and the invoices in send order."""

    params: InvoiceParams
    catalog: list[Inbound]
    invoices: list[Invoice]

    @property
    def records(self) -> int:
        """Records all the invoices must create."""
        return sum(i.records for i in self.invoices)


def generate_invoices(params: InvoiceParams) -> InvoiceWorkload:
    """The invoice workload of these parameters: the same every time."""
    rng = random.Random(params.seed)  # noqa: S311 - reproducible data, not a secret
    stamp = Stamp(rng)
    businesses = [f"biz-{m:03d}" for m in range(params.businesses)]
    catalog: list[Inbound] = []
    prices: dict[str, dict[str, str]] = {}
    for n, business_id in enumerate(businesses):
        plan = {"plan": rng.choice(PLANS)}
        at = stamp.at(CATALOG_STARTS, n)
        catalog.append(
            _inbound(topics.BUSINESS_PLAN_CHANGED, business_id, SYSTEM, plan, rng=rng, at=at)
        )
    for n, business_id in enumerate(businesses):
        owner = {"user_id": f"usr-{business_id[4:]}-owner", "role": "owner"}
        at = stamp.at(CATALOG_STARTS + timedelta(days=1), n)
        prices[business_id] = {}
        for k in range(rng.randint(2, 4)):
            data = _package(f"pkg-{business_id[4:]}-{k}", rng)
            prices[business_id][data["package_id"]] = data["price"]["amount"]
            catalog.append(
                _inbound(topics.PACKAGE_CREATED, business_id, owner, data, rng=rng, at=at)
            )
    clients = [(f"cli-{c:05d}", businesses[c % len(businesses)]) for c in range(params.clients)]
    invoices = [
        _invoice(n, rng.choice(clients), prices, params, rng=rng, at=stamp.at(BURST_STARTS, n))
        for n in range(params.invoices)
    ]
    return InvoiceWorkload(params, catalog, invoices)


def _package(package_id: str, rng: random.Random) -> dict[str, Any]:
    services = sorted(rng.sample(sorted(SERVICES), rng.randint(1, 3)))
    sessions = [rng.choice(SESSIONS) for _ in services]
    worth = sum(SERVICES[s] * (n or 10) for s, n in zip(services, sessions, strict=True))
    return {
        "package_id": package_id,
        "name": " + ".join(s.removeprefix("svc-") for s in services),
        "price": {
            "amount": str((worth * Decimal("0.85")).quantize(Decimal("0.01"))),
            "currency": "EUR",
        },
        "services": [
            {"service_id": s, "sessions": n} for s, n in zip(services, sessions, strict=True)
        ],
        "discount": {"type": "percent", "value": rng.choice(DISCOUNTS)},
        "validity": rng.choice(VALIDITY),
        "status": "active",
        "version": 1,
    }


def _invoice(
    n: int,
    client: tuple[str, str],
    prices: dict[str, dict[str, str]],
    params: InvoiceParams,
    *,
    rng: random.Random,
    at: str,
) -> Invoice:
    """An invoice of the client's business: like the platform's example, with 1-3 packages."""
    client_id, business_id = client
    packages = sorted(prices[business_id])
    lines: list[dict[str, Any]] = []
    for k in range(1, rng.randint(1, 3) + 1):
        package_id = rng.choice(packages)
        lines.append(
            {
                "line_id": f"l{k}",
                "type": "package",
                "package_id": package_id,
                "quantity": rng.randint(1, 2),
                "unit_price": {"amount": prices[business_id][package_id], "currency": "EUR"},
            }
        )
    if rng.random() < params.product_share:
        product = rng.choice(sorted(PRODUCTS))
        lines.append(
            {
                "line_id": f"l{len(lines) + 1}",
                "type": "product",
                "product_id": product,
                "quantity": 1,
                "unit_price": {"amount": PRODUCTS[product], "currency": "EUR"},
            }
        )
    invoice_id = f"inv-{n:06d}"
    data = {
        "invoice_id": invoice_id,
        "client_id": client_id,
        "paid": rng.random() < 0.5,
        "lines": lines,
    }
    desk = {"user_id": f"usr-{business_id[4:]}-desk", "role": "staff"}
    sent = _inbound(PUBLISHED, business_id, desk, data, rng=rng, at=at)
    return Invoice(
        topic=sent.topic,
        key=sent.key,
        value=sent.value,
        event_id=sent.event_id,
        business_id=business_id,
        invoice_id=invoice_id,
        lines=tuple((ln["line_id"], ln["quantity"]) for ln in lines if ln["type"] == "package"),
    )


def _inbound(
    topic: str,
    business_id: str,
    actor: dict[str, str],
    data: dict[str, Any],
    *,
    rng: random.Random,
    at: str,
) -> Inbound:
    """The event keyed as its topic is (by client, package or business)."""
    eid = new_event_id(rng)
    key = str(data.get(topics.INBOUND[topic].key, business_id))
    value = envelope(topic, eid, business_id=business_id, actor=actor, data=data, occurred_at=at)
    return Inbound(topic, key.encode(), value, eid)
