"""Tokens for Kafka's SASL OAUTHBEARER: from a file the platform keeps fresh, or an OAuth server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from aiokafka.abc import AbstractTokenProvider
from pydantic import SecretStr

# Renew this long before the server says a token expires, so no connection meets an expired one.
_RENEW_BEFORE_S = 60.0


class TokenUnavailableError(Exception):
    """No token could be had; the message never holds a secret."""


class FileTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """The token in a file that something else renews (a Kubernetes projected token, a sidecar)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    async def token(self) -> str:
        """The file's token, read at each connection so a renewed one is used at once."""
        try:
            text = await asyncio.to_thread(self._path.read_text)
        except OSError as exc:
            raise TokenUnavailableError(f"cannot read the token file {self._path}") from exc
        if not text.strip():
            raise TokenUnavailableError(f"the token file {self._path} is empty")
        return text.strip()


class ClientCredentialsTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """OAuth 2.0 client credentials (RFC 6749, 4.4): one token, renewed before it expires."""

    def __init__(
        self, url: str, client_id: str, client_secret: SecretStr, scope: str | None = None
    ) -> None:
        self._url = url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._lock = asyncio.Lock()
        self._token = ""
        self._renew_at = 0.0

    async def token(self) -> str:
        """A token that is good for a while yet: the one held, or a new one."""
        async with self._lock:
            if not self._token or time.monotonic() >= self._renew_at:
                self._token, lifetime = await self._fetch()
                self._renew_at = time.monotonic() + max(lifetime - _RENEW_BEFORE_S, lifetime / 2)
            return self._token

    async def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        auth = (self._client_id, self._client_secret.get_secret_value())
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                answer = await client.post(self._url, data=form, auth=auth)
        except httpx.HTTPError as exc:
            raise TokenUnavailableError(
                f"token endpoint {self._url}: {type(exc).__name__}"
            ) from None
        if answer.status_code != 200:
            raise TokenUnavailableError(f"token endpoint {self._url} answered {answer.status_code}")
        try:
            grant = answer.json()
            token, lifetime = str(grant["access_token"]), float(grant.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise TokenUnavailableError(f"token endpoint {self._url}: no access_token") from None
        return token, lifetime
