"""Move a stopped service's consumer group back to the start (or end) of every topic it reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from aiokafka.errors import CommitFailedError

from services.kernel.settings import Settings
from services.ops import reading
from services.ops.subscriptions import SUBSCRIPTIONS

Target = Literal["earliest", "latest"]
IDLE_STATES = frozenset({"Empty", "Dead"})


class GroupActiveError(RuntimeError):
    """The group has members: its service is running, so its offsets must not be moved."""

    def __init__(self, group: str, state: str, members: list[str]) -> None:
        super().__init__(
            f"consumer group {group} is {state} with {len(members)} member(s)"
            f" ({', '.join(members) or 'joining'}): stop every {group} process first"
        )
        self.group = group
        self.members = members


@dataclass(frozen=True, slots=True)
class TopicMove:
    """How one topic's committed offsets moved, summed over its partitions."""

    topic: str
    partitions: int
    behind_before: int
    behind_after: int


def service_group(service: str) -> str:
    """The consumer group of a service (it is named as the service)."""
    if service not in SUBSCRIPTIONS:
        raise ValueError(f"{service} is not a service; one of: {', '.join(SUBSCRIPTIONS)}")
    return service


async def members(settings: Settings, group: str) -> tuple[str, list[str]]:
    """The group's state and its members as `client_id@host`."""
    async with reading.admin(settings) as admin:
        responses: list[Any] = await admin.describe_consumer_groups([group])
    for response in responses:
        for described in response.groups:
            error_code, name, state, _protocol_type, _protocol, found = described[:6]
            if name == group and not error_code:
                return state, [f"{m[1]}@{m[2].lstrip('/')}" for m in found]
    return "Dead", []


async def ensure_idle(settings: Settings, group: str) -> None:
    """Raise GroupActiveError unless the group has no members (its service is stopped)."""
    state, present = await members(settings, group)
    if present or state not in IDLE_STATES:
        raise GroupActiveError(group, state, present)


async def reset_group(settings: Settings, service: str, to: Target = "earliest") -> list[TopicMove]:
    """Commit the earliest (or latest) offsets for the service's group on every topic it reads.

    Refuses while the group has members; the broker refuses too if one joins meanwhile.
    """
    group = service_group(service)
    await ensure_idle(settings, group)
    tps = await reading.partitions(settings, SUBSCRIPTIONS[service])
    async with reading.consumer(settings, group) as kafka:
        first: dict[Any, int] = await kafka.beginning_offsets(tps)
        last: dict[Any, int] = await kafka.end_offsets(tps)
        committed = {tp: await kafka.committed(tp) for tp in tps}
        # No commit yet, or one retention has since deleted: the group would start at `first`.
        before = {tp: max(first[tp], committed[tp] or 0) for tp in tps}
        target = first if to == "earliest" else last
        kafka.assign(tps)
        try:
            await kafka.commit({tp: target[tp] for tp in tps})
        except CommitFailedError:
            # A member joined between the check and the commit: the broker took its side.
            state, present = await members(settings, group)
            raise GroupActiveError(group, state, present) from None
    return [
        TopicMove(
            topic,
            len(mine := [tp for tp in tps if tp.topic == topic]),
            sum(last[tp] - before[tp] for tp in mine),
            sum(last[tp] - target[tp] for tp in mine),
        )
        for topic in SUBSCRIPTIONS[service]
    ]
