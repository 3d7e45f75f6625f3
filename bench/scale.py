"""`python -m bench.scale`: the scaling drill. A backlog of booking events, the redemption
service at one process, and another process started each time the lag metric says so (the rule
an autoscaler such as KEDA follows), up to three; the lag over time goes to a PNG.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import httpx
import typer
from prometheus_client.parser import text_string_to_metric_families

from bench import database, harness
from bench.harness import FASTSTREAM, ROOT
from bench.measure import Sampler
from bench.run import OURS_GROUP, bench_topics
from bench.workload import DEFAULT_SEED, Params, generate
from deploy import infra

log = logging.getLogger("bench")
COMMAND = [*FASTSTREAM, "services.redemption.app:app"]


@dataclass(frozen=True)
class Rule:
    """Processes wanted for a lag: one per `lag_per_process` messages behind, within bounds."""

    lag_per_process: int
    max_processes: int
    cooldown_s: float

    def wanted(self, lag: float) -> int:
        """How many processes this lag calls for."""
        return max(1, min(self.max_processes, math.ceil(lag / self.lag_per_process)))


@dataclass
class Drill:
    """What the drill saw: (seconds, lag, processes) every sample, and when each process began."""

    samples: list[tuple[float, float, int]] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)

    def drain_rates(self) -> list[tuple[int, float, float]]:
        """(processes, seconds at that count, messages drained per second) for each count."""
        rates = []
        for n in range(1, len(self.started_at) + 1):
            part = [(t, lag) for t, lag, p in self.samples if p == n]
            if len(part) >= 2:
                (t0, lag0), (t1, lag1) = part[0], part[-1]
                rates.append((n, t1 - t0, (lag0 - lag1) / max(t1 - t0, 1e-9)))
        return rates


class ScaleDrill(harness.Stage):
    """The servers, the backlog, and the processes the rule starts."""

    def __init__(
        self,
        kafka_service: infra.KafkaService,
        postgres: infra.PostgresService,
        params: Params,
        rule: Rule,
        logs: Path,
    ) -> None:
        super().__init__(kafka_service, postgres, "scale")
        self.params = params
        self.rule = rule
        self.logs = logs
        self.drill = Drill()

    async def run(self, sampler: Sampler) -> None:
        """Seed, preload the backlog, then scale on the lag until it is drained."""
        workload = generate(self.params)
        await self.prepare(
            sampler,
            [OURS_GROUP],
            self.params.partitions,
            lambda engine: database.seed_bookings(engine, workload),
        )
        processes: list[harness.Consumers] = []
        try:
            db_url = await self.fresh_run(bench_topics(self.params.partitions), workload.events)
            env = {**self.env(db_url), "PACKAGES_WATCH_INTERVAL_S": "1"}
            t0 = time.monotonic()
            async with httpx.AsyncClient(timeout=2) as client:
                while True:
                    now = time.monotonic() - t0
                    lag = await _lag(client, processes)
                    if lag is not None:
                        self.drill.samples.append((now, lag, len(processes)))
                        if lag == 0 and processes:
                            break
                    last = self.drill.started_at[-1] if self.drill.started_at else -math.inf
                    # The first process starts at once; the others only on a lag it reported.
                    due = self.rule.wanted(lag) if lag is not None else int(not processes)
                    if len(processes) < due and now - last >= self.rule.cooldown_s:
                        log.info("lag %s: starting process %d", lag, len(processes) + 1)
                        name = f"redemption-{len(processes) + 1}"
                        processes.append(harness.Consumers({name: COMMAND}, env, self.logs))
                        self.drill.started_at.append(now)
                    if processes and not all(p.alive() for p in processes):
                        raise RuntimeError(f"a redemption process exited; see {self.logs}")
                    await asyncio.sleep(0.5)
        finally:
            for p in processes:
                p.stop()
            await self.clean_up(bench_topics(6))


async def _lag(client: httpx.AsyncClient, processes: list[harness.Consumers]) -> float | None:
    """The group's lag as the workers' /metrics give it (each reports the whole group)."""
    seen: list[float] = []
    for p in processes:
        for port in p.http_ports.values():
            try:
                response = await client.get(f"http://127.0.0.1:{port}/metrics")
            except httpx.TransportError:
                continue  # still starting
            seen += [
                sum(s.value for s in family.samples)
                for family in text_string_to_metric_families(response.text)
                if family.name == "packages_consumer_lag" and family.samples
            ]
    return max(seen) if seen else None


def plot(drill: Drill, path: Path, title: str) -> None:
    """The lag over time, a line where each process started."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    ax.plot([t for t, _, _ in drill.samples], [lag for _, lag, _ in drill.samples], lw=2)
    for n, at in enumerate(drill.started_at, start=1):
        ax.axvline(at, color="grey", ls="--", lw=1)
        ax.annotate(f"{n} process{'es' if n > 1 else ''}", (at, 0), rotation=90, va="bottom")
    ax.set_xlabel("seconds since the first process started")
    ax.set_ylabel("packages_consumer_lag (messages)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def summary(drill: Drill, params: Params, rule: Rule, png: Path) -> str:
    """The drill's table in markdown."""
    total = drill.samples[-1][0] if drill.samples else math.nan
    shown = png.relative_to(ROOT) if png.is_relative_to(ROOT) else png
    lines = [
        f"Scaling drill: {params.events:,} booking.created events (with their updates and"
        f" status changes) preloaded on {params.partitions}"
        f" partitions; one more redemption process whenever lag / {rule.lag_per_process:,}"
        f" exceeds the processes running (at most {rule.max_processes}, {rule.cooldown_s:.0f} s"
        f" apart). Drained in {total:.1f} s. Lag over time: `{shown}`.",
        "",
        "| processes | started at (s) | seconds at that count | drained (messages/s) |",
        "|---:|---:|---:|---:|",
    ]
    rates = {n: (seconds, rate) for n, seconds, rate in drill.drain_rates()}
    for n, at in enumerate(drill.started_at, start=1):
        seconds, rate = rates.get(n, (math.nan, math.nan))
        lines.append(f"| {n} | {at:.1f} | {seconds:.1f} | {rate:,.0f} |")
    return "\n".join(lines) + "\n"


app = typer.Typer(add_completion=False, help=__doc__, pretty_exceptions_enable=False)


@app.command()
def main(
    *,
    events: Annotated[int, typer.Option(help="booking.created events in the backlog")] = 300_000,
    records: Annotated[int, typer.Option(help="package records, one client each")] = 2_000,
    partitions: Annotated[int, typer.Option(help="partitions of each booking topic")] = 6,
    lag_per_process: Annotated[
        int, typer.Option(help="the rule: a process per this many messages behind")
    ] = 30_000,
    max_processes: Annotated[int, typer.Option(help="never more processes than this")] = 3,
    cooldown: Annotated[float, typer.Option(help="seconds between two starts")] = 8.0,
    seed: harness.Seed = DEFAULT_SEED,
    workdir: harness.Workdir = ROOT / ".cache" / "bench-scale",
    out: harness.Out = ROOT / "bench-results" / "scale.md",
    png: Annotated[Path, typer.Option(help="where the plot goes")] = ROOT
    / "docs"
    / "performance"
    / "scale-drill.png",
) -> None:
    """Drain a backlog while the lag metric adds redemption processes; plot the lag."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    params = Params(events=events, records=records, partitions=partitions, seed=seed)
    rule = Rule(lag_per_process, max_processes, cooldown)
    with harness.servers(workdir.resolve()) as (kafka_service, postgres, sampler):
        drill = ScaleDrill(kafka_service, postgres, params, rule, workdir.resolve() / "logs")
        asyncio.run(drill.run(sampler))
    plot(
        drill.drill,
        png,
        f"redemption: the lag while the rule adds processes (up to {max_processes})",
    )
    harness.publish(summary(drill.drill, params, rule, png), out)


if __name__ == "__main__":
    app(prog_name="python -m bench.scale")
