"""Getting a database and a cluster ready: migrations and topics."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from alembic import command
from alembic.config import Config

from contracts.codec import MAX_MESSAGE_BYTES
from contracts.topics import ALL_TOPICS, DLQ_SUFFIX, partitions
from services.kernel.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"
# A letter is its message plus the error headers: a DLQ must take more than its topic does, or
# a message at the broker's limit could not be parked. Services produce up to 2 MiB requests.
DLQ_MAX_MESSAGE_BYTES = 2 * MAX_MESSAGE_BYTES


def topic_configs(topic: str) -> dict[str, str]:
    """The configuration a topic is created with, beside the broker's defaults."""
    return {"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)} if topic.endswith(DLQ_SUFFIX) else {}


def migrate(database_url: str | None = None) -> None:
    """Apply every migration (each service's schema) up to the newest."""
    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    if database_url:
        config.attributes["database_url"] = database_url
    command.upgrade(config, "head")


async def create_topics(settings: Settings, default_partitions: int = 6) -> list[str]:
    """Create every topic with an explicit partition count; returns the ones created."""
    admin = AIOKafkaAdminClient(**settings.kafka_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                t,
                num_partitions=partitions(t, default_partitions),
                replication_factor=settings.topic_replication_factor,
                topic_configs=topic_configs(t),
            )
            for t in ALL_TOPICS
            if t not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process was first
                await admin.create_topics(wanted)
        return [t.name for t in wanted]
    finally:
        await admin.close()


def create_topics_sync(settings: Settings) -> list[str]:
    """`create_topics` for synchronous callers."""
    return asyncio.run(create_topics(settings))
