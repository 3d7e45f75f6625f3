"""`packages`: one command per role (worker, api, migrate, topics) and the operator's tools."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Coroutine
from typing import Annotated, Any, Literal, TypeVar

import typer

from services.bootstrap import migrate
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
    """Apply every migration to DATABASE_URL (a one-shot step before the workers start)."""
    migrate(load_settings().database_url.get_secret_value())
    typer.echo("database is at the newest migration")


@app.command("topics")
def topics_command(
    *,
    check: Annotated[
        bool, typer.Option("--check", help="Only report drift; exit 1 if there is any")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the declaration; touch no cluster")
    ] = False,
) -> None:
    """Apply the topics' declaration to KAFKA_BOOTSTRAP_SERVERS: create, grow, configure.

    Never lowers a partition count or deletes a topic. Replication and min.insync.replicas
    come from PACKAGES_TOPIC_REPLICATION_FACTOR (3) and PACKAGES_TOPIC_MIN_INSYNC_REPLICAS.
    """
    from services.ops import topics

    settings = load_settings()
    specs = topics.declared(settings)
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(s) for s in specs], indent=2))
        return
    if check:
        drift = _run(topics.drift(settings, specs))
        for d in drift:
            typer.echo(f"drift: {d}")
        typer.echo(f"{len(drift)} drifts in {len(specs)} topics" if drift else "no drift")
        if drift:
            raise typer.Exit(1)
        return
    done = _run(topics.apply(settings, specs))
    for verb, names in (
        ("created", done.created),
        ("grew partitions of", done.grown),
        ("set the declared configs of", done.reconfigured),
    ):
        if names:
            typer.echo(f"{verb} {len(names)} topics: {', '.join(names)}")
    for d in done.unfixable:
        typer.echo(f"left: {d}", err=True)
    if not (done.created or done.grown or done.reconfigured or done.unfixable):
        typer.echo("every topic is as declared")
    if done.unfixable:
        raise typer.Exit(1)


@app.command("worker")
def worker_command(
    service: Annotated[str, typer.Argument(help="catalog, invoicing, records or redemption")],
) -> None:
    """Run one consumer service until SIGTERM, which drains its batches and relay, then exits.

    Health and metrics on PACKAGES_HTTP_PORT when set (/health/live, /health/ready, /metrics).
    """
    if service not in SERVICES:
        raise typer.BadParameter(f"one of {', '.join(SERVICES)}", param_hint="SERVICE")
    _become([sys.executable, "-m", "faststream", "run", f"services.{service}.app:app"])


@app.command("api")
def api_command(
    *,
    host: Annotated[
        str, typer.Option(envvar="PACKAGES_API_HOST", help="Address to listen on")
    ] = "0.0.0.0",  # noqa: S104 - a container's port is reached from outside it
    port: Annotated[
        int, typer.Option(envvar="PACKAGES_HTTP_PORT", help="Port of the read API")
    ] = 8080,
    grace: Annotated[int, typer.Option(help="Seconds SIGTERM lets requests in flight finish")] = 20,
) -> None:
    """Run the read API (health on /health/live and /health/ready, metrics on /metrics)."""
    _become(
        [
            sys.executable, "-m", "uvicorn", "services.http.app:app",
            "--host", host, "--port", str(port),
            "--timeout-graceful-shutdown", str(grace), "--no-access-log",
        ]
    )  # fmt: skip


def _become(argv: list[str]) -> None:
    """Replace this process with argv, so that it gets the container's signals itself."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # noqa: S606 - argv is sys.executable and constants


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


if __name__ == "__main__":
    app()
