"""The invoice benchmark's workload is reproducible and valid; its checker catches mistakes."""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from dataclasses import replace

import pytest

from bench.checker import Outcome
from bench.invoice_checker import StoredRecord, check_invoices
from bench.invoice_workload import InvoiceParams, InvoiceWorkload, generate_invoices
from contracts import topics
from contracts.codec import decode
from contracts.inbound import PackageLine
from services.catalog import domain as catalog

SMALL = InvoiceParams(invoices=400, businesses=6, clients=60, partitions=3)


@pytest.fixture(scope="module")
def workload() -> InvoiceWorkload:
    return generate_invoices(SMALL)


def _flawless(w: InvoiceWorkload) -> tuple[list[StoredRecord], list[Outcome]]:
    """The records and `package_record.created` a correct run leaves."""
    stored, created = [], []
    for i in w.invoices:
        for line_id, quantity in i.lines:
            for unit in range(quantity):
                record_id = f"{i.business_id}/{i.invoice_id}/{line_id}/{unit}"
                stored.append(
                    StoredRecord(record_id, i.business_id, "invoice", i.invoice_id, line_id)
                )
                created.append(
                    Outcome(
                        topics.RECORD_CREATED, str(uuid.uuid4()), i.event_id, record_id=record_id
                    )
                )
    return stored, created


def _digest(w: InvoiceWorkload) -> str:
    """One hash of every byte sent: topics, keys and values, catalog first, in order."""
    sent = hashlib.sha256()
    for e in [*w.catalog, *w.invoices]:
        sent.update(b"\0".join((e.topic.encode(), e.key, e.value, b"")))
    return sent.hexdigest()


def test_the_same_seed_gives_the_same_bytes(workload: InvoiceWorkload) -> None:
    assert _digest(generate_invoices(SMALL)) == _digest(workload)
    assert _digest(generate_invoices(replace(SMALL, seed=7))) != _digest(workload)


def test_every_invoice_is_valid_keyed_by_its_client_and_sells_1_to_3_lines(
    workload: InvoiceWorkload,
) -> None:
    assert len(workload.invoices) == 400
    for i in workload.invoices:
        envelope = decode(topics.INVOICE_PUBLISHED, i.value)
        assert (str(envelope.event_id), envelope.business_id) == (i.event_id, i.business_id)
        assert i.key == envelope.data.client_id.encode()
        assert envelope.data.invoice_id == i.invoice_id
        sold = [line for line in envelope.data.lines if isinstance(line, PackageLine)]
        assert 1 <= len(sold) <= 3
        assert all(1 <= line.quantity <= 2 for line in sold)
        assert i.lines == tuple((line.line_id, line.quantity) for line in sold)
    assert len({i.event_id for i in workload.invoices}) == 400
    assert len({i.invoice_id for i in workload.invoices}) == 400


def test_expected_records_are_the_sum_of_the_package_lines_quantities(
    workload: InvoiceWorkload,
) -> None:
    first = workload.invoices[0]
    lines = decode(topics.INVOICE_PUBLISHED, first.value).data.lines
    assert first.records == sum(line.quantity for line in lines if isinstance(line, PackageLine))
    assert workload.records == sum(i.records for i in workload.invoices)
    assert len(workload.invoices) <= workload.records <= 6 * len(workload.invoices)
    kinds = Counter(type(line).__name__ for i in workload.invoices for line in _lines(i.value))
    assert kinds["PackageLine"] > 0
    assert sum(n for kind, n in kinds.items() if kind != "PackageLine") > 0  # products, ignored


def _lines(value: bytes) -> list[object]:
    return list(decode(topics.INVOICE_PUBLISHED, value).data.lines)


def test_the_catalog_entitles_every_business_and_defines_every_package_sold(
    workload: InvoiceWorkload,
) -> None:
    plans: dict[str, str] = {}
    packages: set[tuple[str, str]] = set()
    for e in workload.catalog:
        envelope = decode(e.topic, e.value)
        if e.topic == topics.BUSINESS_PLAN_CHANGED:
            plans[envelope.business_id] = envelope.data.plan
            continue
        assert e.topic == topics.PACKAGE_CREATED
        assert catalog.may_manage(plans.get(envelope.business_id), envelope.actor) is None
        assert catalog.validate(envelope.data) is None
        packages.add((envelope.business_id, envelope.data.package_id))
    assert len(plans) == 6
    for i in workload.invoices:
        for line in _lines(i.value):
            if isinstance(line, PackageLine):
                assert (i.business_id, line.package_id) in packages


def test_the_checker_passes_a_correct_run(workload: InvoiceWorkload) -> None:
    stored, created = _flawless(workload)
    inbox = [i.event_id for i in workload.invoices]
    # The relay published a few rows twice after a crash: the same event ids.
    result = check_invoices(
        "invoices", workload.invoices, created + created[:5], stored, inbox=inbox
    )
    assert result.ok, result.summary()
    assert result.checked == 400


def test_the_checker_catches_a_missing_record(workload: InvoiceWorkload) -> None:
    stored, created = _flawless(workload)
    lost = stored.pop(7)
    result = check_invoices("invoices", workload.invoices, created, stored)
    assert len(result.problems) == 2, result.summary()
    assert f"invoice {lost.invoice_id} line {lost.line_id}: " in result.problems[0]
    assert "records, wanted" in result.problems[0]
    assert "package_record.created of records it did not create" in result.problems[1]


def test_the_checker_catches_a_doubled_created_event(workload: InvoiceWorkload) -> None:
    stored, created = _flawless(workload)
    twin = replace(created[3], event_id=str(uuid.uuid4()))
    result = check_invoices("invoices", workload.invoices, [*created, twin], stored)
    assert len(result.problems) == 1, result.summary()
    assert f"record {twin.record_id}: 2 package_record.created, wanted 1" in result.problems[0]


def test_the_checker_catches_a_record_never_announced(workload: InvoiceWorkload) -> None:
    stored, created = _flawless(workload)
    silent = created.pop(0)
    result = check_invoices("invoices", workload.invoices, created, stored)
    assert result.problems == [
        f"invoice {workload.invoices[0].invoice_id} record {silent.record_id}: "
        "0 package_record.created, wanted 1"
    ]


def test_the_checker_catches_refusals_strays_and_gaps_in_the_inbox(
    workload: InvoiceWorkload,
) -> None:
    stored, created = _flawless(workload)
    stray = StoredRecord("rec-x", "biz-000", "invoice", "inv-999999", "l1")
    assigned = StoredRecord("rec-y", "biz-000", "assignment", None, None)
    result = check_invoices(
        "invoices",
        workload.invoices,
        [*created, Outcome(topics.RECORD_CREATED, "e-x", str(uuid.uuid4()), record_id="rec-x")],
        [*stored, stray, assigned],
        inbox=[i.event_id for i in workload.invoices[1:]],
        refused=["invoice.published.dlq: ..."],
    )
    assert result.problems == [
        "refused or dead-lettered: invoice.published.dlq: ...",
        f"invoice.published {workload.invoices[0].event_id} has no inbox row",
        "record rec-y of biz-000: origin assignment",
        "1 records for invoice lines that were never sent",
        "1 package_record.created caused by no invoice of the run",
    ]
