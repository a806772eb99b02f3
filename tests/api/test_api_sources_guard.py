"""The accessibility probe's guards: what it resolves, where it connects, what it sends, bounds."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import baggage, context, trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from bookgen.service.models import SourceResult
from bookgen.service.routes import sources as sources_route
from service_helpers import fast_settings, running_app

VALIDATE = "/api/v1/sources/validate"


def fake_resolver(
    table: dict[str, list[str]], asked: list[str] | None = None
) -> sources_route.Resolver:
    """A resolver answering from `table`; a name not in it does not resolve (OSError)."""

    async def resolve(host: str) -> list[sources_route.IPAddress]:
        if asked is not None:
            asked.append(host)
        if host not in table:
            raise OSError(-2, "Name or service not known")
        return [ipaddress.ip_address(a) for a in table[host]]

    return resolve


def result_for(url: str) -> SourceResult:
    return SourceResult(
        index=0, url=url, title="t", valid=True, errors=[], warnings=[], trusted_domain=False
    )


async def test_requests_go_to_the_checked_address_and_redirects_are_checked_again() -> None:
    """Each hop is resolved and checked, then sent to that very address (so a DNS answer that
    changes after the check cannot point it inward); a redirect to a private host is refused."""
    seen: list[tuple[str, str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(
            (str(request.url), request.headers["host"], request.extensions.get("sni_hostname"))
        )
        if request.url.path == "/doc":
            return httpx.Response(302, headers={"Location": "/moved"})
        return httpx.Response(302, headers={"Location": "https://intranet.example/admin"})

    asked: list[str] = []
    resolver = fake_resolver(
        {"public.example": ["93.184.216.34"], "intranet.example": ["10.0.0.7"]}, asked
    )
    result = result_for("http://public.example:8080/doc")
    await sources_route.check_access(
        [result], resolver=resolver, transport=httpx.MockTransport(handler)
    )
    assert seen == [
        ("http://93.184.216.34:8080/doc", "public.example:8080", "public.example"),
        ("http://93.184.216.34:8080/moved", "public.example:8080", "public.example"),
    ]
    assert asked == ["public.example", "public.example", "intranet.example"]
    assert result.accessible is None
    assert result.warnings == ["not checked: intranet.example resolves to a non-public address"]


class Recorder:
    """A MockTransport handler that answers 200 and remembers every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


async def test_an_unresolvable_host_is_unreachable_and_nothing_is_sent() -> None:
    sent = Recorder()
    result = result_for("https://no-such-host.example/book")
    await sources_route.check_access([result], resolver=fake_resolver({}), transport=sent.transport)
    assert sent.requests == []
    assert result.accessible is False and result.status_code is None
    assert result.warnings == ["not reachable: the host name does not resolve"]


async def test_an_empty_answer_counts_as_unresolvable_even_when_private_is_allowed() -> None:
    sent = Recorder()
    result = result_for("http://empty.example/")
    await sources_route.check_access(
        [result],
        allow_private=True,
        resolver=fake_resolver({"empty.example": []}),
        transport=sent.transport,
    )
    assert sent.requests == []
    assert result.accessible is False


EMBEDDING_PRIVATE = [
    "64:ff9b::a00:1",  # NAT64 well-known prefix, 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64, 127.0.0.1
    "64:ff9b:1:a00:0:100::",  # NAT64 local-use /48 (RFC 8215), 10.0.0.1
    "64:ff9b:1:7f00:0:100::",  # NAT64 local-use /48, 127.0.0.1
    "2002:a00:1::1",  # 6to4, 10.0.0.1
    "2002:7f00:1::1",  # 6to4, 127.0.0.1
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
    "::7f00:1",  # IPv4-compatible, 127.0.0.1
]


@pytest.mark.parametrize("address", EMBEDDING_PRIVATE)
async def test_ipv6_wrapping_a_private_ipv4_is_refused_like_it(address: str) -> None:
    sent = Recorder()
    literal = result_for(f"http://[{address}]/")
    named = result_for("http://wrapped.example/")
    await sources_route.check_access(
        [literal, named],
        resolver=fake_resolver({"wrapped.example": ["93.184.216.34", address]}),
        transport=sent.transport,
    )
    assert sent.requests == []
    for result in (literal, named):
        assert result.accessible is None, result
        assert "non-public address" in result.warnings[0]


@pytest.mark.parametrize(
    ("address", "inner"),
    [
        ("64:ff9b::a00:1", "10.0.0.1"),
        ("64:ff9b:1:7f00:0:100::", "127.0.0.1"),
        ("2002:a00:1::1", "10.0.0.1"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "10.0.0.1"),
    ],
)
def test_the_embedded_ipv4_is_unwrapped(address: str, inner: str) -> None:
    assert inner in [str(a) for a in sources_route.embedded_ipv4(ipaddress.IPv6Address(address))]


async def test_ipv6_wrapping_a_public_ipv4_is_probed() -> None:
    sent = Recorder()
    result = result_for("http://[64:ff9b::808:808]/")  # NAT64 of 8.8.8.8
    await sources_route.check_access([result], transport=sent.transport)
    assert [str(r.url) for r in sent.requests] == ["http://[64:ff9b::808:808]/"]
    assert result.accessible is True


