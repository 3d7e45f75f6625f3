"""Who is asking: Bearer JWTs checked against the issuer's keys, and the businesses they name."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKSet
from jwt.exceptions import PyJWKClientConnectionError

from services.kernel.settings import Settings

logger = logging.getLogger(__name__)

ALL_BUSINESSES = "*"
# What an issuer may sign with through a JWKS. HS256 is only ever a configured secret: an
# asymmetric public key must never be taken for an HMAC secret (algorithm confusion).
ASYMMETRIC = frozenset({"RS256", "ES256"})
_REQUIRED_CLAIMS = ["exp", "iss", "aud", "businesses"]


class UnauthorizedError(Exception):
    """The token is missing or fails a check; the caller is told nothing more."""


class KeysUnavailableError(Exception):
    """The issuer's keys cannot be fetched right now."""


@dataclass(frozen=True)
class Caller:
    """A verified caller and the businesses it may read."""

    businesses: frozenset[str]

    def may_read(self, business_id: str) -> bool:
        """True where the token names this business, or every business."""
        return ALL_BUSINESSES in self.businesses or business_id in self.businesses


EVERYONE = Caller(frozenset({ALL_BUSINESSES}))


class _FileKeys:
    """A JWKS file, read again whenever it changes: rotation is writing the new set."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._read = b""
        self._keys: list[PyJWK] = []

    def key(self, kid: str | None) -> PyJWK | None:
        with self._lock:
            try:
                # A few kilobytes: compared whole, since a timestamp may not tell a quick rewrite.
                raw = self._path.read_bytes()
                if raw != self._read:
                    self._keys = _usable(PyJWKSet.from_json(raw.decode()))
                    self._read = raw
            except (OSError, ValueError) as exc:
                raise KeysUnavailableError from exc
            return _match(self._keys, kid)


class _UrlKeys:
    """A JWKS URL, cached for five minutes and fetched again (at most every 30 s) for a new kid."""

    def __init__(self, url: str) -> None:
        self._client = PyJWKClient(url, cache_jwk_set=True, lifespan=300, timeout=5)

    def key(self, kid: str | None) -> PyJWK | None:
        if kid is None:
            return None
        try:
            found = self._client.get_signing_key(kid)
        except PyJWKClientConnectionError as exc:
            raise KeysUnavailableError from exc
        return found if found.algorithm_name in ASYMMETRIC else None


def _usable(keys: PyJWKSet) -> list[PyJWK]:
    return [k for k in keys.keys if k.algorithm_name in ASYMMETRIC]


def _match(keys: list[PyJWK], kid: str | None) -> PyJWK | None:
    """The key of this kid; without a kid, the only key there is."""
    if kid is None:
        return keys[0] if len(keys) == 1 else None
    return next((k for k in keys if k.key_id == kid), None)


class TokenVerifier:
    """Checks a token's signature, expiry, issuer and audience, and reads its businesses."""

    def __init__(self, settings: Settings) -> None:
        # verifier_for() makes sure of both: api_auth_problem()
        self._issuer = settings.api_jwt_issuer or ""
        self._audience = settings.api_jwt_audience or ""
        self._leeway = settings.api_jwt_leeway_s
        self._secret = settings.api_jwt_secret
        self._keys: _FileKeys | _UrlKeys | None = None
        if settings.api_jwks_file is not None:
            self._keys = _FileKeys(settings.api_jwks_file)
        elif settings.api_jwks_url is not None:
            self._keys = _UrlKeys(settings.api_jwks_url)

    def caller(self, token: str) -> Caller:
        """The caller a valid token speaks for; UnauthorizedError for anything else."""
        try:
            claims = self._decode(token)
        except jwt.PyJWTError as exc:
            logger.info("refused a token: %s", type(exc).__name__)
            raise UnauthorizedError from None
        businesses = claims.get("businesses")
        if not isinstance(businesses, list) or not all(isinstance(b, str) for b in businesses):
            logger.info("refused a token: its businesses claim is not a list of ids")
            raise UnauthorizedError
        return Caller(frozenset(businesses))

    def _decode(self, token: str) -> dict[str, Any]:
        if self._keys is None:
            assert self._secret is not None
            return self._checked(token, self._secret.get_secret_value(), "HS256")
        kid = jwt.get_unverified_header(token).get("kid")
        key = self._keys.key(kid if isinstance(kid, str) else None)
        if key is None:
            raise jwt.InvalidKeyError("no key of this kid")
        return self._checked(token, key.key, key.algorithm_name)

    def _checked(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=self._audience,
            issuer=self._issuer,
            leeway=self._leeway,
            options={"require": _REQUIRED_CLAIMS},
        )
        return claims


def verifier_for(settings: Settings) -> Callable[[str], Caller] | None:
    """What checks the read API's tokens; None when checks are disabled. Refuses a bad setup."""
    problem = settings.api_auth_problem()
    if problem is not None:
        raise SystemExit(f"invalid settings: {problem}")
    if settings.api_auth == "disabled":
        logger.warning("the read API answers without a token: PACKAGES_API_AUTH=disabled")
        return None
    return TokenVerifier(settings).caller
