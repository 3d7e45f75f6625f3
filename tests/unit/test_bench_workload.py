"""The benchmark's workload is reproducible and shaped as asked; its checker catches mistakes."""

from __future__ import annotations

import statistics
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pytest

from bench.checker import OUTCOME_TOPICS, Outcome, check_passthrough, check_redemption
from bench.workload import (
    CREATED,
    STATUS_CHANGED,
    UPDATED,
    Params,
    Workload,
    generate,
    live_bookings,
    stamped,
)
from contracts.codec import decode

SMALL = Params(events=2_000, records=60, businesses=6, partitions=3)
TOPIC_OF = {kind: topic for topic, kind in OUTCOME_TOPICS.items()}


@pytest.fixture(scope="module")
def workload() -> Workload:
    return generate(SMALL)


def _correct_outcomes(w: Workload) -> list[Outcome]:
    """What a flawless consumer publishes for the workload."""
    return [
        Outcome(TOPIC_OF[e.expect], str(uuid.uuid4()), e.event_id)
        for e in w.events
        if e.expect != "none"
    ]


def test_the_same_parameters_give_the_same_bytes(workload: Workload) -> None:
    again = generate(SMALL)
    assert [(e.topic, e.key, e.value) for e in again.events] == [
        (e.topic, e.key, e.value) for e in workload.events
    ]
    assert [e.value for e in again.earlier] == [e.value for e in workload.earlier]
    other = generate(replace(SMALL, seed=7))
    assert [e.value for e in other.events] != [e.value for e in workload.events]


def test_sizes_and_shares_are_as_asked(workload: Workload) -> None:
    topics = Counter(e.topic for e in workload.events)
    assert topics == {CREATED: 2_000, STATUS_CHANGED: 100, UPDATED: 100}
    assert len(workload.records) == 60
    assert len({r.client_id for r in workload.records}) == 60  # one client per record
    assert {r.business_id for r in workload.records} == set(workload.businesses)
    assert len(workload.businesses) == 6
    uncovered = sum(1 for e in workload.events if e.expect == "not_applied")
    assert 0.02 < uncovered / 2_000 < 0.09


def test_every_event_is_valid_and_keyed_by_its_client(workload: Workload) -> None:
    for e in [*workload.earlier, *workload.events]:
        envelope = decode(e.topic, e.value)
        assert str(envelope.event_id) == e.event_id
        assert e.key == envelope.data.client_id.encode() == e.client_id.encode()
    assert len({e.event_id for e in [*workload.earlier, *workload.events]}) == 2_400


def test_events_are_about_400_bytes(workload: Workload) -> None:
    sizes = [len(e.value) for e in workload.events]
    assert 380 <= statistics.mean(sizes) <= 520
    assert max(sizes) < 600


def test_changes_and_edits_concern_earlier_bookings_once_each(workload: Workload) -> None:
    earlier = {e.booking_id: e for e in workload.earlier}
    follow_ups = [e for e in workload.events if e.topic != CREATED]
    assert len({e.booking_id for e in follow_ups}) == len(follow_ups) == len(earlier)
    for e in follow_ups:
        before = earlier[e.booking_id]
        assert (e.business_id, e.client_id, e.service_id) == before.balance
    created = [e.booking_id for e in workload.events if e.topic == CREATED]
    assert len(set(created)) == len(created)
    assert not set(created) & set(earlier)


def test_an_edit_keeps_what_matching_depends_on(workload: Workload) -> None:
    earlier = {e.booking_id: orjson.loads(e.value)["data"] for e in workload.earlier}
    for e in workload.events:
        if e.topic == UPDATED:
            now, before = orjson.loads(e.value)["data"], earlier[e.booking_id]
            keys = ("client_id", "service_id", "use_package", "package_record_id")
            assert [now[k] for k in keys] == [before[k] for k in keys]
            assert now["version"] == before["version"] + 1


def test_no_record_runs_out(workload: Workload) -> None:
    taken = Counter(e.balance for e in workload.earlier)
    taken.update(e.balance for e in workload.events if e.expect == "applied")
    for (business_id, _, _), n in taken.items():
        assert n < workload.businesses[business_id].sessions


