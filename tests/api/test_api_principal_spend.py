"""Spend per principal is exported as a gauge labelled with the key's name, never the key."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import update

from bookgen.instrumentation import instrument
from bookgen.service.app import create_app
from bookgen.service.auth import create_key
from bookgen.service.store import JobRow, Store
from service_helpers import fast_settings

GENERATE = "/api/v1/biographies/generate"
SMALL = {"character": "Ada Lovelace", "chapters": 2, "total_words": 1000}


async def test_spend_per_principal_gauge(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, telemetry=True, access_log=False)
    registry = CollectorRegistry()
    app = create_app(settings)
    instrument(app, settings, registry=registry)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        app.state.runtime.pause()
        store: Store = app.state.store
        key, _ = await create_key(store, "alice")
        mine = await client.post(GENERATE, json=SMALL, headers={"Authorization": f"Bearer {key}"})
        anonymous = await client.post(GENERATE, json=SMALL)
        assert mine.status_code == anonymous.status_code == 202
        for job_id, usd in ((mine.json()["job_id"], 1.5), (anonymous.json()["job_id"], 0.25)):
            async with store.transaction() as session:
                await session.execute(
                    update(JobRow).where(JobRow.id == job_id).values(cost_usd=usd)
                )
        await app.state.admission.refresh(spend=True)
        value = registry.get_sample_value
        assert value("bookgen_principal_spend_usd", {"principal": "alice"}) == 1.5
        assert value("bookgen_principal_spend_usd", {"principal": "(anonymous)"}) == 0.25
        assert value("bookgen_principal_spend_usd", {"principal": "(other)"}) == 0.0
        exposition = generate_latest(registry).decode()
        assert key not in exposition and key[4:20] not in exposition
