"""Kafka and PostgreSQL for tests and for running the system: given, in Docker, or local.

An address in the environment wins (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL); otherwise
testcontainers starts the servers where a Docker daemon answers; otherwise the project starts
them itself from Kafka's jars and PostgreSQL's binaries (deploy.kafka_local, .postgres_local).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, Literal, Protocol

import typer

from deploy._process import InfraError, pid_alive, process_identity, wait_gone
from deploy.kafka_cluster import LocalKafkaCluster
from deploy.kafka_local import LocalKafka, default_cache_dir
from deploy.postgres_local import PG_DATABASE, PG_PASSWORD, PG_USER, LocalPostgres

__all__ = [
    "InfraError",
    "KafkaService",
    "Origin",
    "PostgresService",
    "app",
    "default_cache_dir",
    "docker_available",
    "kafka",
    "postgres",
]

logger = logging.getLogger(__name__)

Origin = Literal["env", "docker", "local"]
KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.1"
POSTGRES_IMAGE = "postgres:16"
MAX_CONNECTIONS = 200


class _Restartable(Protocol):
    """What a locally run server offers for fault tests."""

    def start(self, timeout: float = ...) -> None: ...
    def stop(self, timeout: float = ...) -> None: ...
    def restart(self, timeout: float = ...) -> None: ...
    def kill(self) -> None: ...


@dataclass(frozen=True)
class _Service:
    origin: Origin
    server: _Restartable | None

    @property
    def restartable(self) -> bool:
        """Tell whether stop()/start() work (only for servers this process started locally)."""
        return self.server is not None

    def _control(self) -> _Restartable:
        if self.server is None:
            raise InfraError(
                f"a server from {self.origin!r} cannot be stopped or started from here; "
                "fault tests need the local servers (unset the address variables, no Docker)"
            )
        return self.server

    def stop(self) -> None:
        """Stop the server (local servers only)."""
        self._control().stop()

    def start(self) -> None:
        """Start the server again on the same port and data (local servers only)."""
        self._control().start()

    def restart(self) -> None:
        """Stop and start the server again (local servers only)."""
        self._control().restart()

    def kill(self) -> None:
        """Crash the server with SIGKILL (local servers only); start() brings it back."""
        self._control().kill()


@dataclass(frozen=True)
class KafkaService(_Service):
    """A Kafka cluster to use: its bootstrap servers and, when local, its controls."""

    bootstrap_servers: str

    def topic_settings(self) -> dict[str, Any]:
        """Settings that fit topics to this cluster: one broker holds one replica of each."""
        return {} if self.origin == "env" else {"topic_replication_factor": 1}


@dataclass(frozen=True)
class PostgresService(_Service):
    """A PostgreSQL database to use: its SQLAlchemy URL and, when local, its controls."""

    url: str

    @property
    def dsn(self) -> str:
        """Return the plain postgresql:// DSN for asyncpg."""
        scheme, rest = self.url.split("://", 1)
        return f"{scheme.split('+', 1)[0]}://{rest}"


def docker_available(timeout: float = 2.0) -> bool:
    """Tell whether a Docker daemon answers a ping (the check testcontainers depends on)."""
    try:
        # Imported by name: the docker SDK ships no type information.
        docker = importlib.import_module("docker")
        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "no usable daemon"
        return False