def test_the_reference_counts_earlier_bookings_and_the_burst(workload: Workload) -> None:
    before = workload.reference(0)
    assert sum(before.values()) == len(workload.earlier)
    after = workload.reference()
    applied = sum(1 for e in workload.events if e.expect == "applied")
    removed = sum(1 for e in workload.events if e.expect == "removed")
    assert sum(after.values()) == len(workload.earlier) + applied - removed


def test_live_bookings_are_new_and_stamped_when_sent(workload: Workload) -> None:
    stream = live_bookings(workload, "t")
    first, second = next(stream), next(stream)
    assert first.booking_id != second.booking_id
    at = datetime(2026, 3, 2, 9, 30, 0, 123456, tzinfo=UTC)
    assert decode(CREATED, stamped(first, at)).occurred_at == at


def test_the_checker_passes_a_correct_run(workload: Workload) -> None:
    outcomes = _correct_outcomes(workload)
    result = check_redemption(
        "ours",
        workload.events,
        outcomes + outcomes[:5],  # the relay published a few rows twice after a crash
        workload.reference(),
        workload.reference(),
        inbox=[e.event_id for e in workload.events],
    )
    assert result.ok, result.summary()


def test_the_checker_flags_a_missing_outcome(workload: Workload) -> None:
    outcomes = _correct_outcomes(workload)
    lost = outcomes.pop(10)
    result = check_redemption(
        "ours", workload.events, outcomes, workload.reference(), workload.reference()
    )
    assert len(result.problems) == 1
    assert lost.causation_id is not None
    assert lost.causation_id in result.problems[0]
    assert "no outcome" in result.problems[0]


def test_the_checker_flags_a_doubled_outcome(workload: Workload) -> None:
    outcomes = _correct_outcomes(workload)
    twin = replace(outcomes[3], event_id=str(uuid.uuid4()))
    result = check_redemption(
        "ours", workload.events, [*outcomes, twin], workload.reference(), workload.reference()
    )
    assert len(result.problems) == 1
    assert "2 x" in result.problems[0]


def test_the_checker_flags_the_wrong_kind_of_outcome(workload: Workload) -> None:
    outcomes = _correct_outcomes(workload)
    applied = next(i for i, o in enumerate(outcomes) if o.topic == TOPIC_OF["applied"])
    outcomes[applied] = replace(outcomes[applied], topic=TOPIC_OF["not_applied"])
    result = check_redemption(
        "ours", workload.events, outcomes, workload.reference(), workload.reference()
    )
    assert len(result.problems) == 1
    assert "wanted applied" in result.problems[0]


def test_the_checker_flags_a_wrong_balance(workload: Workload) -> None:
    balances = workload.reference()
    key = sorted(balances)[0]
    balances[key] += 1
    result = check_redemption(
        "ours", workload.events, _correct_outcomes(workload), balances, workload.reference()
    )
    assert len(result.problems) == 1
    assert key[1] in result.problems[0]
    assert "reference count" in result.problems[0]


def test_the_checker_flags_an_event_missing_from_the_inbox(workload: Workload) -> None:
    inbox = [e.event_id for e in workload.events][1:]
    result = check_redemption(
        "ours",
        workload.events,
        _correct_outcomes(workload),
        workload.reference(),
        workload.reference(),
        inbox=inbox,
    )
    assert result.problems == [
        f"{workload.events[0].topic} {workload.events[0].event_id} has no inbox row"
    ]


def test_the_checker_flags_what_was_refused(workload: Workload) -> None:
    result = check_redemption(
        "ours",
        workload.events,
        _correct_outcomes(workload),
        workload.reference(),
        workload.reference(),
        refused=["booking.created.dlq: ..."],
    )
    assert not result.ok


def test_the_pass_through_check_wants_one_output_per_event(workload: Workload) -> None:
    outputs = [Outcome("bench.passthrough", str(uuid.uuid4()), e.event_id) for e in workload.events]
    assert check_passthrough("limit", workload.events, outputs).ok
    twin = replace(outputs[-1], event_id=str(uuid.uuid4()))
    result = check_passthrough("limit", workload.events, [*outputs[1:], twin])
    assert len(result.problems) == 2
