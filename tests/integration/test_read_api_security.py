"""Every route of the read API, swept: no token, bad tokens, another business's, arbitrary ids."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy.infra import PostgresService
from services.http.app import create_app
from tests.support.api import AUDIENCE, ISSUER, Issuer, bearer, rsa_key, sign

pytestmark = pytest.mark.infra

MINE = "biz-sweep-mine"
THEIRS = "biz-sweep-theirs"
# What answers without a token. A new route that is neither here nor under /v1 fails the sweep.
PUBLIC = {"/health/live", "/health/ready", "/metrics", "/openapi.json", "/docs", "/redoc"}
PUBLIC_PREFIXES = ("/docs/",)
UNAUTHORIZED = {"detail": "unauthorized"}


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Issuer:
    return Issuer(tmp_path_factory.mktemp("issuer"))


@pytest.fixture(scope="module")
def app(real_postgres: PostgresService, issuer: Issuer) -> FastAPI:
    return create_app(issuer.settings(database_url=real_postgres.url))


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as started:
        yield started


def _bad_tokens(issuer: Issuer) -> dict[str, dict[str, str]]:
    """Each kind of token that must not open anything, as the header that carries it."""
    now = int(time.time())
    key, stranger = issuer.keys["rsa-1"], rsa_key()
    everyone = {"businesses": ["*"]}
    public_pem = (
        issuer.keys["rsa-1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header, payload, _ = issuer.token().split(".")
    unsigned = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "businesses": ["*"]},
        "",
        algorithm="none",
    )
    return {
        "missing": {},
        "not bearer": {"Authorization": f"Basic {issuer.token()}"},
        "empty bearer": {"Authorization": "Bearer "},
        "malformed": bearer("not-a.jwt"),
        "expired": bearer(issuer.token(exp=now - 3600)),
        "not yet valid": bearer(issuer.token(nbf=now + 3600)),
        "wrong issuer": bearer(issuer.token(iss="https://evil.example/auth")),
        "wrong audience": bearer(issuer.token(aud="another-api")),
        "no exp": bearer(issuer.token(exp=None)),
        "no businesses": bearer(sign({}, key, "RS256", kid="rsa-1")),
        "businesses not a list": bearer(sign({"businesses": "*"}, key, "RS256", kid="rsa-1")),
        "bad signature": bearer(f"{header}.{payload}.{'A' * 342}"),
        "another key, same kid": bearer(sign(everyone, stranger, "RS256", kid="rsa-1")),
        "unknown kid": bearer(sign(everyone, stranger, "RS256", kid="rsa-9")),
        "alg none": bearer(unsigned),
        "HS256 with the RSA public key": bearer(_hs256_confused(public_pem, now)),
    }


def _hs256_confused(public_pem: bytes, now: int) -> str:
    """A token HMAC-signed with the issuer's public key (PyJWT itself refuses to make one)."""
    import base64
    import hashlib
    import hmac

    import orjson

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = b64(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}))
    claims = {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "businesses": ["*"]}
    body = b64(orjson.dumps(claims))
    mac = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


@dataclass(frozen=True)
class Route:
    """One route as the app serves it (prefixes included)."""

    path: str
    method: str
    query: tuple[str, ...]

    @property
    def ids(self) -> list[str]:
        """The names of its path parameters."""
        return re.findall(r"\{(\w+)\}", self.path)

    def url(self, business: str, **ids: str) -> str:
        """The path with its business and every other id filled in (URL-quoted)."""
        values = {"business_id": business, **ids}
        return re.sub(
            r"\{(\w+)\}", lambda m: quote(values.get(m.group(1), "id-sweep-1"), safe=""), self.path
        )


def _routes(app: FastAPI) -> list[Route]:
    """Every route of the app, from FastAPI's router: a new one cannot escape the sweep."""
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        query = route.dependant.query_params if isinstance(route, APIRoute) else []
        methods = sorted(set(getattr(route, "methods", None) or {"GET"}) - {"HEAD"})
        found += [Route(context.path or "", m, tuple(q.alias for q in query)) for m in methods]
    return found


def _v1_routes(app: FastAPI) -> list[Route]:
    return [r for r in _routes(app) if r.path.startswith("/v1/")]


def test_every_route_is_either_public_or_under_v1(app: FastAPI) -> None:
    loose = {
        r.path
        for r in _routes(app)
        if not r.path.startswith("/v1/")
        and r.path not in PUBLIC
        and not r.path.startswith(PUBLIC_PREFIXES)
    }
    assert not loose, f"routes that answer without a token: {loose}"
    assert _v1_routes(app), "no /v1 route found: the sweep would check nothing"


