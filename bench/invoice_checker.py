"""Whether an invoice run did exactly what the invoices ask: their records, each announced once."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from bench.checker import CheckResult, Outcome, delivery_problems
from bench.invoice_workload import Invoice


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A row of `records.package_record` and the origin it names."""

    record_id: str
    business_id: str
    origin_type: str | None
    invoice_id: str | None
    line_id: str | None


def check_invoices(
    name: str,
    invoices: Sequence[Invoice],
    created: Iterable[Outcome],
    stored: Iterable[StoredRecord],
    *,
    inbox: Collection[str] | None = None,
    refused: Sequence[str] = (),
) -> CheckResult:
    """Each package line has its records, from that invoice; each record one created event."""
    # `created` are the `package_record.created` events read back.
    result = CheckResult(name, checked=len(invoices))
    problems = result.problems
    problems += delivery_problems(invoices, inbox, refused)
    by_line: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for r in stored:
        if r.origin_type == "invoice" and r.invoice_id and r.line_id:
            by_line[(r.business_id, r.invoice_id, r.line_id)].append(r.record_id)
        else:
            problems.append(f"record {r.record_id} of {r.business_id}: origin {r.origin_type}")
    # Once per event_id: after a crash the relay may publish a row twice, which a consumer of
    # our topics recognises by its id.
    announced: dict[str | None, Counter[str | None]] = defaultdict(Counter)
    for o in {o.event_id: o for o in created}.values():
        announced[o.causation_id][o.record_id] += 1
    for invoice in invoices:
        problems += _invoice_problems(invoice, by_line, announced.pop(invoice.event_id, Counter()))
    expected = {(i.business_id, i.invoice_id, line) for i in invoices for line, _ in i.lines}
    stray = sum(len(ids) for key, ids in by_line.items() if key not in expected)
    if stray:
        problems.append(f"{stray} records for invoice lines that were never sent")
    caused_by_none = sum(c.total() for c in announced.values())
    if caused_by_none:
        problems.append(f"{caused_by_none} package_record.created caused by no invoice of the run")
    return result


def _invoice_problems(
    invoice: Invoice,
    by_line: dict[tuple[str, str, str], list[str]],
    announced: Counter[str | None],
) -> list[str]:
    """What is wrong with one invoice's records and their created events."""
    problems = []
    records: list[str] = []
    for line_id, quantity in invoice.lines:
        found = by_line.get((invoice.business_id, invoice.invoice_id, line_id), [])
        records += found
        if len(found) != quantity:
            problems.append(
                f"invoice {invoice.invoice_id} line {line_id}: {len(found)} records, "
                f"wanted {quantity}"
            )
    problems += [
        f"invoice {invoice.invoice_id} record {record_id}: "
        f"{announced[record_id]} package_record.created, wanted 1"
        for record_id in records
        if announced[record_id] != 1
    ]
    own = set(records)
    others = sum(n for record_id, n in announced.items() if record_id not in own)
    if others:
        problems.append(
            f"invoice {invoice.invoice_id}: {others} package_record.created of records it did "
            "not create"
        )
    return problems
