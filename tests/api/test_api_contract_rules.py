"""The schema states what the handlers enforce, and documents what they answer."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

GENERATE = "/api/v1/biographies/generate"
VALIDATE = "/api/v1/sources/validate"


async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    schema: dict[str, Any] = (await client.get("/openapi.json")).json()
    return schema


@pytest.mark.parametrize(
    "body",
    [
        {"character": "   "},
        {"character": "A\x1fda"},  # DOCX (XML) cannot carry it: refused, not a 500 at download
        {"character": "Ada", "language": ""},
        {"character": "Ada", "chapters": True},
        {"character": "Ada", "chapters": "3"},
        {"character": "Ada", "chapters": 3.5},
        {"character": "Ada", "temperature": False},
        {"character": "Ada", "mode": "manual"},
        {"character": "Ada", "mode": "manual", "sources": []},
    ],
)
async def test_submissions_the_schema_forbids_are_refused(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    assert (await client.post(GENERATE, json=body)).status_code == 422


async def test_the_schema_forbids_them_too(client: httpx.AsyncClient) -> None:
    request = (await openapi(client))["components"]["schemas"]["GenerateRequest"]
    character = request["properties"]["character"]["pattern"]
    assert re.search(character, "Ada") and not re.search(character, "   ")
    assert not re.search(character, "A\x1fda")
    assert request["properties"]["language"]["minLength"] == 1
    chapters = request["properties"]["chapters"]["anyOf"][0]
    assert (chapters["type"], chapters["minimum"], chapters["maximum"]) == ("integer", 1, 50)
    # manual mode needs sources: automatic (or absent), or a non-empty list of sources
    assert {"properties": {"mode": {"const": "automatic"}}} in request["anyOf"]


async def test_an_integral_float_is_an_integer_as_json_schema_says(
    client: httpx.AsyncClient,
) -> None:
    body = {"character": "Ada", "chapters": 2.0, "total_words": 1000.0}
    assert (await client.post(GENERATE, json=body)).status_code == 202


async def test_check_accessibility_is_a_boolean(client: httpx.AsyncClient) -> None:
    body = {"sources": [{"title": "t"}], "check_accessibility": 0}
    assert (await client.post(VALIDATE, json=body)).status_code == 422


@pytest.mark.parametrize("path", [GENERATE, VALIDATE])
@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe{"])
async def test_a_body_that_is_not_json_is_400_and_documented(
    client: httpx.AsyncClient, path: str, content: bytes
) -> None:
    response = await client.post(
        path, content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "JSON" in response.json()["detail"] or "parsing the body" in response.json()["detail"]
    assert "400" in (await openapi(client))["paths"][path]["post"]["responses"]


async def test_every_answer_is_documented(client: httpx.AsyncClient) -> None:
    paths = (await openapi(client))["paths"]
    download = paths["/api/v1/biographies/{job_id}/download"]["get"]["responses"]
    assert {"text/plain", "text/markdown"} <= set(download["200"]["content"])
    assert {"400", "404", "503"} <= set(download)
    assert "429" in paths[VALIDATE]["post"]["responses"]
    links = paths[GENERATE]["post"]["responses"]["202"]["links"]
    assert {name: link["parameters"] for name, link in links.items()} == {
        name: {"job_id": "$response.body#/job_id"} for name in ("status", "download", "cancel")
    }
    for link in links.values():
        path, method = link["operationRef"].removeprefix("#/paths/").rsplit("/", 1)
        assert method in paths[path.replace("~1", "/")]
