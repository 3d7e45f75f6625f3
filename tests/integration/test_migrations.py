"""The migrations create exactly what the services' tables declare."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from deploy.infra import PostgresService
from services.bootstrap import MIGRATIONS


def test_the_migrated_database_matches_every_service_s_tables(
    real_postgres: PostgresService,
) -> None:
    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = real_postgres.url
    command.check(config)  # raises when autogenerate would find anything to change
