"""Each service's AsyncAPI document in docs/asyncapi is what `faststream docs gen` makes now."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote

import orjson
import pytest

from contracts.codec import decode
from contracts.topics import INBOUND, MESSAGE_REJECTED, OUTBOUND, dlq, key_of
from services.kernel.dead_letters import ERROR, ERROR_CODE, ORIGINAL_TOPIC
from services.kernel.unit_of_work import UnitOfWork
from tests.support import events

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("catalog", "invoicing", "records", "redemption")


def generate(service: str, out: Path) -> None:
    """Run `faststream docs gen` for a service with the default settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS",)}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "faststream",
            "docs",
            "gen",
            f"services.{service}.app:app",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )


@pytest.mark.parametrize("service", SERVICES)
def test_the_kept_asyncapi_document_is_current(service: str, tmp_path: Path) -> None:
    fresh = tmp_path / f"{service}.json"
    generate(service, fresh)
    kept = ROOT / "docs" / "asyncapi" / f"{service}.json"
    assert kept.exists(), f"run: python -m tests.unit.test_asyncapi to write {kept}"
    assert json.loads(kept.read_text()) == json.loads(fresh.read_text()), (
        f"{kept} is stale: run `python -m tests.unit.test_asyncapi` and commit it"
    )


def _document(service: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (ROOT / "docs" / "asyncapi" / f"{service}.json").read_text()
    )
    return document


def _resolve(document: dict[str, Any], ref: str) -> Any:
    found: Any = document
    for part in ref.removeprefix("#/").split("/"):
        found = found[unquote(part)]
    return found


def _messages(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each channel's address and the one message it carries."""
    found = {}
    for channel in document["channels"].values():
        [message] = channel["messages"].values()
        found[channel["address"]] = _resolve(document, message["$ref"])
    return found


def test_the_documents_describe_the_payloads() -> None:
    document = _document("redemption")
    schemas = document["components"]["schemas"]
    assert "BookingSnapshot" in schemas
    assert "PackageApplied" in schemas
    assert schemas["BookingSnapshot"]["properties"]["booking_id"]["description"]


@pytest.mark.parametrize("service", SERVICES)
def test_each_channel_carries_one_envelope_of_its_topic_with_its_key(service: str) -> None:
    document = _document(service)
    messages = _messages(document)
    inbound = [t for t in messages if t in INBOUND]
    assert inbound, f"{service} consumes nothing?"
    for topic in [*inbound, *(t for t in messages if t in OUTBOUND)]:
        model = INBOUND[topic].model if topic in INBOUND else OUTBOUND[topic]
        payload = _resolve(document, messages[topic]["payload"]["$ref"])
        assert payload["type"] == "object", f"{topic}: one envelope, not a batch"
        assert payload["title"] == f"Envelope[{model.__name__}]"
        assert payload["properties"]["data"] == {"$ref": f"#/components/schemas/{model.__name__}"}
        key = messages[topic]["bindings"]["kafka"]["key"]
        assert key["type"] == "string"
        assert key_of(topic) in key["description"], topic


@pytest.mark.parametrize("service", SERVICES)
def test_each_consumed_topic_has_its_dead_letter_channel(service: str) -> None:
    document = _document(service)
    messages = _messages(document)
    for topic in [t for t in messages if t in INBOUND]:
        letter = messages[dlq(topic)]
        assert set(letter["headers"]["required"]) >= {ERROR_CODE, ERROR, ORIGINAL_TOPIC}
        assert "invalid" in letter["headers"]["properties"][ERROR_CODE]["enum"]
        assert "original key" in letter["bindings"]["kafka"]["key"]["description"]
        [sent] = [
            o
            for o in document["operations"].values()
            if _resolve(document, o["channel"]["$ref"])["address"] == dlq(topic)
        ]
        assert sent["action"] == "send"


def test_a_refusal_is_keyed_by_its_business_as_documented() -> None:
    booking = decode("booking.created", orjson.dumps(events.booking("b-lumen-spa", "bk-1")))
    uow = UnitOfWork(cast("Any", None), "redemption")
    uow.reject(booking, "not_permitted", "a client cannot do this")
    [refusal] = uow.outbox
    assert refusal.key == getattr(booking, key_of(MESSAGE_REJECTED)) == "b-lumen-spa"


def test_the_documents_show_the_contract_s_bounds() -> None:
    schemas = _document("catalog")["components"]["schemas"]
    assert schemas["ValidUntil"]["required"] == ["type", "date"]
    assert schemas["PackageService"]["properties"]["sessions"]["anyOf"][0]["minimum"] == 1
    amount = re.compile(schemas["Money"]["properties"]["amount"]["pattern"])
    assert amount.search("60.00")
    assert not amount.search("-60.00")
    percent = re.compile(schemas["PercentDiscount"]["properties"]["value"]["pattern"])
    assert [bool(percent.search(p)) for p in ("0", "100", "12.5", "101", "-1")] == [
        True,
        True,
        True,
        False,
        False,
    ]
    line = _document("invoicing")["components"]["schemas"]["PackageLine"]
    assert line["properties"]["quantity"]["minimum"] == 1


if __name__ == "__main__":
    for name in SERVICES:
        generate(name, ROOT / "docs" / "asyncapi" / f"{name}.json")
