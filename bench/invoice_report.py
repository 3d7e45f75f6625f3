"""The invoice benchmark's markdown: the medians, every run, and each run's check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.report import Header, Measured, checks, median, share, throughput

PROCESSES = ("invoicing", "records")
CPU = (*PROCESSES, "kafka", "postgres")
TARGET = 2_000


@dataclass(frozen=True)
class InvoiceContext:
    """The header, and the sizes of the invoice benchmark."""

    header: Header
    invoices: int
    records: int
    runs: int


def _rss(results: Sequence[Measured], n: int) -> str:
    peaks = [r.peak_rss[n] / 2**20 for r in results if len(r.peak_rss) > n and r.peak_rss[n]]
    return f"{median(peaks):.0f}" if peaks else "n/a"


def _row(label: str, context: InvoiceContext, results: Sequence[Measured]) -> str:
    rate = throughput(results)
    return (
        f"| {label} | {context.invoices:,} | {context.records:,} | {rate:,.0f} "
        f"| {rate * context.records / context.invoices:,.0f} | "
        + " / ".join(share(results, g) for g in CPU)
        + " | "
        + " / ".join(_rss(results, n) for n in range(len(PROCESSES)))
        + f" | {checks(results)} |"
    )


def render_invoices(context: InvoiceContext, results: Sequence[Measured]) -> str:
    """The results as markdown: the medians, then each run, how it was measured, the checks."""
    rate = throughput(results)
    verdict = "met" if rate >= TARGET else "not met"
    lines = [
        *context.header.lines("Invoice → records benchmark"),
        "",
        f"Target (issue 6): {TARGET:,} invoices/s with one process each of invoicing and "
        f"records — {verdict} ({rate:,.0f} invoices/s, median).",
        "",
        "| runs | invoices | records | throughput (invoices/s) | records/s "
        "| CPU invoicing / records / Kafka / PostgreSQL "
        "| peak RSS invoicing / records (MB) | checks |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        _row(f"**median of {len(results)}**", context, results),
        *(_row(f"run {r.run} (window {r.window_s:.2f} s)", context, [r]) for r in results),
        "",
        f"Each run starts from fresh topics and a fresh copy of the seeded database; {len(results)}"
        f" of the {context.runs} run(s) asked for are listed.",
        "Throughput = invoices / (last `package_record.created` timestamp - first one's "
        "timestamp); records/s likewise with the records. The invoices are preloaded before "
        "the two processes start.",
        "Invoicing creates the records through the records service's api, in its own "
        "transaction, and publishes `package_record.created` from its outbox; the records "
        "process reads assignments and edits, which this workload has none of, so it idles.",
        "CPU: CPU seconds of each process, the Kafka broker and every PostgreSQL process from "
        "the first `package_record.created` to the last, as a share of all cores x that wall "
        "time (one busy process on 2 cores is 50%).",
        "",
        "Checks:",
        "",
        *(f"- run {r.run}, {r.check.summary()}" for r in results if r.check is not None),
    ]
    return "\n".join(lines) + "\n"
