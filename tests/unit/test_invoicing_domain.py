"""Invoicing's rules as plain values: what a package line may sell."""

from __future__ import annotations

from services.invoicing import domain


def test_an_invoice_sells_a_bounded_number_of_records() -> None:
    assert domain.invoice_refusal([domain.MAX_RECORDS_PER_INVOICE]) is None
    refusal = domain.invoice_refusal([domain.MAX_RECORDS_PER_INVOICE, 1])
    assert refusal is not None
    assert "at most" in refusal


def test_only_an_active_package_of_the_business_is_sold() -> None:
    assert domain.line_refusal(package_known=True, package_active=True) is None
    assert domain.line_refusal(package_known=False, package_active=False) == "package_not_found"
    assert domain.line_refusal(package_known=True, package_active=False) == "package_disabled"
