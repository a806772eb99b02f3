"""Shared by the instrumentation tests: fast settings, an instrumented app, exposition checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from bookgen.instrumentation import Telemetry, instrument
from bookgen.instrumentation import catalogue as cat
from bookgen.service.settings import Settings
from service_helpers import fast_settings as service_fast_settings

CHARACTER = "Ada Lovelace"
GENERATE = "/api/v1/biographies/generate"


def fast_settings(tmp_path: Path, **overrides: object) -> Settings:
    """The service tests' settings, with telemetry on."""
    return service_fast_settings(tmp_path, **{"telemetry": True, **overrides})


@dataclass
class Instrumented:
    app: FastAPI
    telemetry: Telemetry
    client: httpx.AsyncClient
    spans: InMemorySpanExporter

    @property
    def registry(self) -> CollectorRegistry:
        return self.telemetry.registry


@asynccontextmanager
async def instrumented_app(settings: Settings) -> AsyncIterator[Instrumented]:
    """The real service, instrumented on a private registry, running its lifespan."""
    from bookgen.service.app import create_app

    app = create_app(settings)
    spans = InMemorySpanExporter()
    telemetry = instrument(app, settings, registry=CollectorRegistry(), span_exporter=spans)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Instrumented(app, telemetry, client, spans)


async def run_job(client: httpx.AsyncClient, chapters: int = 2, total_words: int = 1000) -> str:
    """Submit a small biography and wait (bounded) until it completes."""
    body = {"character": CHARACTER, "chapters": chapters, "total_words": total_words}
    response = await client.post(GENERATE, json=body)
    assert response.status_code == 202, response.text
    job_id = str(response.json()["job_id"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = (await client.get(f"/api/v1/biographies/{job_id}/status")).json()
        if status["status"] in ("completed", "failed", "cancelled"):
            assert status["status"] == "completed", status
            return job_id
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in 60 s")


def series(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in registry.collect()
        for sample in family.samples
    }


def catalogue_problems(exposition: str, skip: Collection[str] = ()) -> list[str]:
    """Every catalogued family (but `skip`) present with its type, label names and buckets; else
    what is not."""
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    problems: list[str] = []
    for spec in cat.CATALOGUE:
        if spec.name in skip:
            continue
        # The parser names counter families without `_total`.
        family = families.get(spec.base_name)
        if family is None or not family.samples:
            problems.append(f"{spec.name}: missing")
            continue
        expected_type = "gauge" if spec.type == "info" else spec.type
        if family.type != expected_type:
            problems.append(f"{spec.name}: type {family.type}, catalogue says {spec.type}")
        for sample in family.samples:
            names = set(sample.labels) - {"le"}
            if names != set(spec.labels):
                problems.append(f"{spec.name}: labels {sorted(names)} != {sorted(spec.labels)}")
                break
        if spec.type == "histogram":
            les = {s.labels["le"] for s in family.samples if s.name.endswith("_bucket")}
            wanted = {floatToGoString(b) for b in spec.buckets} | {"+Inf"}  # type: ignore[no-untyped-call]
            if les != wanted:
                problems.append(f"{spec.name}: buckets {sorted(les)} != {sorted(wanted)}")
    return problems
