"""Run the whole system on this machine: `python -m deploy.run` (what `scripts/run` does).

Kafka and PostgreSQL as `deploy.infra` finds or starts them, then the production roles, each
a process of its own: `packages migrate`, `packages topics`, four `packages worker <service>`
and `packages api`. Not part of the wheel: it is how a checkout runs, not what a cluster runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from deploy import infra
from services.kernel.service import HTTP_PORTS

SERVICES = ("catalog", "invoicing", "records", "redemption")
PACKAGES = [sys.executable, "-m", "services.cli"]

app = typer.Typer(add_completion=False)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@app.command()
def run(
    directory: Annotated[
        Path, typer.Option("--dir", help="Data and logs of this local run")
    ] = Path(".local/run"),
    http_port: Annotated[int, typer.Option(help="Port of the read API")] = 8080,
) -> None:
    """Run the whole system here: Kafka, PostgreSQL, the four services and the read API."""
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
            **{f"PACKAGES_{k.upper()}": str(v) for k, v in kafka.topic_settings().items()},
            # Local use: the read API answers without a token unless told otherwise (said below).
            "PACKAGES_API_AUTH": os.environ.get("PACKAGES_API_AUTH", "disabled"),
        }
        auth = env["PACKAGES_API_AUTH"]
        open_api = auth == "disabled"
        for step in ("migrate", "topics"):
            subprocess.run([*PACKAGES, step], env=env, check=True)
        # Each worker on its own health and metrics port, whatever PACKAGES_HTTP_PORT says.
        children = {
            name: _spawn(
                [*PACKAGES, "worker", name],
                {**env, "PACKAGES_HTTP_PORT": str(HTTP_PORTS[name])},
                directory / f"{name}.log",
            )
            for name in SERVICES
        }
        children["read-api"] = _spawn(
            [*PACKAGES, "api", "--host", "127.0.0.1", "--port", str(http_port)],
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
    return subprocess.Popen(argv, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


if __name__ == "__main__":
    app()
