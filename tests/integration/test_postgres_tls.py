"""PACKAGES_DATABASE_SSL=verify-full against a local server with a certificate made here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from deploy.postgres_local import LocalPostgres, ServerCertificate
from services.kernel.db import make_engine
from services.kernel.settings import Settings
from tests.support.tls import CertificateAuthority

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("postgres-ca"))


@pytest.fixture(scope="module")
def tls_postgres(ca: CertificateAuthority, workdir: Path) -> Iterator[LocalPostgres]:
    """A server that answers TLS with a certificate for 127.0.0.1 and localhost."""
    issued = ca.issue("postgres", server=True)
    server = LocalPostgres(
        workdir / "postgres-tls", max_connections=20, tls=ServerCertificate(issued.cert, issued.key)
    )
    with server:
        yield server


async def _ssl_in_use(settings: Settings) -> bool:
    engine = make_engine(settings, pool_size=1)
    try:
        async with engine.connect() as conn:
            query = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            return bool(await conn.scalar(text(query)))
    finally:
        await engine.dispose()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_verify_full_connects_over_tls_to_the_named_server(
    tls_postgres: LocalPostgres, ca: CertificateAuthority, host: str
) -> None:
    url = tls_postgres.url.replace("127.0.0.1", host)
    settings = Settings(database_url=url, database_ssl="verify-full", database_ssl_rootcert=ca.cert)
    assert await _ssl_in_use(settings)


async def test_verify_full_refuses_a_server_its_ca_did_not_sign(
    tls_postgres: LocalPostgres, tmp_path: Path
) -> None:
    stranger = CertificateAuthority(tmp_path, "Another CA")
    settings = Settings(
        database_url=tls_postgres.url,
        database_ssl="verify-full",
        database_ssl_rootcert=stranger.cert,
    )
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        await _ssl_in_use(settings)
