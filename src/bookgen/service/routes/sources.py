"""`/api/v1/sources/validate`: offline checks, and optionally concurrent async HEAD requests.

The accessibility check sends requests to URLs a client chose, so by default it only reaches
public addresses: every hop (redirects are followed one at a time) is resolved here, all its
addresses must be global (an IPv6 address that embeds an IPv4 one, as NAT64, 6to4 and Teredo do,
counts as the IPv4 it embeds), and the request goes to the address that was checked, with the
host's name as Host header and TLS server name. Otherwise any client could make the service probe
its own network (loopback admin ports, cloud metadata, private hosts), directly, through a
redirect, or through a DNS answer that changes after the check. A host that does not resolve is
reported unreachable without a request: letting the HTTP client resolve it again would be such
a second answer.
`BOOKGEN_SOURCES_ALLOW_PRIVATE=true` lifts the address rule for deployments that validate internal
documents; `BOOKGEN_SOURCES_PROBE=false` turns the requests off altogether.

A call is bounded (URLs probed, redirect hops, total time) and calls asking for probes are rate
limited per client, so the route cannot be used to make the service flood a third party. Probe
requests carry no trace context: `traceparent` and `baggage` are for our own services, not for
hosts a client named.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx
from fastapi import APIRouter, HTTPException, Request, status
from pydantic import ValidationError

from bookgen.service.deps import ClientKeyDep, SubmissionLimiter, settings_of
from bookgen.service.models import (
    SourceIn,
    SourceResult,
    ValidateRequest,
    ValidateResponse,
    ValidateSummary,
)
from bookgen.service.settings import Settings

router = APIRouter(prefix="/api/v1/sources", tags=["sources"])
logger = logging.getLogger("bookgen.sources")

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
ACCESS_TIMEOUT_S = 3.0  # per phase of one request (connect, each read)
ACCESS_CONCURRENCY = 10
MAX_REDIRECTS = 5
MAX_PROBED_URLS = 20  # per call; the rest of a call's URLs are reported "not checked"
CALL_DEADLINE_S = 10.0  # every probe of one call, redirects included
USER_AGENT = "BookGen-source-check/1.0"
# Trace context and baggage describe our own request; a host a client named must not get them.
UNTRACED_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})
ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body is not valid JSON"},
    413: {"description": "the body is larger than BOOKGEN_MAX_BODY_BYTES"},
    429: {
        "description": "too many calls with check_accessibility from this client; see Retry-After",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    },
}


def is_trusted(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host.endswith(TRUSTED_SUFFIXES) or any(
        host == d or host.endswith("." + d) for d in TRUSTED_DOMAINS
    )


def url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        # Our sentence, not the parser's message (which quotes the input back).
        return "url is malformed: its host or port cannot be parsed"
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
# Host name -> its addresses; raises OSError (or returns nothing) when the name does not resolve.
Resolver = Callable[[str], Awaitable[list[IPAddress]]]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052, IPv4 in the last 32 bits
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215, RFC 6052 layout for a /48
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d


async def system_resolver(host: str) -> list[IPAddress]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (and would reach through a translator)."""
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    packed = address.packed
    if address in _NAT64:
        return [ipaddress.IPv4Address(packed[12:])]
    if address in _NAT64_LOCAL:
        return [ipaddress.IPv4Address(packed[6:8] + packed[9:11])]  # byte 8 is RFC 6052's "u"
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)  # the relay and the client behind it
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        return [ipaddress.IPv4Address(packed[12:])]
    return []


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = embedded_ipv4(address)
        if embedded:
            return all(inner.is_global for inner in embedded)
    return address.is_global


@dataclass(frozen=True, slots=True)
class Target:
    """Where one hop's request goes: the checked address, or why no request is sent."""

    url: str
    address: IPAddress | None = None  # the resolved address the request must reach
    refused: str | None = None  # not checked (a non-public address): accessible stays unknown
    unreachable: str | None = None  # known not to be reachable (the name does not resolve)


async def resolve(url: str, allow_private: bool, resolver: Resolver = system_resolver) -> Target:
    """The address to request `url` at: one of the host's addresses, all of which are public.

    The request then goes to that address (Host header and TLS name stay the host's), so a DNS
    answer that changes between this check and the request cannot redirect it inward.
    """
    host = urlsplit(url).hostname or ""
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = await resolver(host)
        except (OSError, UnicodeError):  # UnicodeError: a name IDNA cannot encode
            addresses = []
    if not addresses:
        return Target(url, unreachable="not reachable: the host name does not resolve")
    if not allow_private and not all(is_public(address) for address in addresses):
        return Target(url, refused=f"not checked: {host} resolves to a non-public address")
    return Target(url, addresses[0])


async def check_host(
    host: str, resolver: Resolver = system_resolver
) -> tuple[IPAddress | None, str | None]:
    """(an address of `host`, None) if all its addresses are public, else (None, why not)."""
    target = await resolve(f"http://{_literal(host)}/", False, resolver)
    return target.address, target.refused or target.unreachable


