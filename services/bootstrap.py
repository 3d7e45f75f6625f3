"""Getting a database and a cluster ready: migrations and topics."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from services.kernel.settings import Settings
from services.ops import topics

MIGRATIONS = Path(__file__).parent / "migrations"


def migrate(database_url: str | None = None) -> None:
    """Apply every migration (each service's schema) up to the newest."""
    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    if database_url:
        config.attributes["database_url"] = database_url
    command.upgrade(config, "head")


async def create_topics(settings: Settings, default_partitions: int = 6) -> list[str]:
    """Apply the topics' declaration (services.ops.topics); returns the topics created."""
    return (await topics.apply(settings, topics.declared(settings, default_partitions))).created
