"""`python -m bench`: ours, the raw limit and the naive peer on the same data, side by side."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from bench import database, harness, kafka, profile
from bench.checker import (
    OUTCOME_TOPICS,
    CheckResult,
    Outcome,
    check_passthrough,
    check_redemption,
)
from bench.harness import FASTSTREAM, ROOT
from bench.limit import GROUP as LIMIT_GROUP
from bench.limit import OUTPUT as LIMIT_OUTPUT
from bench.measure import Sampler, cpu_shares, window
from bench.report import RATES, SHARES, Contender, Context, Measured, render
from bench.workload import (
    DEFAULT_SEED,
    INBOUND_TOPICS,
    Event,
    Params,
    Workload,
    generate,
    live_bookings,
)
from contracts import topics
from deploy import infra

log = logging.getLogger("bench")
NAIVE_GROUP = "bench-naive"
OURS_GROUP = "redemption"
STALL_S = 60.0

CONTENDERS = {
    "limit": Contender("limit", "limit: raw aiokafka pass-through, no database", 1),
    "naive": Contender("naive", "naive peer: FastStream guide style", 1),
    "ours-1": Contender("ours-1", "**ours, 1 process**", 1),
    "ours-2": Contender("ours-2", "**ours, 2 processes**", 2),
}
COMMANDS = {
    "limit": [sys.executable, "-m", "bench.limit"],
    "naive": [*FASTSTREAM, "bench.naive:app"],
    "ours-1": [*FASTSTREAM, "services.redemption.app:app"],
    "ours-2": [*FASTSTREAM, "services.redemption.app:app"],
}
GROUPS = {
    "limit": (LIMIT_GROUP, 1),
    "naive": (NAIVE_GROUP, len(INBOUND_TOPICS)),  # one consumer per subscriber
    "ours-1": (OURS_GROUP, 1),
    "ours-2": (OURS_GROUP, 2),
}
REFUSED_TOPICS = [topics.MESSAGE_REJECTED, *(topics.dlq(t) for t in INBOUND_TOPICS)]


@dataclass(frozen=True)
class Options:
    """What the command line asked for."""

    params: Params
    runs: int
    naive_events: int
    latency_seconds: float
    contenders: list[str]
    workdir: Path
    out: Path
    profile: bool


def bench_topics(partitions: int) -> dict[str, int]:
    """Every topic a run writes, with the partitions deployment gives it at this count."""
    names = [
        *INBOUND_TOPICS,
        *REFUSED_TOPICS,
        *OUTCOME_TOPICS,
        topics.RECORD_UPDATED,
        LIMIT_OUTPUT,
    ]
    return {n: topics.partitions(n, partitions) for n in names}


class Bench(harness.Stage):
    """One benchmark: the servers, the workload, and every run of every contender."""

    def __init__(
        self,
        options: Options,
        kafka_service: infra.KafkaService,
        postgres: infra.PostgresService,
        workload: Workload,
    ) -> None:
        super().__init__(kafka_service, postgres, "bench")
        self.o = options
        self.workload = workload
        self.results: list[Measured] = []

    async def run(self, sampler: Sampler) -> None:
        """Prepare once, then every run of every contender in turn."""
        await self.prepare(
            sampler,
            [OURS_GROUP, NAIVE_GROUP, LIMIT_GROUP],
            self.o.params.partitions,
            lambda engine: database.seed_bookings(engine, self.workload),
        )
        try:
            for run in range(1, self.o.runs + 1):
                for key in self.o.contenders:
                    result = await self.run_one(CONTENDERS[key], run, sampler)
                    self.results.append(result)
                    harness.logged(run, key, result.throughput, result.check)
        finally:
            await self.clean_up(bench_topics(6))

    async def run_one(self, contender: Contender, run: int, sampler: Sampler) -> Measured:
        """A clean start, the throughput phase, its check, then the latency phases."""
        naive = contender.key == "naive"
        events = self.workload.events[: self.o.naive_events] if naive else self.workload.events
        layout = bench_topics(self.o.params.partitions)
        db_url = await self.fresh_run(layout, events)
        watched = [LIMIT_OUTPUT] if contender.key == "limit" else list(OUTCOME_TOPICS)
        logs = self.o.workdir / "logs" / f"run{run}"
        expected = len(events) if contender.key == "limit" else _outcomes_due(events)
        measured = Measured(contender.key, run, len(events), math.nan, math.nan)
        command = COMMANDS[contender.key]
        names = [f"{contender.key}-{n}" for n in range(contender.processes)]
        consumers = harness.Consumers(dict.fromkeys(names, command), self.env(db_url), logs)
        try:
            sampler.watch("consumer", consumers.pids)
            phase = harness.Phase(sampler, lambda: self._profiler(contender, run, consumers))
            group, members = GROUPS[contender.key]
            settling = asyncio.create_task(kafka.settled_at(self.kafka_options, group, members))
            outcome_layout = harness.only(layout, watched)
            async with kafka.TopicReader(self.kafka_options, outcome_layout) as reader:
                got = await kafka.wait_for_outcomes(
                    reader, expected, STALL_S, consumers.alive, phase.start
                )
                before, after, wall = phase.end()
                settled = settling.result() if settling.done() else None
                settling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await settling
                outcomes = [kafka.outcome(r) for r in await reader.read_all()]
                _rate(measured, outcomes, settled, len(events) / expected)
                measured.cpu = cpu_shares(before, after, wall, SHARES)
                measured.check = await self._check(contender, events, outcomes, db_url)
                if got < expected:
                    measured.check.problems.insert(
                        0, f"only {got} of {expected} outcomes appeared (stalled or exited)"
                    )
                await self._latencies(contender, run, reader, measured)
            measured.peak_rss = list(sampler.peak_rss("consumer").values())
        finally:
            consumers.stop()
        return measured

    def _profiler(
        self, contender: Contender, run: int, consumers: harness.Consumers
    ) -> profile.Recording | None:
        if not (self.o.profile and contender.key == "ours-1" and run == 1):
            return None
        return profile.Recording(consumers.pids[0], self.o.out.parent / "profile-ours-1")

    async def _check(
        self, contender: Contender, events: list[Event], outcomes: list[Outcome], db_url: str
    ) -> CheckResult:
        name = f"{contender.key} checker"
        if contender.key == "limit":
            return check_passthrough(name, events, outcomes)
        reference = self.workload.reference(len(events))
        if contender.key == "naive":
            balances = await database.naive_balances(db_url)
            return check_redemption(name, events, outcomes, balances, reference)
        await _until_inbox_holds(db_url, len(events))
        layout = harness.only(bench_topics(self.o.params.partitions), REFUSED_TOPICS)
        refused = await kafka.refused(self.kafka_options, layout)
        return check_redemption(
            name,
            events,
            outcomes,
            await database.ours_balances(db_url),
            reference,
            inbox=await database.inbox(db_url),
            refused=refused,
        )

    async def _latencies(
        self, contender: Contender, run: int, reader: kafka.TopicReader, measured: Measured
    ) -> None:
        """Each offered rate in turn; a consumer that saturates is not offered the next."""
        seconds = self.o.latency_seconds
        for rate in RATES:
            bookings = live_bookings(self.workload, f"{contender.key}-{run}-{rate}")
            values = await kafka.offer(
                self.kafka_options,
                reader,
                bookings,
                rate=rate,
                seconds=seconds,
                drain_s=max(5.0, seconds),
            )
            measured.latency[rate] = values
            if any(math.isinf(v) for v in values):
                break


def _outcomes_due(events: list[Event]) -> int:
    """Booking outcomes the events must cause: edits that keep the service cause none."""
    return sum(1 for e in events if e.expect != "none")


def _rate(
    measured: Measured, outcomes: list[Outcome], settled: float | None, per_outcome: float
) -> None:
    """Events per second from the first outcome (or the group settling, if later) to the last."""
    stamps = [o.timestamp_ms for o in {o.event_id: o for o in outcomes}.values()]
    if not stamps:
        return
    found = window(stamps, per_outcome, settled)
    measured.throughput, measured.window_s = found.throughput, found.seconds
    if found.from_settled:
        measured.window_from = "the group settled"


async def _until_inbox_holds(url: str, count: int) -> None:
    """Edits cause no outcome: wait until the inbox has every event (or stops growing)."""
    last, progress_at = -1, time.monotonic()
    while time.monotonic() - progress_at < STALL_S:
        held = await database.inbox_count(url)
        if held >= count:
            return
        if held != last:
            last, progress_at = held, time.monotonic()
        await asyncio.sleep(0.2)


def _context(options: Options, bench: Bench, command: str) -> Context:
    p = options.params
    counts = Counter(e.topic for e in bench.workload.events)
    mean = sum(len(e.value) for e in bench.workload.events) / len(bench.workload.events)
    workload = (
        f"{counts[topics.BOOKING_CREATED]:,} booking.created + "
        f"{counts[topics.BOOKING_STATUS_CHANGED]:,} status changes + "
        f"{counts[topics.BOOKING_UPDATED]:,} edits = {len(bench.workload.events):,} events "
        f"(mean {mean:.0f} bytes) for {p.records:,} records of "
        f"{len(bench.workload.businesses):,} businesses, "
        f"keyed by client over {p.partitions} partitions, seed {p.seed}"
    )
    return Context(
        header=harness.header(bench, command, workload),
        naive_events=options.naive_events,
        runs=options.runs,
        latency_seconds=options.latency_seconds,
    )


def execute(options: Options, command: str) -> int:
    """Run the benchmark; print and write the table; 0 when every check passed."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    started = time.monotonic()
    workload = generate(options.params)
    log.info(
        "workload of %d events generated in %.1f s",
        len(workload.events),
        time.monotonic() - started,
    )
    with harness.servers(options.workdir) as (kafka_service, postgres, sampler):
        bench = Bench(options, kafka_service, postgres, workload)
        asyncio.run(bench.run(sampler))
    table = render(
        _context(options, bench, command),
        [CONTENDERS[k] for k in options.contenders],
        bench.results,
    )
    checks = [r.check for r in bench.results if r.check is not None]
    table += "\nChecks:\n\n" + "".join(
        f"- run {r.run}, {c.summary()}\n" for r, c in zip(bench.results, checks, strict=True)
    )
    harness.publish(table, options.out)
    return 0 if checks and all(c.ok for c in checks) else 1


