"""`/api/v1/sources/validate`: offline checks, and optionally concurrent async HEAD requests.

The accessibility check sends requests to URLs a client chose, so by default it only reaches
public addresses: every hop (redirects are followed one at a time) must resolve to global
addresses only, or the source is reported "not checked", and the request is sent to the address
that was checked. Otherwise any client could make the service probe its own network (loopback
admin ports, cloud metadata, private hosts), directly or through a redirect or a DNS answer that
changes after the check.
`BOOKGEN_SOURCES_ALLOW_PRIVATE=true` lifts this for deployments that validate internal documents.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx
from fastapi import APIRouter
from pydantic import ValidationError

from bookgen.service.deps import SettingsDep
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
MAX_REDIRECTS = 5
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


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Target:
    """Where one hop's request goes: `url` itself, or, when guarded, the checked address."""

    url: str
    address: IPAddress | None = None  # the resolved address the request must reach
    refused: str | None = None


async def resolve(url: str, allow_private: bool) -> Target:
    """The address to request `url` at: one of the host's addresses, all of which are global.

    The request then goes to that address (Host header and TLS name stay the host's), so a DNS
    answer that changes between this check and the request cannot redirect it inward.
    """
    if allow_private:
        return Target(url)
    address, refused = await check_host(urlsplit(url).hostname or "")
    return Target(url, address, refused)


async def check_host(host: str) -> tuple[IPAddress | None, str | None]:
    """(an address of `host`, None) if all its addresses are global, else (None, why not)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return None, None  # unresolvable: the request itself reports it as not reachable
    first: IPAddress | None = None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_global:
            return None, f"not checked: {host} resolves to a non-public address"
        if first is None:
            first = address
    return first, None


async def _fetch(client: httpx.AsyncClient, target: Target) -> httpx.Response:
    url = target.url
    headers: dict[str, str] = {}
    extensions: dict[str, str] = {}
    if target.address is not None:
        parts = urlsplit(url)
        ip = target.address
        literal = f"[{ip}]" if ip.version == 6 else str(ip)
        netloc = f"{literal}:{parts.port}" if parts.port else literal
        url = parts._replace(netloc=netloc).geturl()
        headers["Host"] = parts.netloc.rsplit("@", 1)[-1]
        extensions["sni_hostname"] = parts.hostname or ""
    response = await client.head(url, headers=headers, extensions=extensions)
    if response.status_code in (405, 501):  # some servers refuse HEAD
        request = client.build_request("GET", url, headers=headers, extensions=extensions)
        response = await client.send(request, stream=True)
        await response.aclose()
    return response


async def _probe(
    client: httpx.AsyncClient,
    slots: asyncio.Semaphore,
    result: SourceResult,
    allow_private: bool,
) -> None:
    assert result.url is not None
    url = result.url
    async with slots:
        for _ in range(MAX_REDIRECTS + 1):
            target = await resolve(url, allow_private)
            if target.refused:
                result.warnings.append(target.refused)
                return
            try:
                response = await _fetch(client, target)
            except (httpx.HTTPError, ValueError) as error:
                result.accessible = False
                result.warnings.append(f"not reachable: {type(error).__name__}")
                return
            location = response.headers.get("location")
            if not response.is_redirect or not location:
                break
            url = urljoin(url, location)  # relative to the URL asked, not the address used
        else:
            result.accessible = False
            result.warnings.append(f"more than {MAX_REDIRECTS} redirects")
            return
    result.status_code = response.status_code
    result.accessible = response.status_code < 400
    if not result.accessible:
        result.warnings.append(f"answered HTTP {response.status_code}")


async def check_access(results: list[SourceResult], *, allow_private: bool = False) -> None:
    targets = [r for r in results if r.valid and r.url]
    if not targets:
        return
    slots = asyncio.Semaphore(ACCESS_CONCURRENCY)
    async with httpx.AsyncClient(
        timeout=ACCESS_TIMEOUT_S, follow_redirects=False, headers={"User-Agent": USER_AGENT}
    ) as client:
        await asyncio.gather(*(_probe(client, slots, r, allow_private) for r in targets))


@router.post("/validate")
async def validate(body: ValidateRequest, settings: SettingsDep) -> ValidateResponse:
    results = [check_offline(i, raw) for i, raw in enumerate(body.sources)]
    if body.check_accessibility:
        await check_access(results, allow_private=settings.sources_allow_private)
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
