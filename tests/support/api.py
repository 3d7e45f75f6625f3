"""The read API in a test: its own token issuer with keys made here, and a client that signs in."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from services.http.app import create_app
from services.kernel.settings import Settings

ISSUER = "https://platform.example/auth"
AUDIENCE = "packages-read-api"
EVERY_BUSINESS = ("*",)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def rsa_key() -> rsa.RSAPrivateKey:
    """A fresh RSA key, as an issuer holds."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_jwk(kid: str, key: PrivateKey) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": "ES256", "use": "sig"}


class Issuer:
    """The platform's token issuer as tests play it: RS256 and ES256 keys, published as a JWKS."""

    def __init__(self, directory: Path) -> None:
        self.jwks_file = directory / "jwks.json"
        self.keys: dict[str, PrivateKey] = {
            "rsa-1": rsa_key(),
            "ec-1": ec.generate_private_key(ec.SECP256R1()),
        }
        self.publish()

    def publish(self) -> None:
        """Write the public half of every key to the JWKS file."""
        keys = [_public_jwk(kid, key) for kid, key in self.keys.items()]
        self.jwks_file.write_bytes(orjson.dumps({"keys": keys}))

    def jwks(self) -> dict[str, Any]:
        """The published JWKS."""
        document: dict[str, Any] = orjson.loads(self.jwks_file.read_bytes())
        return document

    def settings(self, **overrides: Any) -> Settings:
        """Settings of a read API that trusts this issuer."""
        return Settings(
            **{
                "api_jwks_file": self.jwks_file,
                "api_jwt_issuer": ISSUER,
                "api_jwt_audience": AUDIENCE,
                **overrides,
            }
        )

    def token(
        self, businesses: Sequence[str] = EVERY_BUSINESS, *, kid: str = "rsa-1", **claims: Any
    ) -> str:
        """A token this issuer signs: valid for five minutes unless claims say otherwise."""
        key = self.keys[kid]
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        return sign({"businesses": list(businesses), **claims}, key, algorithm, kid=kid)


def sign(claims: dict[str, Any], key: Any, algorithm: str, *, kid: str | None = None) -> str:
    """A JWT with the usual claims (iss, aud, exp in five minutes) under what claims override."""
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, **claims}
    headers = {"kid": kid} if kid else None
    return jwt.encode(
        {k: v for k, v in payload.items() if v is not None}, key, algorithm, headers=headers
    )


def bearer(token: str) -> dict[str, str]:
    """The Authorization header carrying token."""
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def read_api(
    settings: Settings, token: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The read API started on settings, and a client sending token with every request."""
    app = create_app(settings)
    headers = bearer(token) if token else None
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api", headers=headers
        ) as client,
    ):
        yield client
