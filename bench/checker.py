"""Whether a run did exactly what the workload asks: one outcome each, and the right balances."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bench.workload import BalanceKey, Event, Expect
from contracts import topics

OUTCOME_TOPICS: dict[str, Expect] = {
    topics.PACKAGE_APPLIED: "applied",
    topics.PACKAGE_NOT_APPLIED: "not_applied",
    topics.PACKAGE_REMOVED: "removed",
}
SHOWN = 20


@dataclass(frozen=True, slots=True)
class Outcome:
    """An outbound event as read from its topic."""

    topic: str
    event_id: str
    causation_id: str | None
    timestamp_ms: int = 0
    record_id: str | None = None


@dataclass
class CheckResult:
    """What was checked and every problem found."""

    name: str
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems

    def summary(self) -> str:
        """One line, then the first problems."""
        if self.ok:
            return f"{self.name}: OK ({self.checked} events checked)"
        lines = [f"{self.name}: {len(self.problems)} problem(s) in {self.checked} events"]
        lines += [f"  - {p}" for p in self.problems[:SHOWN]]
        if len(self.problems) > SHOWN:
            lines.append(f"  - ... and {len(self.problems) - SHOWN} more")
        return "\n".join(lines)


class Sent(Protocol):
    """An inbound event of a run."""

    @property
    def topic(self) -> str: ...
    @property
    def event_id(self) -> str: ...


def delivery_problems(
    events: Sequence[Sent], inbox: Collection[str] | None, refused: Sequence[str]
) -> list[str]:
    """What was refused or dead-lettered, and each event the inbox misses or has extra."""
    # `inbox` is None for a consumer without one (the naive peer); `refused` describes what
    # reached `message.rejected` or a dead-letter topic, none of which the workloads cause.
    problems = [f"refused or dead-lettered: {r}" for r in refused]
    if inbox is not None:
        held = set(inbox)
        missing = [e for e in events if e.event_id not in held]
        problems += [f"{e.topic} {e.event_id} has no inbox row" for e in missing]
        extra = len(held - {e.event_id for e in events})
        if extra:
            problems.append(f"{extra} inbox rows for events that were never sent")
    return problems


def check_redemption(
    name: str,
    events: Sequence[Event],
    outcomes: Iterable[Outcome],
    balances: Mapping[BalanceKey, int],
    reference: Mapping[BalanceKey, int],
    *,
    inbox: Collection[str] | None = None,
    refused: Sequence[str] = (),
) -> CheckResult:
    """Each event has its one expected outcome, the inbox has each once, balances match."""
    result = CheckResult(name, checked=len(events))
    problems = result.problems
    problems += delivery_problems(events, inbox, refused)
    caused: dict[str | None, Counter[str]] = defaultdict(Counter)
    # Once per event_id: after a crash the relay may publish a row twice, which a consumer of
    # our topics recognises by its id.
    for o in {o.event_id: o for o in outcomes}.values():
        caused[o.causation_id][o.topic] += 1
    sent = {e.event_id for e in events}
    for e in events:
        got = caused.get(e.event_id, Counter())
        wanted = [t for t, kind in OUTCOME_TOPICS.items() if kind == e.expect]
        if sum(got.values()) == len(wanted) and all(got[t] == 1 for t in wanted):
            continue
        if not got:
            problems.append(
                f"{e.topic} {e.event_id} ({e.booking_id}): no outcome, wanted {e.expect}"
            )
        else:
            seen = ", ".join(f"{n} x {t}" for t, n in sorted(got.items()))
            problems.append(f"{e.topic} {e.event_id} ({e.booking_id}): {seen}, wanted {e.expect}")
    stray = sum(sum(c.values()) for cause, c in caused.items() if cause not in sent)
    if stray:
        problems.append(f"{stray} outcomes caused by no event of this run")
    for key in sorted(reference.keys() | balances.keys()):
        want, have = reference.get(key), balances.get(key)
        if want != have:
            business, client, service = key
            problems.append(
                f"{business}/{client} {service}: sessions_used {have}, reference count {want}"
            )
    return result


def check_passthrough(
    name: str, events: Sequence[Event], outcomes: Iterable[Outcome]
) -> CheckResult:
    """Each event passed through exactly once."""
    result = CheckResult(name, checked=len(events))
    counts = Counter(o.causation_id for o in {o.event_id: o for o in outcomes}.values())
    for e in events:
        if counts[e.event_id] != 1:
            result.problems.append(
                f"{e.topic} {e.event_id}: {counts[e.event_id]} outputs, wanted 1"
            )
    stray = counts.total() - sum(counts[e.event_id] for e in events)
    if stray:
        result.problems.append(f"{stray} outputs caused by no event of this run")
    return result
