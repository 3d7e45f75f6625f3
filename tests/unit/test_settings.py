"""Settings: Kafka SASL/SSL and PostgreSQL TLS reach the clients; bad ones stop a start; no leak."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import certifi
import pytest
from faststream.kafka.security import parse_security
from faststream.security import SASLPlaintext, SASLScram256, SASLScram512
from pydantic import ValidationError
from sqlalchemy import event

from services.kernel.db import make_engine
from services.kernel.settings import DAY_S, INBOX_MARGIN_S, Settings, describe, load_settings

ROOT = Path(__file__).resolve().parents[2]
PG_PASSWORD = "pg-Hunter2-salon"
KAFKA_PASSWORD = "kafka-Hunter2-salon"
SECRETS = (PG_PASSWORD, KAFKA_PASSWORD)
DATABASE_URL = f"postgresql+asyncpg://packages:{PG_PASSWORD}@db.salon.internal:5432/packages"
CA_BUNDLE = certifi.where()
SCRAM_512: dict[str, Any] = {
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "packages-svc",
    "kafka_sasl_password": KAFKA_PASSWORD,
    "kafka_ssl_cafile": CA_BUNDLE,
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets counts: the session's own addresses and variables are put aside."""
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name in [n for n in __import__("os").environ if n.startswith("PACKAGES_")]:
        monkeypatch.delenv(name)


# -- Kafka security -------------------------------------------------------------------------------


def test_plaintext_is_the_default_and_carries_no_security() -> None:
    settings = Settings(kafka_bootstrap_servers="kafka-1:9092, kafka-2:9092")
    assert settings.kafka_options() == {
        "bootstrap_servers": "kafka-1:9092,kafka-2:9092",
        "security_protocol": "PLAINTEXT",
    }
    assert settings.broker_security() is None


def test_sasl_ssl_with_scram_sha_512_maps_to_aiokafka_options() -> None:
    options = Settings(**SCRAM_512).kafka_options()
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "packages-svc",
        "sasl_plain_password": KAFKA_PASSWORD,
    }
    assert isinstance(context, ssl.SSLContext)
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert context.get_ca_certs(), "the given CA bundle is loaded"


def test_ssl_without_sasl_verifies_the_broker_and_sends_no_credentials() -> None:
    options = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=CA_BUNDLE).kafka_options()
    assert options["security_protocol"] == "SSL"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in options


@pytest.mark.parametrize(
    ("chosen", "security_type"),
    [
        pytest.param({"kafka_security_protocol": "SSL"}, None, id="SSL"),
        pytest.param(
            {**SCRAM_512, "kafka_security_protocol": "SASL_PLAINTEXT", "kafka_ssl_cafile": None},
            SASLScram512,
            id="SASL_PLAINTEXT SCRAM-SHA-512",
        ),
        pytest.param(
            {**SCRAM_512, "kafka_sasl_mechanism": "SCRAM-SHA-256"},
            SASLScram256,
            id="SASL_SSL SCRAM-SHA-256",
        ),
        pytest.param(
            {**SCRAM_512, "kafka_sasl_mechanism": "PLAIN"}, SASLPlaintext, id="SASL PLAIN"
        ),
        pytest.param(SCRAM_512, SASLScram512, id="SASL_SSL SCRAM-SHA-512"),
    ],
)
def test_faststream_s_broker_gets_the_same_security_as_the_clients(
    chosen: dict[str, Any], security_type: type[Any] | None
) -> None:
    settings = Settings(**chosen)
    security = settings.broker_security()
    if security_type is not None:
        assert type(security) is security_type
    broker = parse_security(security)
    clients = settings.kafka_options()
    for key in (
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
    ):
        assert broker.get(key) == clients.get(key), key
    assert isinstance(broker["ssl_context"], ssl.SSLContext) == ("ssl_context" in clients)


# -- PostgreSQL TLS -------------------------------------------------------------------------------


class _Intercepted(Exception):  # noqa: N818 - not an error: the connection is stopped on purpose
    """Raised instead of connecting, once the driver's arguments were seen."""


