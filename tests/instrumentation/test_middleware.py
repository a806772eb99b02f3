"""Request metrics by route template, bounded labels, status codes, exemplars, access log."""

from __future__ import annotations

import io
import json
import random
import string
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from prometheus_client import CollectorRegistry
from telemetry_helpers import fast_settings, instrumented_app, series

from bookgen.instrumentation import Telemetry, instrument
from bookgen.instrumentation.tracing import RequestSampler
from bookgen.service.settings import Settings


def small_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        if item_id == 0:
            raise HTTPException(404)
        return {"item_id": item_id}

    @app.post("/items", status_code=201)
    async def create() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    return app


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Telemetry]]:
    app = small_app()
    telemetry = instrument(app, fast_settings(tmp_path), registry=CollectorRegistry())
    telemetry.log_handler.setStream(io.StringIO())  # no lifespan here: keep lines off stdout
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client, telemetry
    telemetry.access_log.close()


def requests_total(telemetry: Telemetry, method: str, route: str, status: str) -> float | None:
    labels = {"method": method, "route": route, "status": status}
    return telemetry.registry.get_sample_value("bookgen_http_requests_total", labels)


async def test_route_template_status_and_duration(
    small: tuple[httpx.AsyncClient, Telemetry],
) -> None:
    client, telemetry = small
    assert requests_total(telemetry, "GET", "/items/{item_id}", "200") == 0
    assert requests_total(telemetry, "POST", "/items", "201") == 0
    for item_id in (1, 2, 3, 0):
        await client.get(f"/items/{item_id}")
    await client.post("/items")
    assert (await client.get("/boom")).status_code == 500
    await client.get("/nowhere/at/all")
    assert requests_total(telemetry, "GET", "/items/{item_id}", "200") == 3
    assert requests_total(telemetry, "GET", "/items/{item_id}", "404") == 1
    assert requests_total(telemetry, "POST", "/items", "201") == 1
    assert requests_total(telemetry, "GET", "/boom", "500") == 1
    assert requests_total(telemetry, "GET", "unmatched", "404") == 1
    count = telemetry.registry.get_sample_value(
        "bookgen_http_request_duration_seconds_count",
        {"method": "GET", "route": "/items/{item_id}"},
    )
    assert count == 4
    assert telemetry.registry.get_sample_value("bookgen_http_requests_in_flight") == 0


async def test_unknown_methods_collapse(small: tuple[httpx.AsyncClient, Telemetry]) -> None:
    client, telemetry = small
    await client.request("BREW", "/items/1")
    await client.request("FROB", "/items/1")
    assert requests_total(telemetry, "_OTHER", "/items/{item_id}", "405") == 2


async def test_metrics_endpoint_negotiates_openmetrics_with_exemplars(
    small: tuple[httpx.AsyncClient, Telemetry],
) -> None:
    client, telemetry = small
    telemetry.tracing.sampler = RequestSampler(1.0)
    await client.get("/items/7")
    text = await client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain")
    assert "# {" not in text.text
    om = await client.get("/metrics", headers={"accept": "application/openmetrics-text"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")
    exemplars = [line for line in om.text.splitlines() if "# {trace_id=" in line]
    assert any('route="/items/{item_id}"' in line for line in exemplars), exemplars


async def test_ten_thousand_unknown_paths_add_no_series(tmp_path: Path) -> None:
    rng = random.Random(3)
    methods = ("GET", "POST", "DELETE", "PURGE")
    async with instrumented_app(fast_settings(tmp_path)) as inst:
        for method in methods:  # one of each first: a new method may add its bounded series once
            await inst.client.request(method, "/warm-up")
        before = series(inst.registry)
        for i in range(10_000):
            path = "/" + "/".join(
                "".join(rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(1, 12)))
                for _ in range(rng.randint(1, 4))
            )
            response = await inst.client.request(methods[i % 4], path)
            assert response.status_code in (404, 405)
        after = series(inst.registry)
        assert after == before
        unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
        assert inst.registry.get_sample_value("bookgen_http_requests_total", unmatched) == 2501


def test_settings_accept_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOKGEN_TELEMETRY", "off")
    assert Settings().telemetry is False


async def test_access_log_lines_are_json(small: tuple[httpx.AsyncClient, Telemetry]) -> None:
    client, telemetry = small
    stream = io.StringIO()
    telemetry.log_handler.setStream(stream)
    await client.get("/items/5?token=secret")
    telemetry.access_log.flush()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [line for line in lines if line.get("logger") == "bookgen.access"]
    assert access, lines
    line = access[-1]
    assert line["route"] == "/items/{item_id}" and line["status"] == 200
    assert line["method"] == "GET" and line["level"] == "INFO" and line["duration_ms"] >= 0
    assert "timestamp" in line and "secret" not in json.dumps(line)


async def test_access_log_names_the_job(tmp_path: Path) -> None:
    async with instrumented_app(fast_settings(tmp_path)) as inst:
        stream = io.StringIO()
        inst.telemetry.log_handler.setStream(stream)
        await inst.client.get('/api/v1/biographies/abc"def/status')
        inst.telemetry.access_log.flush()
    [line] = [json.loads(x) for x in stream.getvalue().splitlines() if "bookgen.access" in x]
    assert line["job_id"] == 'abc"def' and line["status"] == 404


@pytest.mark.parametrize("on", [True, False])
async def test_access_log_follows_its_setting(tmp_path: Path, on: bool) -> None:
    async with instrumented_app(fast_settings(tmp_path, access_log=on)) as inst:
        stream = io.StringIO()
        inst.telemetry.log_handler.setStream(stream)
        assert (await inst.client.get("/api/v1/status")).status_code == 200
        inst.telemetry.access_log.flush()
    lines = [x for x in stream.getvalue().splitlines() if '"bookgen.access"' in x]
    assert len(lines) == (1 if on else 0), lines


async def test_build_app_attaches_telemetry_only_when_on(tmp_path: Path) -> None:
    from bookgen.asgi import build_app

    off = build_app(fast_settings(tmp_path, telemetry=False))
    assert not hasattr(off.state, "telemetry")
    assert type(off.state.hooks).__name__ == "Hooks"
    on = build_app(fast_settings(tmp_path, telemetry=True))
    assert type(on.state.hooks).__name__ == "TelemetryHooks"
    on.state.telemetry.log_handler.setStream(io.StringIO())  # no lifespan: keep stdout clean
    transport = httpx.ASGITransport(app=off)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/metrics")).status_code == 404
    transport = httpx.ASGITransport(app=on)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert "bookgen_http_requests_total" in (await client.get("/metrics")).text
