"""Lists come in pages: `limit` and `cursor`, the next page in a `Link` header, stable while
records are sold meanwhile."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.support import events
from tests.support.flow import Platform

pytestmark = pytest.mark.infra


def _assign(business: str, n: int) -> dict[str, Any]:
    return events.envelope(
        "package.assigned",
        business,
        {"assignment_id": f"asg-{n}", "package_id": "pkg-relax10", "client_id": "cli-ana"},
    )


async def _sold(platform: Platform, business: str, *numbers: int) -> None:
    sent = [_assign(business, n) for n in numbers]
    await platform.send(*sent)
    for event in sent:
        await platform.settled(event)


def _next(answer: httpx.Response) -> str | None:
    found = re.fullmatch(r'<([^>]+)>; rel="next"', answer.headers.get("link", ""))
    return found.group(1) if found else None


async def test_pages_cover_every_record_once_while_more_are_sold(
    platform: Platform, api: httpx.AsyncClient
) -> None:
    business = events.new_business()
    await platform.send(events.plan(business), events.package(business))
    await _sold(platform, business, 1, 2, 3, 4, 5)
    url: str | None = f"/v1/businesses/{business}/clients/cli-ana/package-records?limit=2"
    pages = []
    while url is not None:
        answer = await api.get(url)
        assert answer.status_code == 200
        pages.append([r["origin"]["assignment_id"] for r in answer.json()])
        url = _next(answer)
        if len(pages) == 1:
            await _sold(platform, business, 6)  # newer than every page: shifts none
    assert pages == [["asg-5", "asg-4"], ["asg-3", "asg-2"], ["asg-1"]]
    everything = await api.get(f"/v1/businesses/{business}/clients/cli-ana/package-records")
    assert len(everything.json()) == 6
    assert "link" not in everything.headers


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "cursor=not-ours", "cursor=eDE"])
async def test_a_bad_limit_or_a_cursor_not_ours_is_a_bad_request(
    api: httpx.AsyncClient, query: str
) -> None:
    answer = await api.get(f"/v1/businesses/b-any/clients/cli-ana/package-records?{query}")
    assert answer.status_code == 422