async def test_probe_requests_carry_no_trace_context() -> None:
    """With the httpx instrumentation on (as `bookgen serve` runs), inside a traced request with
    baggage, a plain client sends traceparent and baggage, and the probe sends neither."""
    seen: list[dict[str, str]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")[1:]
        seen.append({k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head if h)})
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    instrumentor = HTTPXClientInstrumentor()
    ours = not instrumentor.is_instrumented_by_opentelemetry
    if ours:
        instrumentor.instrument(tracer_provider=TracerProvider())
    token = context.attach(baggage.set_baggage("user", "ada"))
    try:
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("request"):
            assert trace.get_current_span().get_span_context().is_valid
            async with httpx.AsyncClient() as plain:
                await plain.get(f"http://127.0.0.1:{port}/plain")
            result = result_for(f"http://127.0.0.1:{port}/probe")
            await sources_route.check_access([result], allow_private=True)
    finally:
        context.detach(token)
        if ours:
            instrumentor.uninstrument()
        server.close()
        await server.wait_closed()
    assert result.accessible is True
    plain_headers, probe_headers = seen
    assert "traceparent" in plain_headers and "baggage" in plain_headers  # the test can fail
    assert probe_headers["host"] == f"127.0.0.1:{port}"
    assert not {"traceparent", "tracestate", "baggage"} & probe_headers.keys()


async def test_one_call_probes_at_most_the_bound_of_urls() -> None:
    sent = Recorder()
    count = sources_route.MAX_PROBED_URLS + 5
    results = [result_for(f"http://[2001:4860:4860::8888]/{i}") for i in range(count)]
    await sources_route.check_access(results, transport=sent.transport)
    assert len(sent.requests) == sources_route.MAX_PROBED_URLS
    skipped = results[sources_route.MAX_PROBED_URLS :]
    assert all(r.accessible is None and "per call" in r.warnings[0] for r in skipped)


async def test_redirect_hops_are_bounded() -> None:
    hops: list[httpx.Request] = []

    def loop(request: httpx.Request) -> httpx.Response:
        hops.append(request)
        return httpx.Response(302, headers={"Location": f"/{len(hops)}"})

    result = result_for("http://8.8.8.8/")
    await sources_route.check_access([result], transport=httpx.MockTransport(loop))
    assert len(hops) == sources_route.MAX_REDIRECTS + 1
    assert result.accessible is False
    assert result.warnings == [f"not reachable: more than {sources_route.MAX_REDIRECTS} redirects"]


async def test_a_call_ends_at_its_deadline() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)

    result = result_for("http://8.8.8.8/slow")
    started = asyncio.get_running_loop().time()
    await sources_route.check_access([result], transport=httpx.MockTransport(slow), deadline_s=0.2)
    assert asyncio.get_running_loop().time() - started < 2
    assert result.accessible is None
    assert result.warnings == ["not checked: the call's 0.2 s time limit ran out"]


async def test_a_failed_request_is_reported_in_our_words() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] connect to 10.9.8.7:443 refused (internal-db)")

    result = result_for("http://8.8.8.8/")
    await sources_route.check_access([result], transport=httpx.MockTransport(refuse))
    assert result.warnings == ["not reachable: the connection failed"]
    assert not any("10.9.8.7" in w or "Errno" in w or "Error" in w for w in result.warnings)


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = fast_settings(tmp_path, sources_rate_limit="2/minute", sources_probe=False)
    async with running_app(settings) as pair:
        yield pair


async def test_calls_asking_for_probes_are_rate_limited_per_client(
    limited: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = limited
    body = {"sources": [{"url": "https://example.com/", "title": "t"}], "check_accessibility": True}
    for _ in range(2):
        assert (await client.post(VALIDATE, json=body)).status_code == 200
    refused = await client.post(VALIDATE, json=body)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    offline = await client.post(VALIDATE, json={**body, "check_accessibility": False})
    assert offline.status_code == 200
    elsewhere = httpx.ASGITransport(app=app, client=("127.0.0.2", 4000))
    async with httpx.AsyncClient(transport=elsewhere, base_url="http://testserver") as other:
        assert (await other.post(VALIDATE, json=body)).status_code == 200


async def test_probes_switched_off_send_nothing(
    limited: tuple[FastAPI, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_probe(results: list[SourceResult], **_: object) -> None:
        raise AssertionError("a probe was attempted")

    monkeypatch.setattr(sources_route, "check_access", no_probe)
    body = {"sources": [{"url": "https://example.com/", "title": "t"}], "check_accessibility": True}
    response = await limited[1].post(VALIDATE, json=body)
    assert response.status_code == 200
    result = response.json()["results"][0]
    assert result["accessible"] is None
    assert "does not send requests" in result["warnings"][-1]


async def test_a_name_idna_cannot_encode_is_unresolvable_and_a_failing_check_is_reported() -> None:
    sent = Recorder()

    async def idna(host: str) -> list[sources_route.IPAddress]:
        raise UnicodeError("label empty or too long")  # as getaddrinfo says for "a..b"

    bad_name = result_for("http://a..b.example/")
    await sources_route.check_access([bad_name], resolver=idna, transport=sent.transport)
    assert bad_name.accessible is False and sent.requests == []

    async def broken(host: str) -> list[sources_route.IPAddress]:
        raise RuntimeError("resolver bug")

    result = result_for("http://fine.example/")
    await sources_route.check_access([result], resolver=broken, transport=sent.transport)
    assert result.accessible is None
    assert result.warnings == ["not checked: the check failed on our side"]
