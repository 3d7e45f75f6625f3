"""`packages`: run the system locally and operate it (migrations, topics)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from services.bootstrap import create_topics, migrate
from services.kernel.settings import Settings

app = typer.Typer(
    help="Packages: service packages kept right.", no_args_is_help=True, add_completion=False
)
SERVICES = ("catalog", "invoicing", "records", "redemption")


@app.command("migrate")
def migrate_command() -> None:
    """Apply every migration to DATABASE_URL."""
    migrate(Settings().database_url.get_secret_value())
    typer.echo("database is at the newest migration")


@app.command("topics")
def topics_command() -> None:
    """Create every topic on KAFKA_BOOTSTRAP_SERVERS with explicit partition counts."""
    created = asyncio.run(create_topics(Settings()))
    typer.echo(f"created {len(created)} topics" if created else "every topic exists")


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@app.command("run")
def run_command(
    directory: Annotated[
        Path, typer.Option("--dir", help="Data and logs of this local run")
    ] = Path(".local/run"),
    http_port: Annotated[int, typer.Option(help="Port of the read API")] = 8080,
) -> None:
    """Run the whole system here: Kafka, PostgreSQL, the four services and the read API."""
    from deploy import infra

    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)
    with infra.kafka(directory) as kafka, infra.postgres(directory) as postgres:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "DATABASE_URL": postgres.url,
        }
        os.environ.update(env)
        migrate(postgres.url)
        asyncio.run(create_topics(Settings()))
        children = {
            name: _spawn(
                [sys.executable, "-m", "faststream", "run", f"services.{name}.app:app"],
                env,
                directory / f"{name}.log",
            )
            for name in SERVICES
        }
        children["read-api"] = _spawn(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "services.http.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(http_port),
            ],
            env,
            directory / "read-api.log",
        )
        typer.echo(
            f"Packages is running.\n"
            f"  Kafka:      {kafka.bootstrap_servers}\n"
            f"  PostgreSQL: {postgres.dsn}\n"
            f"  Read API:   http://127.0.0.1:{http_port}/docs  (health: /health/ready, /metrics)\n"
            f"  Logs:       {directory}/<service>.log\n"
            f"Press Ctrl-C to stop."
        )
        try:
            while all(p.poll() is None for p in children.values()):
                time.sleep(1)
            dead = [n for n, p in children.items() if p.poll() is not None]
            typer.echo(f"stopped because {', '.join(dead)} exited; see its log", err=True)
        except KeyboardInterrupt:
            typer.echo("stopping")
        finally:
            for p in children.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in children.values():
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


if __name__ == "__main__":
    app()
