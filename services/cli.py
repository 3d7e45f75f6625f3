"""`packages`: run the system locally and operate it (migrations, topics, DLQ, groups)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, Literal, TypeVar

import typer

from services.bootstrap import create_topics, migrate
from services.kernel.settings import load_settings

app = typer.Typer(
    help="Packages: service packages kept right.", no_args_is_help=True, add_completion=False
)
dlq_app = typer.Typer(help="Dead-letter topics (<topic>.dlq).", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
SERVICES = ("catalog", "invoicing", "records", "redemption")
T = TypeVar("T")


@app.command("migrate")
def migrate_command() -> None:
    """Apply every migration to DATABASE_URL."""
    migrate(load_settings().database_url.get_secret_value())
    typer.echo("database is at the newest migration")


@app.command("topics")
def topics_command() -> None:
    """Create every topic on KAFKA_BOOTSTRAP_SERVERS with explicit partition counts."""
    created = asyncio.run(create_topics(load_settings()))
    typer.echo(f"created {len(created)} topics" if created else "every topic exists")


@dlq_app.command("replay")
def dlq_replay_command(
    topic: Annotated[str, typer.Argument(help="Inbound topic whose .dlq to replay")],
    *,
    error: Annotated[
        str | None, typer.Option("--error", metavar="CODE", help="Only this x-error-code")
    ] = None,
    event_type: Annotated[
        str | None, typer.Option("--event-type", metavar="TYPE", help="Only this event_type")
    ] = None,
    event_id: Annotated[
        list[str] | None, typer.Option("--event-id", metavar="ID", help="Only these event_ids")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would go; send nothing")
    ] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Replay at most N letters")] = None,
    from_start: Annotated[
        bool, typer.Option("--from-start", help="Forget what earlier replays sent; read it all")
    ] = False,
) -> None:
    """Send dead letters back to their topic, each once, with their original bytes and key."""
    from services.ops.replay import Selection, inbound_topic, replay

    try:
        origin = inbound_topic(topic)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="TOPIC") from None
    selection = Selection(error, event_type, frozenset(event_id or ()))
    report = _run(
        replay(
            load_settings(),
            origin,
            selection,
            dry_run=dry_run,
            limit=limit,
            from_start=from_start,
            progress=True,
        )
    )
    by_code = ", ".join(f"{code} {n}" for code, n in report.by_code.most_common()) or "none"
    if dry_run:
        typer.echo(f"would replay {len(report.taken)} of {origin}.dlq to {origin} ({by_code})")
        for letter in report.examples:
            typer.echo(
                f"  {letter.place} {letter.error_code} {letter.event_type or '-'}"
                f" {letter.event_id or '-'}: {' '.join(letter.error.split())[:120]}"
            )
    else:
        typer.echo(f"replayed {report.replayed} of {origin}.dlq to {origin} ({by_code})")
    typer.echo(f"skipped by filter: {report.skipped} (kept for a later replay)")
    if report.unroutable:
        typer.echo(f"left alone: {report.unroutable} naming an unknown x-original-topic")


@app.command("fate")
def fate_command(
    event_id: Annotated[str, typer.Argument(help="The message's event_id")],
) -> None:
    """Where a message ended: applied, duplicate, rejected (why) or dead-lettered (why)."""
    from services.ops.fate import fate

    seen = _run(fate(load_settings(), event_id))
    for sighting in seen:
        typer.echo(str(sighting))
    if not seen:
        typer.echo(f"{event_id}: not seen")
        raise typer.Exit(1)


@app.command("reset-group")
def reset_group_command(
    service: Annotated[str, typer.Argument(help="catalog, invoicing, records or redemption")],
    to: Annotated[
        Literal["earliest", "latest"], typer.Option("--to", help="Where the group restarts")
    ] = "earliest",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
) -> None:
    """Move a stopped service's consumer group to the start of every topic it reads."""
    from services.ops.reset import GroupActiveError, ensure_idle, reset_group, service_group
    from services.ops.subscriptions import SUBSCRIPTIONS

    try:
        group = service_group(service)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="SERVICE") from None
    topics = ", ".join(SUBSCRIPTIONS[service])
    try:
        _run(ensure_idle(load_settings(), group))
        if to == "earliest":
            typer.echo(
                f"{service} will read {topics} again from the start. Safe: its inbox recognises"
                " every event it has handled as a duplicate and changes nothing (deliveries"
                " grow); poison is dead-lettered again."
            )
        else:
            typer.echo(
                f"{service} will skip every message of {topics} it has not read yet:"
                " those messages will never be applied."
            )
        if not yes:
            typer.confirm("Go on?", abort=True)
        moves = _run(reset_group(load_settings(), service, to))
    except GroupActiveError as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(1) from None
    for m in moves:
        typer.echo(
            f"  {m.topic} ({m.partitions} partitions): {m.behind_before} to read before,"
            f" {m.behind_after} now"
        )
    typer.echo(f"group {group} reset to {to}; start {service} again")


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run a tool; a Kafka or database failure is one line on stderr, not a traceback."""
    from aiokafka.errors import KafkaError
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return asyncio.run(work)
    except (KafkaError, SQLAlchemyError, OSError, TimeoutError) as exc:
        typer.echo(f"failed: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from None


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
    from services.kernel.service import HTTP_PORTS

    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)
    with infra.kafka(directory) as kafka, infra.postgres(directory) as postgres:
        env = {
            # Logs read in a terminal here: text unless asked otherwise (JSON elsewhere).
            "PACKAGES_LOG_FORMAT": "text",
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "DATABASE_URL": postgres.url,
            # Local use: the read API answers without a token unless told otherwise (said below).
            "PACKAGES_API_AUTH": os.environ.get("PACKAGES_API_AUTH", "disabled"),
        }
        os.environ.update(env)
        auth = env["PACKAGES_API_AUTH"]
        open_api = auth == "disabled"
        migrate(postgres.url)
        asyncio.run(create_topics(load_settings()))
        # Each worker on its own health and metrics port, whatever PACKAGES_HTTP_PORT says.
        children = {
            name: _spawn(
                [sys.executable, "-m", "faststream", "run", f"services.{name}.app:app"],
                {**env, "PACKAGES_HTTP_PORT": str(HTTP_PORTS[name])},
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
        workers = "".join(
            f"  {name + ':':<12}http://127.0.0.1:{port}/metrics  (health: /health/live,"
            " /health/ready)\n"
            for name, port in HTTP_PORTS.items()
        )
        typer.echo(
            f"Packages is running.\n"
            f"  Kafka:      {kafka.bootstrap_servers}\n"
            f"  PostgreSQL: {postgres.dsn}\n"
            f"  Read API:   http://127.0.0.1:{http_port}/docs  (health: /health/ready, /metrics)\n"
            f"              PACKAGES_API_AUTH={auth}{' (no token: local use only)' * open_api}\n"
            f"{workers}"
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
    # argv is built above from sys.executable and constants, never from input.
    return subprocess.Popen(argv, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)  # noqa: S603


if __name__ == "__main__":
    app()