app = typer.Typer(add_completion=False, help=__doc__, pretty_exceptions_enable=False)


@app.command()
def main(
    *,
    events: Annotated[int, typer.Option(help="booking.created events")] = 100_000,
    records: Annotated[int, typer.Option(help="package records, one client each")] = 2_000,
    businesses: Annotated[int, typer.Option(help="businesses the records belong to")] = 50,
    partitions: Annotated[int, typer.Option(help="partitions of each booking topic")] = 6,
    runs: harness.Runs = 3,
    naive_events: Annotated[int, typer.Option(help="events the naive peer runs on")] = 5_000,
    latency_seconds: Annotated[float, typer.Option(help="seconds per offered rate")] = 10.0,
    seed: harness.Seed = DEFAULT_SEED,
    contenders: Annotated[str, typer.Option(help="which consumers, comma-separated")] = ",".join(
        CONTENDERS
    ),
    workdir: harness.Workdir = ROOT / ".cache" / "bench",
    out: harness.Out = ROOT / "bench-results" / "latest.md",
    profile_ours: Annotated[
        bool, typer.Option("--profile", help="py-spy the first run of ours with 1 process")
    ] = False,
) -> None:
    """Measure ours against the raw limit and the naive peer on the same data."""
    chosen = [c.strip() for c in contenders.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CONTENDERS]
    if unknown or not chosen:
        raise typer.BadParameter(f"choose among {', '.join(CONTENDERS)}", param_hint="--contenders")
    options = Options(
        params=Params(
            events=events,
            records=records,
            businesses=businesses,
            partitions=partitions,
            seed=seed,
        ),
        runs=runs,
        naive_events=naive_events,
        latency_seconds=latency_seconds,
        contenders=chosen,
        workdir=workdir.resolve(),
        out=out.resolve(),
        profile=profile_ours,
    )
    raise typer.Exit(execute(options, harness.command_line("python -m bench")))
