"""The read API's keys: which it trusts, how they rotate, and that it will not start without one."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from services.http import app as app_module
from services.http.app import create_app
from services.http.auth import KeysUnavailableError, TokenVerifier, UnauthorizedError
from services.kernel.settings import Settings
from tests.support.api import AUDIENCE, ISSUER, Issuer, read_api, rsa_key, sign
from tests.support.http_server import Served, serve

pytestmark = pytest.mark.usefixtures("no_packages_environment")

SECRET = "a-shared-secret-of-the-salon-platform-0042"
HS256: dict[str, Any] = {
    "api_jwt_secret": SECRET,
    "api_jwt_issuer": ISSUER,
    "api_jwt_audience": AUDIENCE,
}
LEAKED = b"an-hmac-secret-anyone-reading-the-jwks-knows"
NOWHERE = "postgresql+asyncpg://packages:pw@127.0.0.1:9/packages"


@pytest.fixture
def issuer(tmp_path: Path) -> Issuer:
    return Issuer(tmp_path)


# -- starting -------------------------------------------------------------------------------------


def test_the_api_refuses_to_start_without_a_key() -> None:
    with pytest.raises(SystemExit, match="PACKAGES_API_JWKS_FILE, PACKAGES_API_JWKS_URL or"):
        create_app(Settings())


def test_the_api_refuses_to_start_without_issuer_and_audience() -> None:
    with pytest.raises(SystemExit, match="PACKAGES_API_JWT_ISSUER and PACKAGES_API_JWT_AUDIENCE"):
        create_app(Settings(api_jwt_secret=SECRET))


async def test_disabled_auth_is_explicit_and_answers_without_a_token() -> None:
    async with read_api(Settings(api_auth="disabled", database_url=NOWHERE)) as client:
        # A NUL id never reaches the database, so this answers without one: not 401.
        answer = await client.get("/v1/businesses/biz-1/package-records/%00")
    assert answer.status_code == 404


def test_uvicorn_s_app_is_made_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACKAGES_API_JWT_SECRET", SECRET)
    monkeypatch.setenv("PACKAGES_API_JWT_ISSUER", ISSUER)
    monkeypatch.setenv("PACKAGES_API_JWT_AUDIENCE", AUDIENCE)
    assert app_module.app.state.verifier is not None
    monkeypatch.delenv("PACKAGES_API_JWT_SECRET")
    with pytest.raises(SystemExit):
        _ = app_module.app


def test_the_openapi_document_says_which_routes_want_a_bearer_token() -> None:
    paths = create_app(Settings(**HS256)).openapi()["paths"]
    wanted = {path: op["get"].get("security") for path, op in paths.items()}
    assert all(wanted[p] == [{"HTTPBearer": []}] for p in wanted if p.startswith("/v1/")), wanted
    assert wanted["/health/ready"] is None


def test_one_kind_of_key_at_a_time(issuer: Issuer) -> None:
    with pytest.raises(ValidationError, match="not several"):
        issuer.settings(api_jwt_secret=SECRET)


def test_a_short_secret_is_refused_and_never_echoed() -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes") as refused:
        Settings(api_jwt_secret="hunter2-salon")
    assert "hunter2-salon" not in str(refused.value)


# -- a shared secret ------------------------------------------------------------------------------


def test_a_secret_checks_hs256_and_nothing_else(issuer: Issuer) -> None:
    verify = TokenVerifier(Settings(**HS256)).caller
    assert verify(sign({"businesses": ["biz-1"]}, SECRET, "HS256")).may_read("biz-1")
    for refused in (
        sign({"businesses": ["biz-1"]}, "another-secret-of-at-least-32-bytes!", "HS256"),
        issuer.token(["biz-1"]),  # RS256: not what a secret checks
        sign({"businesses": ["biz-1"]}, ec.generate_private_key(ec.SECP256R1()), "ES256"),
    ):
        with pytest.raises(UnauthorizedError):
            verify(refused)


def test_a_caller_reads_what_its_token_names() -> None:
    verify = TokenVerifier(Settings(**HS256)).caller
    caller = verify(sign({"businesses": ["biz-1", "biz-2"]}, SECRET, "HS256"))
    assert (caller.may_read("biz-2"), caller.may_read("biz-3")) == (True, False)
    assert verify(sign({"businesses": ["*"]}, SECRET, "HS256")).may_read("biz-3")
    assert not verify(sign({"businesses": []}, SECRET, "HS256")).may_read("biz-1")


def test_clock_skew_is_allowed_up_to_the_leeway() -> None:
    import time

    verify = TokenVerifier(Settings(**HS256, api_jwt_leeway_s=30)).caller
    verify(sign({"businesses": ["*"], "exp": int(time.time()) - 10}, SECRET, "HS256"))
    with pytest.raises(UnauthorizedError):
        verify(sign({"businesses": ["*"], "exp": int(time.time()) - 60}, SECRET, "HS256"))


# -- a JWKS file ----------------------------------------------------------------------------------


def test_a_rotated_jwks_file_is_read_again_without_a_restart(issuer: Issuer) -> None:
    verify = TokenVerifier(issuer.settings()).caller
    retired = issuer.token(kid="rsa-1")
    verify(retired)
    issuer.keys["rsa-2"] = rsa_key()
    del issuer.keys["rsa-1"]
    issuer.publish()
    assert verify(issuer.token(kid="rsa-2")).may_read("biz-1")
    with pytest.raises(UnauthorizedError):
        verify(retired)


def test_a_jwks_key_without_a_kid_is_used_when_it_is_the_only_one(issuer: Issuer) -> None:
    del issuer.keys["ec-1"]
    issuer.publish()
    verify = TokenVerifier(issuer.settings()).caller
    assert verify(sign({"businesses": ["*"]}, issuer.keys["rsa-1"], "RS256")).may_read("b")


def test_a_symmetric_key_in_a_jwks_is_never_used(issuer: Issuer) -> None:
    """An `oct` key in the set would let anyone who reads the JWKS sign: it is ignored."""
    jwks = issuer.jwks()
    jwks["keys"].append(
        {
            "kty": "oct",
            "kid": "hs",
            "alg": "HS256",
            "k": base64.urlsafe_b64encode(LEAKED).rstrip(b"=").decode(),
        }
    )
    issuer.jwks_file.write_bytes(orjson.dumps(jwks))
    verify = TokenVerifier(issuer.settings()).caller
    with pytest.raises(UnauthorizedError):
        verify(sign({"businesses": ["*"]}, LEAKED, "HS256", kid="hs"))


# -- a JWKS URL -----------------------------------------------------------------------------------


@pytest.fixture
def jwks_server(issuer: Issuer) -> Iterator[Served]:
    with serve(lambda _request: (200, orjson.dumps(issuer.jwks()))) as served:
        served.url += "/.well-known/jwks.json"
        yield served


def test_a_jwks_url_is_fetched_once_and_cached(issuer: Issuer, jwks_server: Served) -> None:
    settings = Settings(
        api_jwks_url=jwks_server.url, api_jwt_issuer=ISSUER, api_jwt_audience=AUDIENCE
    )
    verify = TokenVerifier(settings).caller
    for _ in range(5):
        assert verify(issuer.token(["biz-1"])).may_read("biz-1")
        assert verify(issuer.token(["biz-1"], kid="ec-1")).may_read("biz-1")
    assert len(jwks_server.requests) == 1
    with pytest.raises(UnauthorizedError):
        verify(sign({"businesses": ["*"]}, rsa_key(), "RS256", kid="rsa-9"))


async def test_unreachable_keys_answer_503_not_401_nor_500(issuer: Issuer) -> None:
    with serve(lambda _request: (200, b"{}")) as gone:
        pass  # a port that just stopped answering
    settings = Settings(
        api_jwks_url=f"{gone.url}/.well-known/jwks.json",
        api_jwt_issuer=ISSUER,
        api_jwt_audience=AUDIENCE,
        database_url=NOWHERE,
    )
    async with read_api(settings, issuer.token()) as client:
        answer = await client.get("/v1/businesses/biz-1/package-records/rec-1")
    assert (answer.status_code, answer.json()) == (503, {"detail": "unavailable"})
    with pytest.raises(KeysUnavailableError):
        TokenVerifier(settings).caller(issuer.token())
