"""Who may do what: every inbound topic, sent by every role, is accepted or refused as the
contract says; a topic added without a row here fails the sweep."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from contracts.topics import INBOUND
from tests.support import events
from tests.support.flow import Platform

pytestmark = pytest.mark.infra
EXAMPLES = Path(__file__).resolve().parents[2] / "contracts" / "examples"
ROLES = ("owner", "staff", "client", "system")
ANYONE = frozenset(ROLES)

# topic: (the roles that may send it, the reason the others are refused with)
PERMITTED: dict[str, tuple[frozenset[str], str | None]] = {
    "business.plan_changed": (ANYONE, None),
    "business.settings_changed": (frozenset({"owner", "system"}), "not_permitted"),
    "package.created": (frozenset({"owner"}), "not_owner"),
    "package.updated": (frozenset({"owner"}), "not_owner"),
    "package.disabled": (frozenset({"owner"}), "not_owner"),
    "package.enabled": (frozenset({"owner"}), "not_owner"),
    "package.assigned": (frozenset({"owner", "staff", "system"}), "not_permitted"),
    "package_record.edit_requested": (frozenset({"owner", "staff"}), "not_permitted"),
    "invoice.published": (ANYONE, None),
    "invoice.paid": (ANYONE, None),
    "invoice.voided": (ANYONE, None),
    "booking.created": (ANYONE, None),
    "booking.updated": (ANYONE, None),
    "booking.status_changed": (ANYONE, None),
}


def _example(topic: str) -> dict[str, Any]:
    example: dict[str, Any] = json.loads((EXAMPLES / f"{topic}.json").read_text())
    return example


def _sent_by(topic: str, business: str, role: str) -> dict[str, Any]:
    """The contract's example of `topic`, in `business`, sent by an actor of `role`."""
    event = copy.deepcopy(_example(topic))
    event |= {
        "event_id": str(uuid.uuid4()),
        "business_id": business,
        "actor": {"user_id": f"u-{role}", "role": role},
    }
    return event


def test_every_inbound_topic_has_a_rule() -> None:
    assert set(PERMITTED) == set(INBOUND)


async def test_every_topic_from_every_role_is_accepted_or_refused_as_the_contract_says(
    platform: Platform,
) -> None:
    business = events.new_business()
    await platform.send(events.plan(business))
    sent = [(topic, role, _sent_by(topic, business, role)) for topic in PERMITTED for role in ROLES]
    await platform.send(*(event for *_, event in sent))
    for topic, role, event in sent:
        allowed, refusal = PERMITTED[topic]
        outcome, reason = await platform.outcome(event)
        if role in allowed:
            assert reason not in ("not_permitted", "not_owner"), (topic, role)
        else:
            assert (outcome, reason) == ("rejected", refusal), (topic, role)
