"""10 concurrent clients exercise every v1 route against 2 workers: no request may fail.

Duration: BOOKGEN_TEST_SOAK_S (default 10 s; the issue's figure is 60 s).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from collections import Counter, defaultdict

import httpx
import pytest

from bookgen.acceptance.clients import TRUSTED_PROXY, client_headers
from conftest import ServerFactory

pytestmark = pytest.mark.realserver

CLIENTS = 10
SOAK_S = float(os.environ.get("BOOKGEN_TEST_SOAK_S", "10"))
SMALL = {"character": "Soak Test", "chapters": 2, "total_words": 1000}
SOURCES = {
    "sources": [
        {"url": "https://en.wikipedia.org/wiki/Ada_Lovelace", "title": "Ada", "author": "W"},
        {"url": "not a url", "title": "Broken"},
    ],
    "check_accessibility": False,
}


class Tally:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.failures: Counter[str] = Counter()
        self.examples: list[str] = []

    async def call(
        self,
        client: httpx.AsyncClient,
        group: str,
        method: str,
        path: str,
        expected: set[int],
        **kwargs: object,
    ) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as error:
            self.failures[group] += 1
            self.examples.append(f"{group}: {error!r}")
            return None
        self.latency[group].append(time.perf_counter() - started)
        if response.status_code not in expected:
            self.failures[group] += 1
            self.examples.append(f"{group}: {response.status_code} {response.text[:200]}")
        return response


async def user(number: int, url: str, tally: Tally, done_job: str, until: float) -> None:
    rng = random.Random(number)
    headers = client_headers(f"soak-{number}")
    own: list[str] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
        while time.monotonic() < until:
            await tally.call(client, "health", "GET", "/health", {200})
            await tally.call(client, "ready", "GET", "/ready", {200})
            await tally.call(client, "status", "GET", "/api/v1/status", {200})
            await tally.call(
                client,
                "list",
                "GET",
                "/api/v1/biographies",
                {200},
                params=rng.choice([{"page_size": 10}, {"status": "completed"}]),
            )
            await tally.call(
                client, "job-status", "GET", f"/api/v1/biographies/{done_job}/status", {200}
            )
            await tally.call(
                client,
                "download",
                "GET",
                f"/api/v1/biographies/{done_job}/download",
                {200},
                params={"format": rng.choice(["txt", "md", "docx"])},
            )
            await tally.call(
                client, "sources", "POST", "/api/v1/sources/validate", {200}, json=SOURCES
            )
            if rng.random() < 0.3:
                created = await tally.call(
                    client, "generate", "POST", "/api/v1/biographies/generate", {202}, json=SMALL
                )
                if created is not None and created.status_code == 202:
                    own.append(created.json()["job_id"])
            if own and rng.random() < 0.3:
                job_id = own.pop()
                # Running or pending: 200; finished already: 409. Either is a correct answer.
                await tally.call(
                    client, "cancel", "POST", f"/api/v1/biographies/{job_id}/cancel", {200, 409}
                )
            await tally.call(client, "not-found", "GET", "/api/v1/biographies/nope/status", {404})
            await tally.call(
                client,
                "invalid",
                "POST",
                "/api/v1/biographies/generate",
                {422},
                json={"character": ""},
            )


def test_ten_clients_every_route_no_failures(serve: ServerFactory, database_url: str) -> None:
    server = serve(
        database_url,
        workers=2,
        BOOKGEN_SIM__TOKENS_PER_SECOND=2000,
        BOOKGEN_RATE_LIMIT="100000/minute",
        BOOKGEN_MAX_QUEUE=100000,
        # The test is the clients' edge: each client is an address of its own.
        BOOKGEN_FORWARDED_ALLOW_IPS=TRUSTED_PROXY,
    )
    job = httpx.post(f"{server.url}/api/v1/biographies/generate", json=SMALL).json()["job_id"]
    deadline = time.monotonic() + 30
    while httpx.get(f"{server.url}/api/v1/biographies/{job}/status").json()["status"] != (
        "completed"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)

    tally = Tally()

    async def run() -> None:
        until = time.monotonic() + SOAK_S
        await asyncio.gather(*(user(n, server.url, tally, job, until) for n in range(CLIENTS)))

    started = time.monotonic()
    asyncio.run(run())
    elapsed = time.monotonic() - started
    total = sum(len(v) for v in tally.latency.values())
    print(
        f"\nsoak: {CLIENTS} clients, {elapsed:.1f} s, {total} requests, {total / elapsed:.0f} req/s"
    )
    for group, values in sorted(tally.latency.items()):
        p95 = statistics.quantiles(values, n=20)[18] if len(values) >= 20 else max(values)
        print(
            f"  {group:<11} n={len(values):>6}  p95={p95 * 1000:7.1f} ms  "
            f"failed={tally.failures[group]}"
        )
    assert not tally.failures, tally.examples[:10]
    assert {
        "health",
        "ready",
        "status",
        "list",
        "job-status",
        "download",
        "sources",
        "generate",
    } <= tally.latency.keys()
    assert total > CLIENTS * 10
    assert server.stop() == 0
