"""`python -m bench`: ours, the raw limit and the naive peer on the same data, side by side."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import psutil
import typer

from bench import database, kafka, profile
from bench.checker import (
    OUTCOME_TOPICS,
    CheckResult,
    Outcome,
    check_passthrough,
    check_redemption,
)
from bench.limit import GROUP as LIMIT_GROUP
from bench.limit import OUTPUT as LIMIT_OUTPUT
from bench.measure import Marks, Sampler, cpu_between, listening_pid
from bench.report import RATES, Contender, Context, Measured, render
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
from services.bootstrap import create_topics
from services.kernel.settings import Settings

log = logging.getLogger("bench")
ROOT = Path(__file__).resolve().parents[1]
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
    "limit": ["-m", "bench.limit"],
    "naive": ["-m", "faststream", "run", "bench.naive:app"],
    "ours-1": ["-m", "faststream", "run", "services.redemption.app:app"],
    "ours-2": ["-m", "faststream", "run", "services.redemption.app:app"],
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


class Consumers:
    """The consumer processes of one contender, each in its own process group."""

    def __init__(self, key: str, count: int, env: dict[str, str], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        for n in range(count):
            with (logs / f"{key}-{n}.log").open("ab") as out:
                self.procs.append(
                    subprocess.Popen(  # noqa: S603 - our own interpreter and modules
                        [sys.executable, *COMMANDS[key]],
                        cwd=ROOT,
                        env={**os.environ, **env},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    @property
    def pids(self) -> list[int]:
        """The processes' ids."""
        return [p.pid for p in self.procs]

    def alive(self) -> bool:
        """Every process still runs."""
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL whatever has not stopped after 20 s."""
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


class _Phase:
    """The throughput phase, from the first outcome: CPU marks and the profiler, if asked."""

    def __init__(self, sampler: Sampler, profiler: Callable[[], profile.Recording | None]) -> None:
        self._sampler = sampler
        self._profiler = profiler
        self._spy: profile.Recording | None = None
        self._before: Marks | None = None
        self._t0 = 0.0

    def start(self) -> None:
        """The first outcome is out: the consumer is past its start-up."""
        if self._before is None:
            self._before, self._t0 = self._sampler.mark(), time.monotonic()
            self._spy = self._profiler()

    def end(self) -> tuple[Marks, Marks, float]:
        """CPU marks at the start and now, and the seconds between them."""
        self.start()
        assert self._before is not None
        after, wall = self._sampler.mark(), time.monotonic() - self._t0
        if self._spy is not None:
            self._spy.stop()
        return self._before, after, max(wall, 0.001)


class Bench:
    """One benchmark: the servers, the workload, and every run of every contender."""

    def __init__(
        self,
        options: Options,
        kafka_service: infra.KafkaService,
        postgres: infra.PostgresService,
        workload: Workload,
    ) -> None:
        self.o = options
        self.kafka = kafka_service
        self.postgres = postgres
        self.workload = workload
        self.settings = Settings(kafka_bootstrap_servers=kafka_service.bootstrap_servers)
        self.kafka_options = self.settings.kafka_options()
        self.dbs = database.Databases(postgres.url, f"bench_{os.getpid()}")
        self.results: list[Measured] = []

    async def run(self, sampler: Sampler) -> None:
        """Prepare once, then every run of every contender in turn."""
        for group in (OURS_GROUP, NAIVE_GROUP, LIMIT_GROUP):
            if await kafka.group_in_use(self.kafka_options, group):
                raise RuntimeError(
                    f"consumer group {group!r} has members on this cluster: stop them (a "
                    "running redemption service, another benchmark) or use another cluster"
                )
        await create_topics(self.settings, self.o.params.partitions)
        started = time.monotonic()
        await self.dbs.prepare(self.workload)
        log.info("template database seeded in %.1f s", time.monotonic() - started)
        self._watch_servers(sampler)
        try:
            for run in range(1, self.o.runs + 1):
                for key in self.o.contenders:
                    result = await self.run_one(CONTENDERS[key], run, sampler)
                    self.results.append(result)
                    log.info(
                        "run %d %s: %.0f events/s; %s",
                        run,
                        key,
                        result.throughput,
                        result.check.summary() if result.check else "",
                    )
        finally:
            await self._clean_up()

    def _watch_servers(self, sampler: Sampler) -> None:
        """The broker and PostgreSQL processes, where they run on this host."""
        kafka_port = int(self.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])
        for group, port, name in (
            ("kafka", kafka_port, "java"),
            ("postgres", urlsplit(self.postgres.url).port or 5432, "postgres"),
        ):
            pid = listening_pid(port)
            if pid is not None and name in psutil.Process(pid).name():
                sampler.watch(group, [pid])
            else:
                log.warning("no local %s process on port %d: its CPU is not reported", name, port)

    async def _clean_up(self) -> None:
        """Leave the cluster as deployment has it, and drop the benchmark's databases."""
        try:
            await kafka.reset_topics(self.kafka_options, bench_topics(6))
            await create_topics(self.settings)
        except Exception:  # the results stand; say what is left behind
            log.warning("could not restore the booking topics", exc_info=True)
        await self.dbs.drop()

    async def run_one(self, contender: Contender, run: int, sampler: Sampler) -> Measured:
        """A clean start, the throughput phase, its check, then the latency phases."""
        naive = contender.key == "naive"
        events = self.workload.events[: self.o.naive_events] if naive else self.workload.events
        layout = bench_topics(self.o.params.partitions)
        await kafka.reset_topics(self.kafka_options, layout)
        db_url = await self.dbs.fresh()
        await kafka.preload(self.kafka_options, events)
        env = {"KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers, "DATABASE_URL": db_url}
        watched = [LIMIT_OUTPUT] if contender.key == "limit" else list(OUTCOME_TOPICS)
        logs = self.o.workdir / "logs" / f"run{run}"
        expected = len(events) if contender.key == "limit" else _outcomes_due(events)
        measured = Measured(contender.key, run, len(events), math.nan, math.nan)
        consumers = Consumers(contender.key, contender.processes, env, logs)
        try:
            sampler.watch("consumer", consumers.pids)
            phase = _Phase(sampler, lambda: self._profiler(contender, run, consumers))
            group, members = GROUPS[contender.key]
            settling = asyncio.create_task(kafka.settled_at(self.kafka_options, group, members))
            async with kafka.TopicReader(self.kafka_options, _only(layout, watched)) as reader:
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
                cores = psutil.cpu_count() or 1
                for watched_group in ("consumer", "kafka", "postgres"):
                    spent = cpu_between(before, after, watched_group)
                    measured.cpu[watched_group] = None if spent is None else spent / (cores * wall)
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
        self, contender: Contender, run: int, consumers: Consumers
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
        layout = _only(bench_topics(self.o.params.partitions), REFUSED_TOPICS)
        async with kafka.TopicReader(self.kafka_options, layout) as reader:
            refused = [f"{r.topic}: {(r.value or b'')[:300]!r}" for r in await reader.read_all()]
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


def _only(layout: dict[str, int], names: list[str]) -> dict[str, int]:
    return {n: layout[n] for n in names}


def _outcomes_due(events: list[Event]) -> int:
    """Booking outcomes the events must cause: edits that keep the service cause none."""
    return sum(1 for e in events if e.expect != "none")


def _rate(
    measured: Measured, outcomes: list[Outcome], settled: float | None, per_outcome: float
) -> None:
    """Events per second from the first outcome (or the group settling, if later) to the last."""
    # Each outcome in the window stands for `per_outcome` events (edits cause none); when the
    # window starts at the first outcome, that is simply all the events.
    stamps = sorted(o.timestamp_ms for o in {o.event_id: o for o in outcomes}.values())
    if not stamps:
        return
    start = stamps[0]
    # Only a group of several members rebalances once outcomes flow (the last joiner takes
    # partitions from the first); half a second keeps polling lag from trimming the window.
    if settled is not None and stamps[0] + 500 < settled * 1000 < stamps[-1]:
        start = int(settled * 1000)
        measured.window_from = "the group settled"
    counted = sum(1 for t in stamps if t >= start)
    window = max((stamps[-1] - start) / 1000, 0.001)
    measured.window_s = window
    measured.throughput = counted * per_outcome / window


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


def _commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(  # noqa: S603 - fixed arguments
            ["git", *args],  # noqa: S607 - git from PATH, as a developer runs it
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip()

    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    return sha + (" with uncommitted changes" if git("status", "--porcelain") else "")


def _context(options: Options, bench: Bench, command: str) -> Context:
    p = options.params
    counts = Counter(e.topic for e in bench.workload.events)
    mean = sum(len(e.value) for e in bench.workload.events) / len(bench.workload.events)
    return Context(
        command=command,
        when=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        commit=_commit(),
        machine=f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB",
        servers=f"Kafka ({bench.kafka.origin}) and PostgreSQL ({bench.postgres.origin}) "
        "on the same machine"
        if bench.kafka.origin == "local"
        else f"Kafka ({bench.kafka.origin}), PostgreSQL ({bench.postgres.origin})",
        workload=(
            f"{counts[topics.BOOKING_CREATED]:,} booking.created + "
            f"{counts[topics.BOOKING_STATUS_CHANGED]:,} status changes + "
            f"{counts[topics.BOOKING_UPDATED]:,} edits = {len(bench.workload.events):,} events "
            f"(mean {mean:.0f} bytes) for {p.records:,} records of "
            f"{len(bench.workload.businesses):,} businesses, "
            f"keyed by client over {p.partitions} partitions, seed {p.seed}"
        ),
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
    options.workdir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(options.workdir / "logs", ignore_errors=True)  # this invocation's logs only
    with (
        infra.kafka(options.workdir) as kafka_service,
        infra.postgres(options.workdir) as postgres,
        Sampler() as sampler,
    ):
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
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(table)
    print(table)
    print(f"written to {options.out}")
    return 0 if checks and all(c.ok for c in checks) else 1


app = typer.Typer(add_completion=False, help=__doc__, pretty_exceptions_enable=False)


@app.command()
def main(
    *,
    events: Annotated[int, typer.Option(help="booking.created events")] = 100_000,
    records: Annotated[int, typer.Option(help="package records, one client each")] = 2_000,
    businesses: Annotated[int, typer.Option(help="businesses the records belong to")] = 50,
    partitions: Annotated[int, typer.Option(help="partitions of each booking topic")] = 6,
    runs: Annotated[int, typer.Option(help="runs of each consumer; medians are reported")] = 3,
    naive_events: Annotated[int, typer.Option(help="events the naive peer runs on")] = 5_000,
    latency_seconds: Annotated[float, typer.Option(help="seconds per offered rate")] = 10.0,
    seed: Annotated[int, typer.Option(help="the workload's random seed")] = DEFAULT_SEED,
    contenders: Annotated[str, typer.Option(help="which consumers, comma-separated")] = ",".join(
        CONTENDERS
    ),
    workdir: Annotated[Path, typer.Option(help="servers' data and consumers' logs")] = ROOT
    / ".cache"
    / "bench",
    out: Annotated[Path, typer.Option(help="where the markdown table goes")] = ROOT
    / "bench-results"
    / "latest.md",
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
    command = " ".join(["python -m bench", *sys.argv[1:]])
    raise typer.Exit(execute(options, command))