def test_public_routes_answer_without_a_token(client: TestClient) -> None:
    for path in ("/health/live", "/metrics", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_every_v1_route_refuses_each_kind_of_bad_token(
    app: FastAPI, client: TestClient, issuer: Issuer
) -> None:
    for route in _v1_routes(app):
        for kind, headers in _bad_tokens(issuer).items():
            answer = client.request(route.method, route.url(MINE), headers=headers)
            assert answer.status_code == 401, (route.path, kind, answer.status_code)
            assert answer.headers["www-authenticate"] == "Bearer", (route.path, kind)
            assert answer.json() == UNAUTHORIZED, (route.path, kind)


def test_every_v1_route_answers_another_business_as_a_record_it_does_not_have(
    app: FastAPI, client: TestClient, issuer: Issuer
) -> None:
    """404 with the same body and headers as the record of another business: nothing leaks."""
    mine = bearer(issuer.token([MINE]))
    absent = client.get(f"/v1/businesses/{MINE}/package-records/rec-of-another", headers=mine)
    assert absent.status_code == 404
    for route in _v1_routes(app):
        for token in (issuer.token([MINE]), issuer.token([MINE], kid="ec-1")):
            answer = client.request(route.method, route.url(THEIRS), headers=bearer(token))
            assert answer.status_code == 404, route.path
            assert answer.content == absent.content, route.path
            assert dict(answer.headers) == dict(absent.headers), route.path


@pytest.mark.parametrize("businesses", [[MINE], ["*"], [THEIRS, MINE]], ids=str)
def test_every_v1_route_answers_a_valid_token_for_its_business(
    app: FastAPI, client: TestClient, issuer: Issuer, businesses: list[str]
) -> None:
    for route in _v1_routes(app):
        for kid in ("rsa-1", "ec-1"):
            headers = bearer(issuer.token(businesses, kid=kid))
            answer = client.request(route.method, route.url(MINE), headers=headers)
            # Nothing of this business exists: a list is empty, one thing is not found.
            assert answer.status_code in (200, 404), (route.path, answer.status_code)
            assert answer.status_code == 404 or answer.json() == [], route.path


def test_a_nul_byte_or_a_long_id_in_the_path_is_not_found(
    app: FastAPI, client: TestClient, issuer: Issuer
) -> None:
    headers = bearer(issuer.token())
    for route in _v1_routes(app):
        for bad in ("rec\x00", "\x00", "r" * 65):
            for name in route.ids:
                answer = client.request(
                    route.method, route.url(MINE, **{name: bad}), headers=headers
                )
                assert (answer.status_code, answer.json()) == (404, {"detail": "not found"}), (
                    route.path,
                    name,
                    bad[:3],
                )


@pytest.mark.parametrize("value", ["svc\x00", "s" * 65, ""])
def test_a_bad_query_id_is_a_bad_request_that_does_not_echo_it(
    client: TestClient, issuer: Issuer, value: str
) -> None:
    answer = client.get(
        f"/v1/businesses/{MINE}/clients/cli-ana/package-records",
        params={"service_id": value},
        headers=bearer(issuer.token()),
    )
    assert answer.status_code == 422
    assert [p["loc"] for p in answer.json()["detail"]] == [["query", "service_id"]]
    assert "input" not in answer.text
    assert (value or "ssss") not in answer.text


# Any text, text of the characters that trouble paths and PostgreSQL, text about the id bound.
_ANY_TEXT = (
    st.text(max_size=80)
    | st.text(st.sampled_from("\x00\x01a/%.\\'\"\ufffd\U0001f9d6"), max_size=8)
    | st.text(min_size=60, max_size=70)
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_arbitrary_strings_never_answer_5xx(
    app: FastAPI, client: TestClient, issuer: Issuer, data: st.DataObject
) -> None:
    route = data.draw(st.sampled_from(_v1_routes(app)))
    ids = {
        name: data.draw(st.just(MINE) | _ANY_TEXT if name == "business_id" else _ANY_TEXT, name)
        for name in route.ids
    }
    query = {name: data.draw(_ANY_TEXT, label=name) for name in route.query}
    headers = data.draw(st.sampled_from([bearer(issuer.token()), bearer(issuer.token([MINE])), {}]))
    answer = client.request(route.method, route.url(MINE, **ids), params=query, headers=headers)
    assert answer.status_code < 500, (route.path, ids, query, answer.text)
    assert "Traceback" not in answer.text


def test_arbitrary_strings_reach_every_query_parameter(app: FastAPI) -> None:
    """The property above draws every query parameter a route has; there are some."""
    assert any(r.query for r in _v1_routes(app))
