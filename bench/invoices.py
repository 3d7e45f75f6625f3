"""`python -m bench.invoices`: invoices to records, one process each of invoicing and records.

Issue 6's target: 2,000 invoices/s. The invoices are preloaded, the businesses' plans and
packages seeded in the catalog; each run starts from fresh topics and a fresh database copy.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from bench import database, harness, kafka, profile
from bench.harness import FASTSTREAM, ROOT
from bench.invoice_checker import check_invoices
from bench.invoice_report import CPU, PROCESSES, InvoiceContext, render_invoices
from bench.invoice_workload import InvoiceParams, InvoiceWorkload, generate_invoices
from bench.measure import Sampler, cpu_shares, window
from bench.report import Measured
from bench.workload import DEFAULT_SEED
from contracts import topics
from deploy import infra

log = logging.getLogger("bench")
STALL_S = 60.0
COMMANDS = {
    "invoicing": [*FASTSTREAM, "services.invoicing.app:app"],
    "records": [*FASTSTREAM, "services.records.app:app"],
}
INBOUND_TOPICS = (
    topics.INVOICE_PUBLISHED,
    topics.INVOICE_PAID,
    topics.INVOICE_VOIDED,
    topics.PACKAGE_ASSIGNED,
    topics.RECORD_EDIT_REQUESTED,
)
REFUSED_TOPICS = [topics.MESSAGE_REJECTED, *(topics.dlq(t) for t in INBOUND_TOPICS)]
OUTBOUND_TOPICS = (
    topics.RECORD_CREATED,
    topics.RECORD_PAID,
    topics.RECORD_CANCELLED,
    topics.RECORD_UPDATED,
    topics.RECORD_EXPIRED,
)


@dataclass(frozen=True)
class Options:
    """What the command line asked for."""

    params: InvoiceParams
    runs: int
    workdir: Path
    out: Path
    profile: bool


def invoice_topics(partitions: int) -> dict[str, int]:
    """Every topic the two services read or write, with the partitions deployment gives it."""
    names = [*INBOUND_TOPICS, *REFUSED_TOPICS, *OUTBOUND_TOPICS]
    return {n: topics.partitions(n, partitions) for n in names}


class InvoiceBench(harness.Stage):
    """The servers, the workload, and every run."""

    def __init__(
        self,
        options: Options,
        kafka_service: infra.KafkaService,
        postgres: infra.PostgresService,
        workload: InvoiceWorkload,
    ) -> None:
        super().__init__(kafka_service, postgres, "bench_invoices")
        self.o = options
        self.workload = workload
        self.layout = invoice_topics(options.params.partitions)
        self.results: list[Measured] = []

    async def run(self, sampler: Sampler) -> None:
        """Prepare once, then every run in turn."""
        await self.prepare(
            sampler,
            PROCESSES,
            self.o.params.partitions,
            lambda engine: database.seed_catalog(engine, self.workload.catalog),
        )
        try:
            for run in range(1, self.o.runs + 1):
                result = await self.run_one(run, sampler)
                self.results.append(result)
                harness.logged(run, "invoices", result.throughput, result.check)
        finally:
            await self.clean_up(invoice_topics(6))

    async def run_one(self, run: int, sampler: Sampler) -> Measured:
        """A clean start, the invoices handled, then the check."""
        invoices = self.workload.invoices
        db_url = await self.fresh_run(self.layout, invoices)
        expected = self.workload.records
        measured = Measured("invoices", run, len(invoices), math.nan, math.nan)
        logs = self.o.workdir / "logs" / f"run{run}"
        consumers = harness.Consumers(COMMANDS, self.env(db_url), logs)
        try:
            for name, proc in consumers.procs.items():
                sampler.watch(name, [proc.pid])
            phase = harness.Phase(sampler, lambda: self._profiler(run, consumers))
            created_layout = harness.only(self.layout, [topics.RECORD_CREATED])
            async with kafka.TopicReader(self.kafka_options, created_layout) as reader:
                got = await kafka.wait_for_outcomes(
                    reader, expected, STALL_S, consumers.alive, phase.start
                )
                before, after, wall = phase.end()
                created = [kafka.outcome(r) for r in await reader.read_all()]
            stamps = [o.timestamp_ms for o in {o.event_id: o for o in created}.values()]
            found = window(stamps, len(invoices) / expected)
            measured.throughput, measured.window_s = found.throughput, found.seconds
            measured.cpu = cpu_shares(before, after, wall, CPU)
            measured.check = check_invoices(
                "invoices checker",
                invoices,
                created,
                await database.invoice_records(db_url),
                inbox=await database.inbox(db_url, "invoicing"),
                refused=await kafka.refused(
                    self.kafka_options, harness.only(self.layout, REFUSED_TOPICS)
                ),
            )
            if got < expected:
                measured.check.problems.insert(
                    0,
                    f"only {got} of {expected} package_record.created appeared (stalled or exited)",
                )
            measured.peak_rss = [max(sampler.peak_rss(n).values(), default=0) for n in PROCESSES]
        finally:
            consumers.stop()
        return measured

    def _profiler(self, run: int, consumers: harness.Consumers) -> profile.Recording | None:
        if not (self.o.profile and run == 1):
            return None
        pid = consumers.procs["invoicing"].pid
        return profile.Recording(pid, self.o.out.parent / "profile-invoicing")


def _context(options: Options, bench: InvoiceBench, command: str) -> InvoiceContext:
    p, w = options.params, bench.workload
    mean = sum(len(i.value) for i in w.invoices) / len(w.invoices)
    packages = sum(1 for e in w.catalog if e.topic == topics.PACKAGE_CREATED)
    workload = (
        f"{len(w.invoices):,} invoice.published (mean {mean:.0f} bytes) for {p.clients:,} "
        f"clients of {p.businesses:,} businesses selling {packages:,} packages; 1-3 package "
        f"lines of quantity 1-2 each ({p.product_share:.0%} also sell a product): "
        f"{w.records:,} records; keyed by client over "
        f"{topics.partitions(topics.INVOICE_PUBLISHED, p.partitions)} partitions, seed {p.seed}"
    )
    return InvoiceContext(
        header=harness.header(bench, command, workload),
        invoices=len(w.invoices),
        records=w.records,
        runs=options.runs,
    )


def execute(options: Options, command: str) -> int:
    """Run the benchmark; print and write the results; 0 when every check passed."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    workload = generate_invoices(options.params)
    log.info("%d invoices for %d records generated", len(workload.invoices), workload.records)
    with harness.servers(options.workdir) as (kafka_service, postgres, sampler):
        bench = InvoiceBench(options, kafka_service, postgres, workload)
        asyncio.run(bench.run(sampler))
    harness.publish(render_invoices(_context(options, bench, command), bench.results), options.out)
    checks = [r.check for r in bench.results if r.check is not None]
    return 0 if len(checks) == options.runs and all(c.ok for c in checks) else 1


