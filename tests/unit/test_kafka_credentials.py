"""Kafka client certificates and OAUTHBEARER tokens: checked at start, handed on, never shown."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

import orjson
import pytest
from faststream.kafka.security import parse_security
from faststream.security import SASLOAuthBearer
from pydantic import SecretStr, ValidationError

from services.kernel.oauth import (
    ClientCredentialsTokenProvider,
    FileTokenProvider,
    TokenUnavailableError,
)
from services.kernel.settings import Settings
from tests.support.http_server import Request, serve
from tests.support.tls import CertificateAuthority, Issued

pytestmark = pytest.mark.usefixtures("no_packages_environment")

KEY_PASSWORD = "key-Hunter2-salon"
CLIENT_SECRET = "oauth-Hunter2-salon"


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path)


@pytest.fixture
def client(ca: CertificateAuthority) -> Issued:
    return ca.issue("packages-records", server=False, key_password=KEY_PASSWORD)


def _mtls(ca: CertificateAuthority, client: Issued, **more: Any) -> dict[str, Any]:
    return {
        "kafka_security_protocol": "SSL",
        "kafka_ssl_cafile": str(ca.cert),
        "kafka_ssl_certfile": client.cert,
        "kafka_ssl_keyfile": client.key,
        "kafka_ssl_key_password": KEY_PASSWORD,
        **more,
    }


# -- client certificates --------------------------------------------------------------------------


def test_a_client_certificate_reaches_the_clients_and_the_broker(
    ca: CertificateAuthority, client: Issued
) -> None:
    settings = Settings(**_mtls(ca, client))
    context = settings.kafka_options()["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    security = settings.broker_security()
    assert security is not None
    assert parse_security(security)["ssl_context"] is not None


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"kafka_ssl_keyfile": None, "kafka_ssl_key_password": None}, "go together"),
        ({"kafka_security_protocol": "PLAINTEXT"}, "needs PACKAGES_KAFKA_SECURITY_PROTOCOL SSL"),
        ({"kafka_ssl_key_password": "not-the-password"}, "do not load"),
        ({"kafka_ssl_key_password": None}, "do not load"),
        ({"kafka_ssl_certfile": "/nowhere/client.crt"}, "no such file"),
    ],
    ids=["cert without key", "not over TLS", "wrong password", "no password", "missing file"],
)
def test_a_bad_client_certificate_stops_the_start_without_showing_its_password(
    ca: CertificateAuthority, client: Issued, change: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValidationError, match=says) as refused:
        Settings(**_mtls(ca, client, **change))
    assert KEY_PASSWORD not in str(refused.value)
    assert "not-the-password" not in str(refused.value)


def test_an_unencrypted_key_needs_no_password(ca: CertificateAuthority) -> None:
    plain = ca.issue("packages-catalog", server=False)
    Settings(**_mtls(ca, plain, kafka_ssl_key_password=None))


# -- OAUTHBEARER ----------------------------------------------------------------------------------


def _oauth(**more: Any) -> dict[str, Any]:
    return {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "OAUTHBEARER",
        **more,
    }


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({}, "needs one of"),
        (
            {"kafka_sasl_oauth_token_file": __file__, "kafka_sasl_oauth_token_url": "https://a"},
            "needs one of",
        ),
        ({"kafka_sasl_oauth_token_url": "https://idp.example/token"}, "CLIENT_ID and"),
        (
            {
                "kafka_sasl_oauth_token_url": "http://idp.example/token",
                "kafka_sasl_oauth_client_id": "packages",
                "kafka_sasl_oauth_client_secret": CLIENT_SECRET,
            },
            "must be an https:// URL",
        ),
    ],
    ids=["no source", "two sources", "no client", "plain http"],
)
def test_oauthbearer_settings_are_checked_at_start(given: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says) as refused:
        Settings(**_oauth(**given))
    assert CLIENT_SECRET not in str(refused.value)


def test_oauthbearer_reaches_the_clients_and_the_broker_with_one_provider(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("header.claims.signature\n")
    settings = Settings(**_oauth(kafka_sasl_oauth_token_file=token))
    options = settings.kafka_options()
    assert options["sasl_mechanism"] == "OAUTHBEARER"
    assert isinstance(options["sasl_oauth_token_provider"], FileTokenProvider)
    assert options["sasl_oauth_token_provider"] is settings.kafka_token_provider
    security = settings.broker_security()
    assert isinstance(security, SASLOAuthBearer)
    broker = parse_security(security)
    assert (broker["security_protocol"], broker["sasl_mechanism"]) == ("SASL_SSL", "OAUTHBEARER")


async def test_a_token_file_is_read_at_each_connection(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first-token\n")
    provider = FileTokenProvider(path)
    assert await provider.token() == "first-token"
    path.write_text("renewed-token")
    assert await provider.token() == "renewed-token"
    path.write_text("")
    with pytest.raises(TokenUnavailableError, match="empty"):
        await provider.token()


async def test_client_credentials_fetch_one_token_until_it_nears_expiry() -> None:
    issued = iter(["token-1", "token-2"])

    def grant(request: Request) -> tuple[int, bytes]:
        return 200, orjson.dumps({"access_token": next(issued), "expires_in": 3600})

    with serve(grant) as idp:
        provider = ClientCredentialsTokenProvider(
            f"{idp.url}/oauth2/token", "packages", SecretStr(CLIENT_SECRET), "kafka"
        )
        assert [await provider.token() for _ in range(3)] == ["token-1"] * 3
    [request] = idp.requests
    assert request.body == b"grant_type=client_credentials&scope=kafka"
    basic = base64.b64decode(request.headers["Authorization"].removeprefix("Basic "))
    assert basic == f"packages:{CLIENT_SECRET}".encode()


async def test_a_refused_grant_names_the_endpoint_but_not_the_secret() -> None:
    with serve(lambda _request: (401, b'{"error": "invalid_client"}')) as idp:
        provider = ClientCredentialsTokenProvider(idp.url, "packages", SecretStr(CLIENT_SECRET))
        with pytest.raises(TokenUnavailableError, match="answered 401") as refused:
            await provider.token()
    assert CLIENT_SECRET not in str(refused.value)


def test_no_kafka_secret_is_in_the_settings_repr(ca: CertificateAuthority, client: Issued) -> None:
    for settings in (
        Settings(**_mtls(ca, client)),
        Settings(
            **_oauth(
                kafka_sasl_oauth_token_url="https://idp.example/token",
                kafka_sasl_oauth_client_id="packages",
                kafka_sasl_oauth_client_secret=CLIENT_SECRET,
            )
        ),
    ):
        for shown in (repr(settings), str(settings), settings.model_dump_json()):
            assert KEY_PASSWORD not in shown
            assert CLIENT_SECRET not in shown
