"""A service's AsyncAPI document: each channel's message as it travels on Kafka.

FastStream documents what a subscriber's function is given, and ours are given whole batches
of several topics. On Kafka each message is one envelope of its own topic, keyed by the id
the contract names for that topic, and what cannot be taken is parked in `<topic>.dlq`: the
document says so, from the contract's models and topics.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

from faststream.specification import AsyncAPI
from faststream.specification.asyncapi.utils import move_pydantic_refs
from faststream.specification.asyncapi.v3_0_0.schema import ApplicationSchema
from pydantic import TypeAdapter

from contracts.base import Envelope
from contracts.topics import INBOUND, OUTBOUND, dlq, key_of
from services.kernel import dead_letters

SCHEMAS = "#/components/schemas/"
MESSAGES = "#/components/messages/"
KAFKA_BINDING = "0.4.0"

# What `x-error-code` says, for the platform's operators reading a letter.
ERROR_CODES = {
    "empty": "no value at all (a tombstone or zero bytes)",
    "too_large": "larger than a message may be",
    "not_json": "not JSON (or not UTF-8)",
    "too_deep": "JSON nested deeper than a message may be",
    "not_an_object": "JSON, but not one object",
    "invalid": "a field missing, of the wrong type or outside the contract's bounds",
    "wrong_event_type": "an event_type other than its topic",
    "handler_error": "well-formed, but its handling kept failing after every attempt",
}


class ContractAsyncAPI(AsyncAPI):
    """FastStream's AsyncAPI factory, its channels' messages described as they are sent."""

    def to_specification(self) -> ApplicationSchema:
        """The document FastStream makes, then each message as the platform sends it."""
        document = super().to_specification().to_jsonable()
        return ApplicationSchema.model_validate(as_sent(document))


def as_sent(document: dict[str, Any]) -> dict[str, Any]:
    """The document with one envelope and its key per message, and the dead-letter channels."""
    components = document.setdefault("components", {})
    messages = components.setdefault("messages", {})
    schemas = components.setdefault("schemas", {})
    channels = document.setdefault("channels", {})
    operations = document.setdefault("operations", {})
    for channel in list(channels.values()):
        topic = channel["address"]
        model = INBOUND[topic].model if topic in INBOUND else OUTBOUND.get(topic)
        if model is None:
            continue
        for reference in channel["messages"].values():
            message = messages[unquote(reference["$ref"].removeprefix(MESSAGES))]
            message.pop("correlationId", None)  # FastStream's own header: nobody sends it
            message["payload"] = _schema_of(Envelope[model], schemas)  # type: ignore[valid-type]
            message["bindings"] = _keyed(_key_schema(key_of(topic)))
        if topic in INBOUND:
            _add_dead_letters(topic, channel, channels, operations, messages)
    _drop_unused(components)
    return document


def _schema_of(model: Any, schemas: dict[str, Any]) -> dict[str, str]:
    """A reference to `model`'s JSON schema, added with its parts to `schemas`."""
    schema: dict[str, Any] = move_pydantic_refs(TypeAdapter(model).json_schema(), "$defs")
    named = {**schema.pop("$defs", {}), schema["title"]: schema}
    for name, part in named.items():
        if schemas.setdefault(name, part) != part:
            raise ValueError(f"two different schemas are named {name}")
    return {"$ref": SCHEMAS + quote(schema["title"], safe="")}


def _key_schema(field: str) -> dict[str, Any]:
    where = "the envelope's business_id" if field == "business_id" else f"data.{field}"
    return {
        "type": "string",
        "maxLength": 64,
        "description": f"The key: {where}, so that one {field}'s messages keep their order",
    }


def _keyed(key: dict[str, Any]) -> dict[str, Any]:
    return {"kafka": {"key": key, "bindingVersion": KAFKA_BINDING}}


def _add_dead_letters(
    topic: str,
    channel: dict[str, Any],
    channels: dict[str, Any],
    operations: dict[str, Any],
    messages: dict[str, Any],
) -> None:
    """`<topic>.dlq`: where the consumer parks what it cannot take from `topic`."""
    name = f"{dlq(topic)}:DeadLetters"
    messages[f"{name}:Message"] = {
        "title": f"{name}:Message",
        "summary": f"A message of {topic} that could not be taken, and why",
        "contentType": "application/octet-stream",
        "payload": {
            "description": (
                f"The original value, byte for byte as it arrived on {topic} (it may be"
                f" anything, JSON or not); absent when it was too large for the DLQ"
            ),
        },
        "headers": _dead_letter_headers(),
        "bindings": _keyed({"description": f"The original key, as it arrived on {topic}"}),
    }
    channels[name] = {
        "address": dlq(topic),
        "description": f"Parked messages of {topic}: what cannot be parsed or keeps failing",
        **({"servers": channel["servers"]} if "servers" in channel else {}),
        "messages": {"Message": {"$ref": MESSAGES + quote(f"{name}:Message", safe=":.")}},
        "bindings": {"kafka": {"topic": dlq(topic), "bindingVersion": KAFKA_BINDING}},
    }
    operations[name] = {
        "action": "send",
        "channel": {"$ref": "#/channels/" + quote(name, safe=":.")},
        "messages": [{"$ref": "#/channels/" + quote(name, safe=":.") + "/messages/Message"}],
    }


def _dead_letter_headers() -> dict[str, Any]:
    def text(description: str) -> dict[str, str]:
        return {"type": "string", "description": description}

    return {
        "type": "object",
        "description": "The original headers, untouched, and these",
        "properties": {
            dead_letters.ERROR_CODE: {
                **text(
                    "Why it was parked: " + "; ".join(f"{c}: {m}" for c, m in ERROR_CODES.items())
                ),
                "enum": list(ERROR_CODES),
            },
            dead_letters.ERROR: text("The error, in words (the fields at fault)"),
            dead_letters.ATTEMPTS: text("How many times it was tried (a decimal number)"),
            dead_letters.ORIGINAL_TOPIC: text("The topic it arrived on"),
            dead_letters.ORIGINAL_PARTITION: text("Its partition there (a decimal number)"),
            dead_letters.ORIGINAL_OFFSET: text("Its offset there (a decimal number)"),
            dead_letters.CONSUMER: text("The consumer group that parked it"),
            dead_letters.VALUE_OMITTED: text(
                "Only when the value is absent: its size in bytes (a decimal number)"
            ),
        },
        "required": [
            dead_letters.ERROR_CODE,
            dead_letters.ERROR,
            dead_letters.ATTEMPTS,
            dead_letters.ORIGINAL_TOPIC,
            dead_letters.ORIGINAL_PARTITION,
            dead_letters.ORIGINAL_OFFSET,
            dead_letters.CONSUMER,
        ],
    }


def _drop_unused(components: dict[str, Any]) -> None:
    """Keep only the schemas a message reaches: FastStream's batch payloads are gone."""
    schemas: dict[str, Any] = components["schemas"]
    reached: set[str] = set()
    todo: list[Any] = list(components["messages"].values())
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith(SCHEMAS):
                name = unquote(ref.removeprefix(SCHEMAS))
                if name not in reached:
                    reached.add(name)
                    todo.append(schemas[name])
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    components["schemas"] = {n: s for n, s in schemas.items() if n in reached}


__all__ = ["ERROR_CODES", "ContractAsyncAPI", "as_sent"]