def _literal(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class UntracedTransport(httpx.AsyncHTTPTransport):
    """An HTTP transport whose requests leave without trace context.

    The httpx instrumentation (bookgen.instrumentation) wraps every `AsyncHTTPTransport` and
    writes `traceparent`/`baggage` into the request on its way down; this transport removes them
    from what goes on the wire, below that wrapper, whatever instruments httpx.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        pool = self._pool
        send = pool.handle_async_request

        async def untraced(request: httpcore.Request) -> httpcore.Response:
            request.headers = [
                (name, value)
                for name, value in request.headers
                if name.lower() not in UNTRACED_HEADERS
            ]
            return await send(request)

        pool.handle_async_request = untraced  # type: ignore[method-assign]


async def _fetch(client: httpx.AsyncClient, target: Target) -> httpx.Response:
    assert target.address is not None
    parts = urlsplit(target.url)
    literal = _literal(str(target.address))
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    url = parts._replace(netloc=netloc).geturl()
    headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
    extensions = {"sni_hostname": parts.hostname or ""}
    response = await client.head(url, headers=headers, extensions=extensions)
    if response.status_code in (405, 501):  # some servers refuse HEAD
        request = client.build_request("GET", url, headers=headers, extensions=extensions)
        response = await client.send(request, stream=True)
        await response.aclose()
    return response


def _failure(error: Exception) -> str:
    """Our sentence for a failed request (an exception's text may quote addresses or internals)."""
    if isinstance(error, httpx.TimeoutException):
        return "not reachable: the request timed out"
    if isinstance(error, httpx.ConnectError):
        return "not reachable: the connection failed"
    if isinstance(error, httpx.TooManyRedirects | httpx.RemoteProtocolError):
        return "not reachable: the server's answer was not valid HTTP"
    return "not reachable: the request failed"


async def _probe(
    client: httpx.AsyncClient,
    slots: asyncio.Semaphore,
    result: SourceResult,
    allow_private: bool,
    resolver: Resolver = system_resolver,
) -> None:
    assert result.url is not None
    url = result.url
    async with slots:
        for _ in range(MAX_REDIRECTS + 1):
            target = await resolve(url, allow_private, resolver)
            if target.refused:
                result.warnings.append(target.refused)
                return
            if target.unreachable:
                result.accessible = False
                result.warnings.append(target.unreachable)
                return
            try:
                response = await _fetch(client, target)
            except (httpx.HTTPError, ValueError) as error:
                result.accessible = False
                result.warnings.append(_failure(error))
                return
            location = response.headers.get("location")
            if not response.is_redirect or not location:
                break
            url = urljoin(url, location)  # relative to the URL asked, not the address used
        else:
            result.accessible = False
            result.warnings.append(f"not reachable: more than {MAX_REDIRECTS} redirects")
            return
    result.status_code = response.status_code
    result.accessible = response.status_code < 400
    if not result.accessible:
        result.warnings.append(f"answered HTTP {response.status_code}")


async def check_access(
    results: list[SourceResult],
    *,
    allow_private: bool = False,
    resolver: Resolver = system_resolver,
    transport: httpx.AsyncBaseTransport | None = None,
    deadline_s: float = CALL_DEADLINE_S,
) -> None:
    """Probe the valid URLs of `results` in place: at most MAX_PROBED_URLS, within `deadline_s`."""
    targets = [r for r in results if r.valid and r.url]
    for skipped in targets[MAX_PROBED_URLS:]:
        skipped.warnings.append(f"not checked: only {MAX_PROBED_URLS} URLs are probed per call")
    targets = targets[:MAX_PROBED_URLS]
    if not targets:
        return
    slots = asyncio.Semaphore(ACCESS_CONCURRENCY)
    async with httpx.AsyncClient(
        transport=transport or UntracedTransport(),
        timeout=ACCESS_TIMEOUT_S,
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        trust_env=False,  # no proxy from the environment: the checked address is the one reached
    ) as client:
        tasks = {
            asyncio.create_task(_probe(client, slots, r, allow_private, resolver)): r
            for r in targets
        }
        done, late = await asyncio.wait(tasks, timeout=deadline_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
    for task in late:
        tasks[task].warnings.append(f"not checked: the call's {deadline_s:g} s time limit ran out")
    for task in done:
        if task.exception() is not None:  # a bug, not the source's fault: say so, keep the call
            logger.warning("source check failed", exc_info=task.exception())
            tasks[task].warnings.append("not checked: the check failed on our side")


def not_probed(results: list[SourceResult]) -> None:
    for result in results:
        if result.valid and result.url:
            result.warnings.append("not checked: this server does not send requests to sources")


def _limiter(request: Request, settings: Settings) -> SubmissionLimiter:
    # Its own limiter (and rate) per app: probing costs more than a submission and is counted
    # apart from it.
    limiter: SubmissionLimiter | None = getattr(request.app.state, "sources_limiter", None)
    if limiter is None:
        limiter = SubmissionLimiter(settings.sources_rate_limit, settings.rate_limit_storage)
        request.app.state.sources_limiter = limiter
    return limiter


@router.post("/validate", responses=ANSWERS)
async def validate(
    body: ValidateRequest, request: Request, client: ClientKeyDep
) -> ValidateResponse:
    settings = settings_of(request)
    if body.check_accessibility:
        wait = await _limiter(request, settings).retry_after("sources:" + client)
        if wait is not None:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"rate limit {settings.sources_rate_limit} for accessibility checks exceeded",
                headers={"Retry-After": str(wait)},
            )
    results = [check_offline(i, raw) for i, raw in enumerate(body.sources)]
    if body.check_accessibility:
        if settings.sources_probe:
            await check_access(results, allow_private=settings.sources_allow_private)
        else:
            not_probed(results)
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
