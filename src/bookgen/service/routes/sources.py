"""`/api/v1/sources/validate`: offline checks, and optionally concurrent async HEAD requests."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter
from pydantic import ValidationError

from bookgen.service.models import (
    SourceIn,
    SourceResult,
    ValidateRequest,
    ValidateResponse,
    ValidateSummary,
)

router = APIRouter(prefix="/api/v1/sources", tags=["sources"])

TRUSTED_DOMAINS = (
    "wikipedia.org",
    "britannica.com",
    "archive.org",
    "loc.gov",
    "nature.com",
    "jstor.org",
    "nih.gov",
    "bbc.co.uk",
    "nytimes.com",
    "theguardian.com",
    "smithsonianmag.com",
    "royalsociety.org",
    "oup.com",
    "cambridge.org",
)
TRUSTED_SUFFIXES = (".edu", ".gov", ".ac.uk", ".museum")
ACCESS_TIMEOUT_S = 3.0
ACCESS_CONCURRENCY = 10
USER_AGENT = "BookGen-source-check/1.0"


def is_trusted(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host.endswith(TRUSTED_SUFFIXES) or any(
        host == d or host.endswith("." + d) for d in TRUSTED_DOMAINS
    )


def url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as error:
        return f"url is malformed: {error}"
    if parts.scheme not in ("http", "https"):
        return "url must use http or https"
    if not parts.hostname or any(c.isspace() for c in url):
        return "url has no valid host"
    return None


def check_offline(index: int, raw: dict[str, object]) -> SourceResult:
    errors: list[str] = []
    warnings: list[str] = []
    try:
        source = SourceIn.model_validate(raw)
    except ValidationError as error:
        for detail in error.errors(include_url=False, include_input=False):
            field = ".".join(str(p) for p in detail["loc"]) or "source"
            errors.append(f"{field}: {detail['msg']}")
        title = raw.get("title")
        url = raw.get("url")
        return SourceResult(
            index=index,
            url=url if isinstance(url, str) else None,
            title=title if isinstance(title, str) else None,
            valid=False,
            errors=errors,
            warnings=warnings,
            trusted_domain=False,
        )
    trusted = False
    if source.url:
        problem = url_problem(source.url)
        if problem:
            errors.append(problem)
        else:
            trusted = is_trusted(urlsplit(source.url).hostname or "")
            if not trusted:
                warnings.append("domain is not on the trusted list")
    elif source.source_type == "web":
        errors.append("url: a web source needs a url")
    if not source.author:
        warnings.append("no author given")
    return SourceResult(
        index=index,
        url=source.url,
        title=source.title,
        valid=not errors,
        errors=errors,
        warnings=warnings,
        trusted_domain=trusted,
    )


async def _probe(client: httpx.AsyncClient, slots: asyncio.Semaphore, result: SourceResult) -> None:
    assert result.url is not None
    async with slots:
        try:
            response = await client.head(result.url)
            if response.status_code in (405, 501):  # some servers refuse HEAD
                async with client.stream("GET", result.url) as streamed:
                    response = streamed
        except (httpx.HTTPError, ValueError) as error:
            result.accessible = False
            result.warnings.append(f"not reachable: {type(error).__name__}")
            return
    result.status_code = response.status_code
    result.accessible = response.status_code < 400
    if not result.accessible:
        result.warnings.append(f"answered HTTP {response.status_code}")


async def check_access(results: list[SourceResult]) -> None:
    targets = [r for r in results if r.valid and r.url]
    if not targets:
        return
    slots = asyncio.Semaphore(ACCESS_CONCURRENCY)
    async with httpx.AsyncClient(
        timeout=ACCESS_TIMEOUT_S, follow_redirects=True, headers={"User-Agent": USER_AGENT}
    ) as client:
        await asyncio.gather(*(_probe(client, slots, r) for r in targets))


@router.post("/validate")
async def validate(body: ValidateRequest) -> ValidateResponse:
    results = [check_offline(i, raw) for i, raw in enumerate(body.sources)]
    if body.check_accessibility:
        await check_access(results)
    valid = sum(r.valid for r in results)
    return ValidateResponse(
        total_sources=len(results),
        valid_sources=valid,
        invalid_sources=len(results) - valid,
        results=results,
        summary=ValidateSummary(
            trusted=sum(r.trusted_domain for r in results),
            untrusted=sum(r.valid and not r.trusted_domain for r in results),
            accessible=sum(r.accessible is True for r in results),
            inaccessible=sum(r.accessible is False for r in results),
            checked_accessibility=body.check_accessibility,
        ),
    )