@contextlib.contextmanager
def kafka(workdir: Path) -> Iterator[KafkaService]:
    """Yield a Kafka cluster: $KAFKA_BOOTSTRAP_SERVERS, else a container, else a local broker."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield KafkaService(origin="env", server=None, bootstrap_servers=given)
    elif docker_available():
        with _kafka_container() as bootstrap:
            yield KafkaService(origin="docker", server=None, bootstrap_servers=bootstrap)
    else:
        with LocalKafka(workdir / "kafka") as broker:
            yield KafkaService(
                origin="local", server=broker, bootstrap_servers=broker.bootstrap_servers
            )


@contextlib.contextmanager
def postgres(workdir: Path) -> Iterator[PostgresService]:
    """Yield a PostgreSQL database: $DATABASE_URL, else a container, else a local server."""
    given = os.environ.get("DATABASE_URL")
    if given:
        yield PostgresService(origin="env", server=None, url=given)
    elif docker_available():
        with _postgres_container() as url:
            yield PostgresService(origin="docker", server=None, url=url)
    else:
        with LocalPostgres(workdir / "postgres", max_connections=MAX_CONNECTIONS) as server:
            yield PostgresService(origin="local", server=server, url=server.url)


@contextlib.contextmanager
def _kafka_container() -> Iterator[str]:
    """Run a KRaft Kafka container and yield its bootstrap address."""
    from testcontainers.community.kafka import KafkaContainer

    container = KafkaContainer(KAFKA_IMAGE).with_kraft()
    # Same rule as the local broker: topics are created on purpose.
    container.with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    with container:
        bootstrap: str = container.get_bootstrap_server()
        yield bootstrap


@contextlib.contextmanager
def _postgres_container() -> Iterator[str]:
    """Run a PostgreSQL container and yield its asyncpg SQLAlchemy URL."""
    from testcontainers.community.postgres import PostgresContainer

    container = PostgresContainer(
        POSTGRES_IMAGE, username=PG_USER, password=PG_PASSWORD, dbname=PG_DATABASE
    )
    container.with_command(f"postgres -c max_connections={MAX_CONNECTIONS} -c fsync=off")
    with container:
        url: str = container.get_connection_url(driver="asyncpg")
        yield url


# ---- the command line: python -m deploy.infra up|down --dir .local ----

app = typer.Typer(
    help="Start or stop a local Kafka broker and PostgreSQL server (no Docker needed).",
    no_args_is_help=True,
    add_completion=False,
)
DirOption = Annotated[
    Path, typer.Option("--dir", help="Where the servers keep their data, logs and env file.")
]


@app.callback()
def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")


def _env_lines(broker: LocalKafka | LocalKafkaCluster, server: LocalPostgres) -> str:
    lines = f"KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}\nDATABASE_URL={server.url}\n"
    # Topics get a replica per broker, three at most (the production default).
    replicas = min(broker.size, 3) if isinstance(broker, LocalKafkaCluster) else 1
    return lines + f"PACKAGES_TOPIC_REPLICATION_FACTOR={replicas}\n"


def _running_up(directory: Path) -> int | None:
    """Return the pid of a live `up` for this dir, checked against its recorded identity."""
    try:
        identity = (directory / "infra.pid").read_text().strip()
        pid = int(identity.split(":", 1)[0])
    except (OSError, ValueError):
        return None
    return pid if process_identity(pid) == identity else None


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    """Turn SIGTERM into what SIGINT already raises, so both stop `up` the same way."""
    raise KeyboardInterrupt


def _stop_quietly(server: LocalKafka | LocalKafkaCluster | LocalPostgres) -> None:
    """Stop a server, logging rather than raising, so the other one is stopped too."""
    try:
        server.stop()
    except (InfraError, OSError):
        logger.exception("could not stop %s", server.data_dir)


@app.command()
def up(
    directory: DirOption = Path(".local"),
    brokers: Annotated[
        int, typer.Option(min=1, max=5, help="Kafka brokers: 3 for a replicated KRaft cluster")
    ] = 1,
) -> None:
    """Start both servers, print their addresses and run until SIGINT or SIGTERM."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    other = _running_up(directory)
    if other is not None:
        typer.echo(f"already running (pid {other}); see {directory / 'env'}", err=True)
        raise typer.Exit(1)
    (directory / "env").unlink(missing_ok=True)  # a killed `up` leaves a stale one
    pid_file = directory / "infra.pid"
    pid_file.write_text(f"{process_identity(os.getpid())}\n")
    broker: LocalKafka | LocalKafkaCluster = (
        LocalKafkaCluster(directory / "kafka-cluster", brokers)
        if brokers > 1
        else LocalKafka(directory / "kafka")
    )
    server = LocalPostgres(directory / "postgres", max_connections=MAX_CONNECTIONS)
    # Raising from the handler also cuts a slow start short; the finally block cleans up.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        broker.start()
        server.start()
        lines = _env_lines(broker, server)
        (directory / "env").write_text(lines)
        typer.echo(lines, nl=False)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        logger.info("stopping")
    except InfraError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from error
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        _stop_quietly(server)
        _stop_quietly(broker)
        (directory / "env").unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)


@app.command()
def down(directory: DirOption = Path(".local")) -> None:
    """Stop the servers an `up` started for this dir (also after that `up` was killed)."""
    directory = directory.resolve()
    pid = _running_up(directory)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        started = time.monotonic()
        if not wait_gone(lambda: pid_alive(pid), 60):
            typer.echo(f"`up` (pid {pid}) did not stop within 60 s", err=True)
            raise typer.Exit(1)
        logger.info("`up` stopped in %.1f s", time.monotonic() - started)
    # Leftovers of an `up` that was killed outright: the pid files still name them.
    LocalPostgres(directory / "postgres").stop()
    LocalKafka(directory / "kafka").stop()
    LocalKafkaCluster(directory / "kafka-cluster").stop()
    (directory / "env").unlink(missing_ok=True)
    (directory / "infra.pid").unlink(missing_ok=True)
    typer.echo("stopped")


if __name__ == "__main__":
    app()
