"""Invoicing rules: what a package line may sell."""

from __future__ import annotations

from collections.abc import Iterable

MAX_QUANTITY = 1000
# One message must stay a bounded piece of work: a 1 MiB invoice of lines selling 1,000 each
# would otherwise ask for millions of records in one transaction.
MAX_RECORDS_PER_INVOICE = 1000


def quantity_refusal(quantity: int) -> str | None:
    """A line sells a sane number of records (at least one is the contract's schema)."""
    if quantity > MAX_QUANTITY:
        return f"quantity: must be at most {MAX_QUANTITY}, got {quantity}"
    return None


def invoice_refusal(quantities: Iterable[int]) -> str | None:
    """An invoice sells at most MAX_RECORDS_PER_INVOICE records over all its package lines."""
    total = sum(q for q in quantities if quantity_refusal(q) is None)
    if total > MAX_RECORDS_PER_INVOICE:
        return f"lines: {total} records sold, at most {MAX_RECORDS_PER_INVOICE} per invoice"
    return None


def line_refusal(package_known: bool, package_active: bool) -> str | None:
    """Rule 4: only an active package of this business is sold."""
    if not package_known:
        return "package_not_found"
    if not package_active:
        return "package_disabled"
    return None
