"""Medians over runs, and the markdown table the README quotes."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.checker import CheckResult
from bench.measure import percentile

RATES = (1_000, 5_000)
SHARES = ("consumer", "kafka", "postgres")


@dataclass
class Measured:
    """What one run of one contender measured."""

    contender: str
    run: int
    events: int
    throughput: float
    window_s: float
    window_from: str = "the first outcome"
    latency: dict[int, list[float] | None] = field(default_factory=dict)
    peak_rss: list[int] = field(default_factory=list)
    cpu: dict[str, float | None] = field(default_factory=dict)
    check: CheckResult | None = None


@dataclass(frozen=True)
class Contender:
    """A consumer under test and how it reads in the table."""

    key: str
    label: str
    processes: int


@dataclass(frozen=True)
class Header:
    """What a benchmark's results are about: the command, the machine and the workload."""

    command: str
    when: str
    commit: str
    machine: str
    servers: str
    workload: str

    def lines(self, title: str) -> list[str]:
        """The results' first lines."""
        return [
            f"### {title} ({self.when})",
            "",
            "```",
            self.command,
            "```",
            "",
            f"Commit {self.commit}; {self.machine}; {self.servers}.",
            f"Workload: {self.workload}.",
        ]


@dataclass(frozen=True)
class Context:
    """The header, and how the redemption benchmark ran."""

    header: Header
    naive_events: int
    runs: int
    latency_seconds: float


def median(values: Sequence[float]) -> float:
    """The median of the values that are numbers; NaN when none is."""
    real = [v for v in values if not math.isnan(v)]
    return statistics.median(real) if real else math.nan


def throughput(results: Sequence[Measured]) -> float:
    """Median events per second."""
    return median([r.throughput for r in results])


def latency(results: Sequence[Measured], rate: int) -> tuple[float, float, float] | None:
    """Median over runs of p50, p95 and p99 in milliseconds; None where never offered."""
    offered = [r.latency.get(rate) for r in results]
    runs = [values for values in offered if values is not None]
    if not runs:
        return None
    return (
        median([percentile(v, 50) * 1000 for v in runs]),
        median([percentile(v, 95) * 1000 for v in runs]),
        median([percentile(v, 99) * 1000 for v in runs]),
    )


def _ms(value: float) -> str:
    if math.isinf(value):
        return "∞"
    if math.isnan(value):
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _latency_cell(results: Sequence[Measured], rate: int) -> str:
    found = latency(results, rate)
    if found is None:
        return "not offered (saturated below)"
    return " / ".join(_ms(v) for v in found)


def share(results: Sequence[Measured], name: str) -> str:
    """The median CPU share of a watched group, as a percentage."""
    values = [r.cpu.get(name) for r in results]
    real = [v for v in values if v is not None]
    return f"{median(real):.0%}" if real else "n/a"


def _rss(results: Sequence[Measured]) -> str:
    peaks = [max(r.peak_rss) / 2**20 for r in results if r.peak_rss]
    return f"{median(peaks):.0f}" if peaks else "n/a"


def checks(results: Sequence[Measured]) -> str:
    """OK, or how many runs failed their check."""
    checked = [r.check for r in results if r.check is not None]
    bad = sum(1 for c in checked if not c.ok)
    return "OK" if checked and not bad else f"{bad} of {len(checked)} runs FAILED"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and not math.isnan(a) and not math.isnan(b) else "n/a"


def render(context: Context, contenders: Sequence[Contender], results: Sequence[Measured]) -> str:
    """The results as markdown: the table, the ratios, how it was measured, every run."""
    by = {c.key: [r for r in results if r.contender == c.key] for c in contenders}
    lines = [
        *context.header.lines("Redemption benchmark"),
        "",
        "| consumer | events | throughput (events/s) "
        + "".join(f"| latency at {rate:,}/s p50 / p95 / p99 (ms) " for rate in RATES)
        + "| peak RSS per process (MB) | CPU consumer / Kafka / PostgreSQL "
        "| checks |",
        "|---|---:|---:|" + "---:|" * len(RATES) + "---:|---:|---|",
    ]
    for c in contenders:
        rs = by[c.key]
        if not rs:
            continue
        lines.append(
            f"| {c.label} | {rs[0].events:,} | {throughput(rs):,.0f} "
            + "".join(f"| {_latency_cell(rs, rate)} " for rate in RATES)
            + f"| {_rss(rs)} | "
            + " / ".join(share(rs, s) for s in SHARES)
            + f" | {checks(rs)} |"
        )
    lines += ["", *_ratios(by), "", *_notes(context), "", "Every run:", ""]
    for r in results:
        lat = ", ".join(
            f"p99 at {rate:,}/s {_ms(percentile(v, 99) * 1000)} ms"
            for rate, v in r.latency.items()
            if v is not None
        )
        lines.append(
            f"- run {r.run}, {r.contender}: {r.throughput:,.0f} events/s"
            f" (window {r.window_s:.2f} s from {r.window_from}){'; ' + lat if lat else ''}"
        )
    return "\n".join(lines) + "\n"


def _ratios(by: dict[str, list[Measured]]) -> list[str]:
    limit = throughput(by.get("limit", [])) if by.get("limit") else math.nan
    naive = throughput(by.get("naive", [])) if by.get("naive") else math.nan
    found = []
    for key, label in (("ours-1", "ours, 1 process"), ("ours-2", "ours, 2 processes")):
        if by.get(key):
            ours = throughput(by[key])
            found.append(
                f"- {label}: {_ratio(ours, limit)} x the limit, {_ratio(ours, naive)} x the naive"
                " peer (throughput)"
            )
    return ["Ratios (medians):", "", *found] if found else []


def _notes(context: Context) -> list[str]:
    return [
        f"Medians of {context.runs} run(s); each run of each consumer starts from fresh topics "
        "and a fresh copy of the seeded database.",
        "Throughput = inbound events / (last outcome's timestamp - first outcome's timestamp), "
        "for all three consumers alike; the events are preloaded before the consumer starts. "
        "Where the consumer group was still forming after the first outcome (members joining "
        "one by one: the naive peer's three subscribers, ours with 2 processes), the window "
        "starts once the group is stable and counts the outcomes inside it, each standing for "
        "events / outcomes of the run (edits cause none). "
        f"The naive peer runs on the first {context.naive_events:,} events of the same data: "
        "throughput is a rate, so it compares.",
        f"Latency: new bookings sent at the offered rate for {context.latency_seconds:g} s, "
        "each stamped `occurred_at` as it leaves; latency = outcome visible on its topic - "
        "occurred_at. ∞: some outcomes had not appeared when the wait ended (saturated); "
        "a consumer saturated at one rate is not offered the next.",
        "CPU: CPU seconds of the consumer process(es), the Kafka broker and every PostgreSQL "
        "process during the throughput phase (first outcome to last), as a share of all cores "
        "x that wall time (one busy process on 2 cores is 50%).",
    ]
