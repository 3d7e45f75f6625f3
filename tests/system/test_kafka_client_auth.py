"""Kafka that asks who is calling: a TLS listener requiring client certificates, and OAUTHBEARER.

A broker of its own, started here with certificates this test makes, and a database of its own,
so that what the services publish here goes nowhere else.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from deploy._process import free_port
from deploy.infra import PostgresService
from deploy.kafka_local import Listener, LocalKafka
from services.bootstrap import create_topics, migrate
from services.kernel.db import make_engine
from services.kernel.settings import Settings
from tests.support import events
from tests.support.flow import Platform
from tests.support.processes import ServiceProcess
from tests.support.tls import CertificateAuthority

pytestmark = pytest.mark.infra

KEY_PASSWORD = "client-key-Hunter2"


@dataclass(frozen=True)
class SecureKafka:
    """The broker's two guarded doors and what a client needs to pass them."""

    mtls: str
    oauth: str
    env_mtls: dict[str, str]
    env_oauth: dict[str, str]
    ca: Path

    def settings(self, env: dict[str, str]) -> Settings:
        """Settings of a process started with env."""
        fields: dict[str, Any] = {k.removeprefix("PACKAGES_").lower(): v for k, v in env.items()}
        return Settings(**fields)


def _unsigned_token(subject: str) -> str:
    """A token the broker's default (unsecured) OAUTHBEARER validator accepts: alg none."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"sub": subject, "iat": now, "exp": now + 3600}
    return f"{b64(orjson.dumps({'alg': 'none'}))}.{b64(orjson.dumps(claims))}."


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    home = tmp_path_factory.mktemp("secure-kafka")
    ca = CertificateAuthority(home)
    server = ca.issue("broker", server=True)
    client = ca.issue("packages-catalog", server=False, key_password=KEY_PASSWORD)
    keystore = home / "broker-keystore.pem"  # Kafka's PEM keystore: the key, then the chain
    keystore.write_bytes(server.key.read_bytes() + server.cert.read_bytes())
    tls = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(ca.cert),
    }
    mtls = Listener("MTLS", "SSL", free_port(), {**tls, "ssl.client.auth": "required"})
    oauth_module = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
    oauth = Listener(
        "OAUTH",
        "SASL_SSL",
        free_port(),
        {
            **tls,
            "sasl.enabled.mechanisms": "OAUTHBEARER",
            "oauthbearer.sasl.jaas.config": f"{oauth_module} required;",
        },
    )
    token = home / "token"
    token.write_text(_unsigned_token("packages-catalog"))
    with LocalKafka(home / "kafka", listeners=[mtls, oauth]):
        yield SecureKafka(
            mtls=mtls.address,
            oauth=oauth.address,
            env_mtls={
                "KAFKA_BOOTSTRAP_SERVERS": mtls.address,
                "PACKAGES_KAFKA_SECURITY_PROTOCOL": "SSL",
                "PACKAGES_KAFKA_SSL_CAFILE": str(ca.cert),
                "PACKAGES_KAFKA_SSL_CERTFILE": str(client.cert),
                "PACKAGES_KAFKA_SSL_KEYFILE": str(client.key),
                "PACKAGES_KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD,
            },
            env_oauth={
                "KAFKA_BOOTSTRAP_SERVERS": oauth.address,
                "PACKAGES_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "PACKAGES_KAFKA_SSL_CAFILE": str(ca.cert),
                "PACKAGES_KAFKA_SASL_MECHANISM": "OAUTHBEARER",
                "PACKAGES_KAFKA_SASL_OAUTH_TOKEN_FILE": str(token),
            },
            ca=ca.cert,
        )


@pytest.fixture(scope="module")
async def own_database(real_postgres: PostgresService) -> str:
    """A migrated database for this broker's services alone."""
    name = f"packages_kafka_auth_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(real_postgres.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = real_postgres.url.rsplit("/", 1)[0] + f"/{name}"
    await asyncio.to_thread(migrate, url)
    return url


@pytest.fixture(scope="module")
async def own_engine(own_database: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(Settings(database_url=own_database), pool_size=2)
    yield engine
    await engine.dispose()


async def _run_catalog(
    secure: SecureKafka, env: dict[str, str], database: str, engine: AsyncEngine, log: Path
) -> None:
    """The catalog consumes through this door, and its relay publishes through it."""
    settings = secure.settings(env)
    await create_topics(settings.model_copy(update={"topic_replication_factor": 1}))  # one broker
    catalog = ServiceProcess("catalog", {**env, "DATABASE_URL": database}, log).start()
    try:
        platform = Platform(env["KAFKA_BOOTSTRAP_SERVERS"], engine, settings.kafka_options())
        business = events.new_business()
        # A free plan has no packages: the package is rejected, and the rejection published.
        package = events.package(business)
        await platform.send(events.plan(business, "free"))
        await platform.send(package)
        assert await platform.outcome(package) == ("rejected", "not_entitled"), catalog.log_tail()
        await _published(engine, package["event_id"])
    finally:
        catalog.stop()


async def _published(engine: AsyncEngine, cause: str, timeout: float = 60.0) -> None:  # noqa: ASYNC109
    query = text(
        "SELECT count(*) FROM catalog.outbox WHERE causation_id = :c AND sent_at IS NOT NULL"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with engine.connect() as conn:
            if await conn.scalar(query, {"c": uuid.UUID(cause)}):
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the rejection was not published")


async def _refused(**options: Any) -> bool:
    """True where an admin client cannot list topics with these options."""
    admin = AIOKafkaAdminClient(**options, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 15)
        await asyncio.wait_for(admin.list_topics(), 15)
    except Exception:  # noqa: BLE001 - any failure to get through is a refusal
        return True
    finally:
        await admin.close()
    return False


async def test_services_run_over_tls_with_a_client_certificate(
    secure_kafka: SecureKafka, own_database: str, own_engine: AsyncEngine, tmp_path: Path
) -> None:
    await _run_catalog(secure_kafka, secure_kafka.env_mtls, own_database, own_engine, tmp_path)


async def test_a_client_without_a_certificate_is_refused(secure_kafka: SecureKafka) -> None:
    with_cert = secure_kafka.settings(secure_kafka.env_mtls)
    assert not await _refused(**with_cert.kafka_options()), "the certificate should get through"
    mine = (
        "PACKAGES_KAFKA_SSL_CERTFILE",
        "PACKAGES_KAFKA_SSL_KEYFILE",
        "PACKAGES_KAFKA_SSL_KEY_PASSWORD",
    )
    without = secure_kafka.settings(
        {k: v for k, v in secure_kafka.env_mtls.items() if k not in mine}
    )
    assert await _refused(**without.kafka_options())
    assert await _refused(bootstrap_servers=secure_kafka.mtls)  # nor one without TLS at all


async def test_services_run_over_sasl_oauthbearer(
    secure_kafka: SecureKafka, own_database: str, own_engine: AsyncEngine, tmp_path: Path
) -> None:
    await _run_catalog(secure_kafka, secure_kafka.env_oauth, own_database, own_engine, tmp_path)


async def test_a_client_with_a_bad_token_is_refused(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    forged = tmp_path / "forged-token"
    forged.write_text("not-a-token")
    settings = secure_kafka.settings(
        {**secure_kafka.env_oauth, "PACKAGES_KAFKA_SASL_OAUTH_TOKEN_FILE": str(forged)}
    )
    assert await _refused(**settings.kafka_options())