app = typer.Typer(add_completion=False, help=__doc__, pretty_exceptions_enable=False)


@app.command()
def main(
    *,
    invoices: Annotated[int, typer.Option(help="invoice.published events")] = 20_000,
    businesses: Annotated[int, typer.Option(help="businesses selling packages")] = 50,
    clients: Annotated[int, typer.Option(help="clients the invoices are for")] = 5_000,
    partitions: Annotated[int, typer.Option(help="the deployment's default partitions")] = 6,
    runs: harness.Runs = 3,
    seed: harness.Seed = DEFAULT_SEED,
    workdir: harness.Workdir = ROOT / ".cache" / "bench-invoices",
    out: harness.Out = ROOT / "bench-results" / "invoices.md",
    profile_invoicing: Annotated[
        bool, typer.Option("--profile", help="py-spy the invoicing process in the first run")
    ] = False,
) -> None:
    """Measure invoice.published to package_record.created on one process of each service."""
    options = Options(
        params=InvoiceParams(
            invoices=invoices,
            businesses=businesses,
            clients=clients,
            partitions=partitions,
            seed=seed,
        ),
        runs=runs,
        workdir=workdir.resolve(),
        out=out.resolve(),
        profile=profile_invoicing,
    )
    raise typer.Exit(execute(options, harness.command_line("python -m bench.invoices")))


if __name__ == "__main__":
    app(prog_name="python -m bench.invoices")