async def _driver_arguments(settings: Settings) -> dict[str, Any]:
    """What the engine hands asyncpg.connect, caught before any network traffic."""
    engine = make_engine(settings)
    seen: dict[str, Any] = {}

    @event.listens_for(engine.sync_engine, "do_connect")
    def intercept(_dialect: Any, _record: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        seen.update(kwargs)
        raise _Intercepted

    try:
        with pytest.raises(_Intercepted):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
    return seen


@pytest.mark.parametrize("mode", ["prefer", "require", "verify-full"])
async def test_postgres_tls_mode_reaches_the_driver(mode: str) -> None:
    arguments = await _driver_arguments(Settings(database_url=DATABASE_URL, database_ssl=mode))
    assert arguments["ssl"] == mode
    assert arguments["host"] == "db.salon.internal"


async def test_postgres_tls_is_off_unless_asked_for() -> None:
    assert "ssl" not in await _driver_arguments(Settings(database_url=DATABASE_URL))


def test_postgres_tls_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACKAGES_DATABASE_SSL", "verify-full")
    assert Settings().database_ssl == "verify-full"


def test_a_plain_postgresql_url_is_given_the_asyncpg_driver() -> None:
    url = Settings(database_url="postgresql://packages@db:5432/packages").database_url
    assert url.get_secret_value() == "postgresql+asyncpg://packages@db:5432/packages"


# -- bad settings stop the start ------------------------------------------------------------------

INVALID = [
    pytest.param(
        {"KAFKA_BOOTSTRAP_SERVERS": "kafka-1"},
        "KAFKA_BOOTSTRAP_SERVERS: must be host:port[,host:port...]",
        id="bootstrap without a port",
    ),
    pytest.param(
        {"KAFKA_BOOTSTRAP_SERVERS": " , "},
        "KAFKA_BOOTSTRAP_SERVERS: must be host:port[,host:port...]",
        id="empty bootstrap list",
    ),
    pytest.param(
        {"DATABASE_URL": f"mysql://packages:{PG_PASSWORD}@db/packages"},
        "DATABASE_URL: must be a postgresql:// or postgresql+asyncpg:// URL",
        id="not a postgres url",
    ),
    pytest.param(
        {"PACKAGES_KAFKA_SECURITY_PROTOCOL": "TLS"},
        "PACKAGES_KAFKA_SECURITY_PROTOCOL: Input should be 'PLAINTEXT', 'SSL',",
        id="unknown protocol",
    ),
    pytest.param(
        {"PACKAGES_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "PACKAGES_KAFKA_SASL_MECHANISM": "GSSAPI"},
        "PACKAGES_KAFKA_SASL_MECHANISM: Input should be 'PLAIN', 'SCRAM-SHA-256'",
        id="unknown sasl mechanism",
    ),
    pytest.param(
        {"PACKAGES_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
        "PACKAGES_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs PACKAGES_KAFKA_SASL_MECHANISM",
        id="sasl protocol without mechanism",
    ),
    pytest.param(
        {
            "PACKAGES_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "PACKAGES_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        },
        "PACKAGES_KAFKA_SASL_MECHANISM=SCRAM-SHA-512 needs PACKAGES_KAFKA_SASL_USERNAME "
        "and PACKAGES_KAFKA_SASL_PASSWORD",
        id="mechanism without credentials",
    ),
    pytest.param(
        {
            "PACKAGES_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "PACKAGES_KAFKA_SASL_MECHANISM": "PLAIN",
            "PACKAGES_KAFKA_SASL_USERNAME": "packages-svc",
            "PACKAGES_KAFKA_SASL_PASSWORD": "",
        },
        "PACKAGES_KAFKA_SASL_MECHANISM=PLAIN needs PACKAGES_KAFKA_SASL_USERNAME",
        id="mechanism with an empty password",
    ),
    pytest.param(
        {
            "PACKAGES_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "PACKAGES_KAFKA_SASL_USERNAME": "packages-svc",
            "PACKAGES_KAFKA_SASL_PASSWORD": KAFKA_PASSWORD,
        },
        "PACKAGES_KAFKA_SASL_MECHANISM needs PACKAGES_KAFKA_SECURITY_PROTOCOL SASL_SSL or "
        "SASL_PLAINTEXT, not PLAINTEXT",
        id="mechanism on a plaintext connection",
    ),
    pytest.param(
        {"PACKAGES_KAFKA_SECURITY_PROTOCOL": "SSL", "PACKAGES_KAFKA_SSL_CAFILE": "/etc/no-ca.pem"},
        "PACKAGES_KAFKA_SSL_CAFILE: no such file: /etc/no-ca.pem",
        id="missing ca file",
    ),
    pytest.param(
        {"PACKAGES_DATABASE_SSL": "on"},
        "PACKAGES_DATABASE_SSL: Input should be 'disable', 'prefer', 'require' or 'verify-full'",
        id="unknown postgres tls mode",
    ),
    pytest.param(
        {"PACKAGES_BATCH_MAX_RECORDS": "0"},
        "PACKAGES_BATCH_MAX_RECORDS: Input should be greater than or equal to 1",
        id="batch of nothing",
    ),
]


@pytest.mark.parametrize(("environment", "message"), INVALID)
def test_a_bad_setting_is_a_validation_error_that_hides_its_value(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], message: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "input_value" not in str(caught.value)
    assert not [s for s in SECRETS if s in str(caught.value)]


@pytest.mark.parametrize(("environment", "message"), INVALID)
def test_a_bad_setting_stops_the_start_with_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], message: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as caught:
        load_settings()
    line = str(caught.value.code)
    assert line.startswith("invalid settings: ")
    assert message in line
    assert "\n" not in line
    assert not [s for s in SECRETS if s in line]


def test_every_bad_setting_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1")
    monkeypatch.setenv("PACKAGES_MAX_ATTEMPTS", "many")
    with pytest.raises(SystemExit) as caught:
        load_settings()
    assert str(caught.value.code) == (
        "invalid settings: KAFKA_BOOTSTRAP_SERVERS: must be host:port[,host:port...]; "
        "PACKAGES_MAX_ATTEMPTS: Input should be a valid integer, "
        "unable to parse string as an integer"
    )


def _run_service(environment: dict[str, str], service: str = "catalog") -> tuple[int, str]:
    """Start a service process as production does; its exit code and everything it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "faststream", "run", f"services.{service}.app:app"],
        cwd=ROOT,
        # Port 0: no health server, whose fixed port another run on this machine may hold.
        env={
            "PATH": "/usr/bin:/bin",
            "PACKAGES_LOG_LEVEL": "DEBUG",
            "PACKAGES_HTTP_PORT": "0",
            **environment,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("service", ["catalog", "invoicing", "records", "redemption"])
def test_a_service_with_a_bad_setting_exits_with_one_clear_line(service: str) -> None:
    code, output = _run_service(
        {
            "DATABASE_URL": f"mysql://packages:{PG_PASSWORD}@db/packages",
            "PACKAGES_KAFKA_SECURITY_PROTOCOL": "TLS",
        },
        service,
    )
    assert code != 0
    assert output.strip() == (
        "invalid settings: DATABASE_URL: must be a postgresql:// or postgresql+asyncpg:// URL; "
        "PACKAGES_KAFKA_SECURITY_PROTOCOL: Input should be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' "
        "or 'SASL_SSL'"
    )


# -- secrets stay secret --------------------------------------------------------------------------


def test_no_secret_is_in_the_settings_repr_or_str() -> None:
    settings = Settings(database_url=DATABASE_URL, **SCRAM_512)
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert not [s for s in SECRETS if s in shown]
    assert "packages-svc" in repr(settings)  # the user name is no secret, and helps debugging


def test_no_secret_is_in_the_engine_or_its_url() -> None:
    engine = make_engine(Settings(database_url=DATABASE_URL))
    for shown in (repr(engine.sync_engine), repr(engine.url), str(engine.url)):
        assert PG_PASSWORD not in shown
        assert "packages:***@db.salon.internal" in shown


def _closed_port() -> int:
    """A local port nothing listens on: connections to it are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_a_service_start_logs_no_password_even_when_it_fails() -> None:
    port = _closed_port()
    code, output = _run_service(
        {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "DATABASE_URL": f"postgresql://packages:{PG_PASSWORD}@127.0.0.1:{port}/packages",
            "PACKAGES_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "PACKAGES_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "PACKAGES_KAFKA_SASL_USERNAME": "packages-svc",
            "PACKAGES_KAFKA_SASL_PASSWORD": KAFKA_PASSWORD,
            "PACKAGES_KAFKA_SSL_CAFILE": CA_BUNDLE,
        }
    )
    assert code != 0
    assert "DEBUG" in output, "the start logged at debug level"
    assert f"127.0.0.1:{port}" in output, "the start tried to reach Kafka"
    assert not [s for s in SECRETS if s in output]


def test_inbox_retention_must_outlast_the_topics_by_a_margin() -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(topic_retention_s=7 * DAY_S, inbox_retention_s=7.5 * DAY_S)
    assert "PACKAGES_INBOX_RETENTION_S must be at least PACKAGES_TOPIC_RETENTION_S" in describe(
        raised.value
    )
    Settings(topic_retention_s=7 * DAY_S, inbox_retention_s=7 * DAY_S + INBOX_MARGIN_S)
    defaults = Settings()
    assert defaults.inbox_retention_s >= defaults.topic_retention_s + INBOX_MARGIN_S
    assert defaults.outbox_retention_s == 7 * DAY_S


def test_lag_is_sampled_at_least_every_15_seconds() -> None:
    with pytest.raises(ValidationError):
        Settings(watch_interval_s=30)
