"""Invoicing rules: what a package line may sell."""

from __future__ import annotations

MAX_QUANTITY = 1000


def quantity_refusal(quantity: int) -> str | None:
    """A line sells at least one record and a sane number of them."""
    if not 1 <= quantity <= MAX_QUANTITY:
        return f"quantity: must be between 1 and {MAX_QUANTITY}, got {quantity}"
    return None


def line_refusal(package_known: bool, package_active: bool) -> str | None:
    """Rule 4: only an active package of this business is sold."""
    if not package_known:
        return "package_not_found"
    if not package_active:
        return "package_disabled"
    return None
