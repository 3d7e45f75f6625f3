"""Bytes to contract models and back, with errors a person can read."""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from contracts.base import Envelope
from contracts.topics import INBOUND

MAX_MESSAGE_BYTES = 1_048_576
MAX_JSON_DEPTH = 32


class MalformedMessage(ValueError):  # noqa: N818 - names what the message is
    """A message that cannot be decoded or does not match its topic's contract."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@cache
def _adapter(topic: str) -> TypeAdapter[Envelope[Any]]:
    spec = INBOUND[topic]
    return TypeAdapter(Envelope[spec.model])  # type: ignore[name-defined]


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of decoded JSON, stopping once past `limit`."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _readable(error: ValidationError) -> str:
    parts = []
    for e in error.errors()[:5]:
        where = ".".join(str(p) for p in e["loc"]) or "message"
        parts.append(f"{where}: {e['msg']}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _shallow_object(raw: bytes) -> dict[str, Any]:
    """The decoded JSON object, refused when it is not one or nests too deep."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson stops at its own depth limit before we can count: the same refusal either way.
        code = "too_deep" if exc.msg.startswith("depth limit") else "not_json"
        raise MalformedMessage(code, str(exc)) from None
    if not isinstance(doc, dict):
        raise MalformedMessage("not_an_object", "the message must be a JSON object")
    if _depth(doc, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise MalformedMessage("too_deep", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return doc


def decode(topic: str, raw: bytes | None) -> Envelope[Any]:
    """Decode and validate an inbound message of `topic`, or raise MalformedMessage."""
    if not raw:
        # A tombstone (null value) or zero bytes: nothing to decode either way.
        raise MalformedMessage("empty", "the message has no value")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MalformedMessage("too_large", f"{len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
    adapter = _adapter(topic)
    try:
        if raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH:
            # Only a message with that many brackets can nest too deep: look before validating.
            envelope = adapter.validate_python(_shallow_object(raw))
        else:
            envelope = adapter.validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            raise MalformedMessage("not_json", _readable(exc)) from None
        if errors[0]["loc"] == () and errors[0]["type"] == "model_type":
            raise MalformedMessage("not_an_object", "the message must be a JSON object") from None
        raise MalformedMessage("invalid", _readable(exc)) from None
    if envelope.event_type != topic:
        raise MalformedMessage(
            "wrong_event_type", f"event_type {envelope.event_type!r} on topic {topic!r}"
        )
    if INBOUND[topic].actor_required and envelope.actor is None:
        raise MalformedMessage("invalid", "actor: required on this topic")
    return envelope


def decode_stored(topic: str, document: dict[str, Any]) -> Envelope[Any]:
    """An envelope kept in the database as JSON, read back into its topic's model."""
    return _adapter(topic).validate_python(document)


def encode(envelope: Envelope[BaseModel]) -> bytes:
    """The JSON bytes of an outbound envelope."""
    return orjson.dumps(envelope.model_dump(mode="json"))
