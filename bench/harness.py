"""What every benchmark of the project runs on: servers, consumer processes, phases, the header."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import psutil
import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import database, kafka, profile
from bench.checker import CheckResult
from bench.measure import Marks, Sampler, listening_pid
from bench.report import Header
from deploy import infra
from deploy._process import free_port
from services.bootstrap import create_topics
from services.kernel.settings import Settings

log = logging.getLogger("bench")
ROOT = Path(__file__).resolve().parents[1]
FASTSTREAM = [sys.executable, "-m", "faststream", "run"]

# The command-line options every benchmark takes.
Runs = Annotated[int, typer.Option(help="runs of each consumer; medians are reported")]
Seed = Annotated[int, typer.Option(help="the workload's random seed")]
Workdir = Annotated[Path, typer.Option(help="servers' data and consumers' logs")]
Out = Annotated[Path, typer.Option(help="where the markdown goes")]


class Consumers:
    """Consumer processes, one per name, each in its own process group and with its own log."""

    def __init__(
        self, commands: Mapping[str, Sequence[str]], env: dict[str, str], logs: Path
    ) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        # Each process serves health and metrics as deployed, on a port of its own.
        self.http_ports = {name: free_port() for name in commands}
        for name, command in commands.items():
            with (logs / f"{name}.log").open("ab") as out:
                self.procs[name] = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
                    list(command),
                    cwd=ROOT,
                    env={**os.environ, "PACKAGES_HTTP_PORT": str(self.http_ports[name]), **env},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

    @property
    def pids(self) -> list[int]:
        """The processes' ids."""
        return [p.pid for p in self.procs.values()]

    def alive(self) -> bool:
        """Every process still runs."""
        return all(p.poll() is None for p in self.procs.values())

    def stop(self) -> None:
        """SIGTERM, then SIGKILL whatever has not stopped after 20 s."""
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


class Phase:
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


class Stage:
    """The servers a benchmark runs on: its databases, its topics, and the cluster put back."""

    def __init__(
        self, kafka_service: infra.KafkaService, postgres: infra.PostgresService, prefix: str
    ) -> None:
        self.kafka = kafka_service
        self.postgres = postgres
        self.settings = Settings(
            kafka_bootstrap_servers=kafka_service.bootstrap_servers,
            **kafka_service.topic_settings(),
        )
        self.kafka_options = self.settings.kafka_options()
        self.dbs = database.Databases(postgres.url, f"{prefix}_{os.getpid()}")

    async def prepare(
        self,
        sampler: Sampler,
        groups: Sequence[str],
        partitions: int,
        seed: Callable[[AsyncEngine], Awaitable[None]],
    ) -> None:
        """Refuse a cluster where the groups run; every topic; the seeded template; watchers."""
        for group in groups:
            if await kafka.group_in_use(self.kafka_options, group):
                raise RuntimeError(
                    f"consumer group {group!r} has members on this cluster: stop them (a "
                    "running service, another benchmark) or use another cluster"
                )
        await create_topics(self.settings, partitions)
        started = time.monotonic()
        await self.dbs.prepare(seed)
        log.info("template database seeded in %.1f s", time.monotonic() - started)
        watch_servers(sampler, self.kafka, self.postgres)

    async def fresh_run(self, layout: Mapping[str, int], events: Sequence[kafka.Sendable]) -> str:
        """Empty topics, a fresh database (its URL is returned) and the events preloaded."""
        await kafka.reset_topics(self.kafka_options, layout)
        db_url = await self.dbs.fresh()
        await kafka.preload(self.kafka_options, events)
        return db_url

    def env(self, db_url: str) -> dict[str, str]:
        """The servers' addresses, as a consumer process reads them."""
        return {"KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers, "DATABASE_URL": db_url}

    async def clean_up(self, deployed: Mapping[str, int]) -> None:
        """Leave the cluster as deployment has it, and drop the benchmark's databases."""
        try:
            await kafka.reset_topics(self.kafka_options, deployed)
            await create_topics(self.settings)
        except Exception:  # the results stand; say what is left behind
            log.warning("could not restore the topics %s", sorted(deployed), exc_info=True)
        await self.dbs.drop()


def logged(run: int, label: str, rate: float, check: CheckResult | None) -> None:
    """One line per run as it ends."""
    log.info("run %d %s: %.0f/s; %s", run, label, rate, check.summary() if check else "")


def watch_servers(
    sampler: Sampler, kafka_service: infra.KafkaService, postgres: infra.PostgresService
) -> None:
    """Watch the broker and PostgreSQL processes, where they run on this host."""
    kafka_port = int(kafka_service.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])
    for group, port, name in (
        ("kafka", kafka_port, "java"),
        ("postgres", urlsplit(postgres.url).port or 5432, "postgres"),
    ):
        pid = listening_pid(port)
        if pid is not None and name in psutil.Process(pid).name():
            sampler.watch(group, [pid])
        else:
            log.warning("no local %s process on port %d: its CPU is not reported", name, port)


@contextlib.contextmanager
def servers(
    workdir: Path,
) -> Iterator[tuple[infra.KafkaService, infra.PostgresService, Sampler]]:
    """Kafka and PostgreSQL as `deploy.infra` gives them, and a sampler; logs start empty."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(workdir / "logs", ignore_errors=True)  # this invocation's logs only
    with (
        infra.kafka(workdir) as kafka_service,
        infra.postgres(workdir) as postgres,
        Sampler() as sampler,
    ):
        yield kafka_service, postgres, sampler


def only(layout: Mapping[str, int], names: Sequence[str]) -> dict[str, int]:
    """The part of a topic layout naming these topics."""
    return {n: layout[n] for n in names}


def commit() -> str:
    """The commit measured, and whether the tree had uncommitted changes."""

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


def header(stage: Stage, command: str, workload: str) -> Header:
    """The results' header: this command, commit and machine, now."""
    return Header(
        command=command,
        when=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        commit=commit(),
        machine=machine(),
        servers=where(stage),
        workload=workload,
    )


def machine() -> str:
    """Cores and memory of this host."""
    return f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB"


def where(stage: Stage) -> str:
    """Where the servers ran."""
    kafka_origin, postgres_origin = stage.kafka.origin, stage.postgres.origin
    if kafka_origin == "local":
        return f"Kafka ({kafka_origin}) and PostgreSQL ({postgres_origin}) on the same machine"
    return f"Kafka ({kafka_origin}), PostgreSQL ({postgres_origin})"


def command_line(program: str) -> str:
    """How this benchmark was started."""
    return " ".join([program, *sys.argv[1:]])


def publish(text: str, out: Path) -> None:
    """Write the results where asked and print them."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"written to {out}")
