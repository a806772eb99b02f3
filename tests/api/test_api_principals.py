"""Principals: API keys, jobs seen only by their owner (admin sees all), limits per principal."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from bookgen.service.app import create_app
from bookgen.service.auth import Authenticator, TrustedProxies, create_key, hash_key
from bookgen.service.hooks import Hooks
from bookgen.service.store import JobRow, Store
from service_helpers import fast_settings, running_app

BASE = "/api/v1/biographies"
GENERATE = f"{BASE}/generate"
SMALL = {"character": "Ada Lovelace", "chapters": 2, "total_words": 1000}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_each_principal_sees_only_its_jobs_and_admin_sees_all(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, listen_host="0.0.0.0")
    async with running_app(settings) as (app, client):
        app.state.runtime.pause()  # jobs stay pending, so cancel has something to cancel
        store: Store = app.state.store
        key_a, _ = await create_key(store, "alice")
        key_b, _ = await create_key(store, "bob")
        key_admin, _ = await create_key(store, "ops", admin=True)

        anonymous = await client.get(BASE)
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await client.post(GENERATE, json=SMALL)).status_code == 401
        # Authentication comes first: a bad body without a key tells nothing about the API.
        assert (await client.post(GENERATE, json={"chapters": 99})).status_code == 401
        sources = await client.post("/api/v1/sources/validate", json={"sources": [{"title": "x"}]})
        assert sources.status_code == 401
        wrong = await client.get(BASE, headers=bearer("bgk_not-a-key"))
        assert wrong.status_code == 401
        assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]

        created = await client.post(GENERATE, json=SMALL, headers=bearer(key_a))
        assert created.status_code == 202, created.text
        job_a = created.json()["job_id"]
        job_b = (await client.post(GENERATE, json=SMALL, headers=bearer(key_b))).json()["job_id"]

        listed_b = (await client.get(BASE, headers=bearer(key_b))).json()
        assert [item["job_id"] for item in listed_b["items"]] == [job_b]
        assert listed_b["total"] == 1
        for method, path in (
            ("GET", f"{BASE}/{job_a}/status"),
            ("GET", f"{BASE}/{job_a}/download"),
            ("POST", f"{BASE}/{job_a}/cancel"),
        ):
            answer = await client.request(method, path, headers=bearer(key_b))
            assert answer.status_code == 404, (path, answer.text)
        # The owner still sees it, and B's cancel did not touch it.
        own = await client.get(f"{BASE}/{job_a}/status", headers=bearer(key_a))
        assert own.status_code == 200 and own.json()["status"] == "pending"

        listed_admin = (await client.get(BASE, headers=bearer(key_admin))).json()
        assert {item["job_id"] for item in listed_admin["items"]} == {job_a, job_b}
        status_b = await client.get(f"{BASE}/{job_b}/status", headers=bearer(key_admin))
        assert status_b.status_code == 200
        cancelled = await client.post(f"{BASE}/{job_a}/cancel", headers=bearer(key_admin))
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"

        job_row = await store.get_job(job_a)
        assert job_row is not None and job_row.owner == "alice"
        stored = {row.name: row for row in await store.keys()}
        assert stored["alice"].key_hash == hash_key(key_a)
        assert key_a not in {row.key_hash for row in stored.values()}, "only the hash is stored"


async def test_revoked_key_stops_working(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, auth="on", key_cache_ttl_s=0)
    async with running_app(settings) as (app, client):
        store: Store = app.state.store
        key, _ = await create_key(store, "carol")
        assert (await client.get(BASE, headers=bearer(key))).status_code == 200
        assert [row.name for row in await store.revoke_keys("carol")] == ["carol"]
        assert (await client.get(BASE, headers=bearer(key))).status_code == 401


async def test_loopback_run_needs_no_key_and_sees_every_job(tmp_path: Path) -> None:
    async with running_app(fast_settings(tmp_path)) as (app, client):
        app.state.runtime.pause()
        key, _ = await create_key(app.state.store, "dave")
        keyed = (await client.post(GENERATE, json=SMALL, headers=bearer(key))).json()["job_id"]
        plain = (await client.post(GENERATE, json=SMALL)).json()["job_id"]
        listed = (await client.get(BASE)).json()
        assert {item["job_id"] for item in listed["items"]} == {keyed, plain}
        mine = (await client.get(BASE, headers=bearer(key))).json()
        assert [item["job_id"] for item in mine["items"]] == [keyed]


def test_auth_off_on_a_public_address_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bookgen.api"):
        create_app(fast_settings(tmp_path, listen_host="0.0.0.0", auth="off"))
    assert any("turned off" in record.getMessage() for record in caplog.records)


async def test_one_principal_flooding_is_limited_alone(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, auth="on", rate_limit="5/minute")
    async with running_app(settings) as (app, client):
        app.state.runtime.pause()
        flooder, _ = await create_key(app.state.store, "flooder")
        other, _ = await create_key(app.state.store, "other")
        flood = [
            await client.post(GENERATE, json=SMALL, headers=bearer(flooder)) for _ in range(20)
        ]
        codes = [answer.status_code for answer in flood]
        assert codes[:5] == [202] * 5 and set(codes[5:]) == {429}, codes
        assert all(0 < int(a.headers["Retry-After"]) <= 60 for a in flood[5:])
        for _ in range(5):
            answer = await client.post(GENERATE, json=SMALL, headers=bearer(other))
            assert answer.status_code == 202, answer.text
        # A header cannot make a flooder someone else.
        spoofed = await client.post(
            GENERATE,
            json=SMALL,
            headers={**bearer(flooder), "X-Client-Id": "x", "X-Forwarded-For": "10.9.9.9"},
        )
        assert spoofed.status_code == 429


async def test_quota_caps_queued_and_running_books_per_principal(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, auth="on")
    async with running_app(settings) as (app, client):
        app.state.runtime.pause()
        capped, _ = await create_key(app.state.store, "capped", quota=2)
        free, _ = await create_key(app.state.store, "free")
        codes = [
            (await client.post(GENERATE, json=SMALL, headers=bearer(capped))).status_code
            for _ in range(4)
        ]
        assert codes == [202, 202, 429, 429]
        refused = await client.post(GENERATE, json=SMALL, headers=bearer(capped))
        assert "quota" in refused.json()["detail"] and int(refused.headers["Retry-After"]) > 0
        assert (await client.post(GENERATE, json=SMALL, headers=bearer(free))).status_code == 202
        # Once the store is read again the count holds, and a cancelled book frees a place.
        await app.state.admission.refresh()
        assert (await client.post(GENERATE, json=SMALL, headers=bearer(capped))).status_code == 429
        first = (await client.get(BASE, headers=bearer(capped))).json()["items"][0]["job_id"]
        await client.post(f"{BASE}/{first}/cancel", headers=bearer(capped))
        await app.state.admission.refresh()
        assert (await client.post(GENERATE, json=SMALL, headers=bearer(capped))).status_code == 202


async def test_without_auth_the_limit_is_per_address_after_trusted_proxies(
    tmp_path: Path,
) -> None:
    settings = fast_settings(tmp_path, rate_limit="2/minute", forwarded_allow_ips="127.0.0.1")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        app.state.runtime.pause()

        def client_at(address: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=(address, 1234))
            return httpx.AsyncClient(transport=transport, base_url="http://testserver")

        async with client_at("127.0.0.1") as proxy, client_at("192.0.2.7") as direct:
            via = {"X-Forwarded-For": "198.51.100.1"}
            codes = [
                (await proxy.post(GENERATE, json=SMALL, headers=via)).status_code for _ in "abc"
            ]
            assert codes == [202, 202, 429]
            # Another client behind the same proxy has its own count.
            other = {"X-Forwarded-For": "198.51.100.2"}
            assert (await proxy.post(GENERATE, json=SMALL, headers=other)).status_code == 202
            # An untrusted peer's header is ignored: its own address is counted.
            spoof = {"X-Forwarded-For": "198.51.100.3"}
            codes = [
                (await direct.post(GENERATE, json=SMALL, headers=spoof)).status_code for _ in "abc"
            ]
            assert codes == [202, 202, 429]


def test_trusted_proxies_take_the_first_untrusted_hop_from_the_right() -> None:
    proxies = TrustedProxies("10.0.0.0/8, 127.0.0.1")
    assert proxies.client("127.0.0.1", "6.6.6.6, 1.2.3.4, 10.1.1.1") == "1.2.3.4"
    assert proxies.client("8.8.8.8", "1.2.3.4") == "8.8.8.8"
    assert proxies.client("10.0.0.5", None) == "10.0.0.5"
    assert TrustedProxies("").client("127.0.0.1", "1.2.3.4") == "127.0.0.1"
    with pytest.raises(ValueError, match="not an address"):
        TrustedProxies("proxy.example")


async def test_only_priced_models_are_accepted_and_the_schema_says_so(tmp_path: Path) -> None:
    async with running_app(fast_settings(tmp_path)) as (app, client):
        app.state.runtime.pause()
        refused = await client.post(GENERATE, json={**SMALL, "model": "openai/o1-pro"})
        assert refused.status_code == 422
        (error,) = refused.json()["detail"]
        assert error["field"] == "model"
        assert "openai/gpt-4o-mini" in error["msg"] and "bookgen-sim" in error["msg"]
        accepted = await client.post(GENERATE, json={**SMALL, "model": "openai/gpt-4o-mini"})
        assert accepted.status_code == 202
        schema = (await client.get("/openapi.json")).json()
        model = schema["components"]["schemas"]["GenerateRequest"]["properties"]["model"]
        enums = [choice.get("enum") for choice in model["anyOf"] if "enum" in choice]
        assert enums == [sorted(app.state.settings.prices)]


class _Rejections(Hooks):
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def job_rejected(self, reason: str) -> None:
        self.reasons.append(reason)


async def test_refusals_do_not_wait_for_a_stalled_store(tmp_path: Path) -> None:
    """With the store's write path stuck, rate, quota and queue-full refusals still answer."""
    settings = fast_settings(tmp_path, auth="on", rate_limit="3/minute", max_queue=3)
    hooks = _Rejections()
    async with running_app(settings, hooks) as (app, client):
        app.state.runtime.pause()
        store: Store = app.state.store
        one, _ = await create_key(store, "one", quota=1)
        two, _ = await create_key(store, "two")
        stuck = asyncio.Event()

        async def stalled_write(job: JobRow) -> JobRow:
            await stuck.wait()
            return job

        store.add_job = stalled_write  # type: ignore[method-assign]

        def submit(key: str) -> asyncio.Task[httpx.Response]:
            return asyncio.create_task(client.post(GENERATE, json=SMALL, headers=bearer(key)))

        hanging = [submit(one), submit(two)]
        await asyncio.sleep(0.1)
        assert not any(task.done() for task in hanging), "the admitted ones wait for the store"
        async with asyncio.timeout(5):
            over_quota = await client.post(GENERATE, json=SMALL, headers=bearer(one))
            hanging.append(submit(two))
            await asyncio.sleep(0.1)
            queue_full = await client.post(GENERATE, json=SMALL, headers=bearer(two))
            limited = await client.post(GENERATE, json=SMALL, headers=bearer(two))
        assert over_quota.status_code == 429 and "quota" in over_quota.json()["detail"]
        assert queue_full.status_code == 429 and "queue is full" in queue_full.json()["detail"]
        assert limited.status_code == 429 and "rate limit" in limited.json()["detail"]
        assert hooks.reasons == ["quota", "queue_full", "rate_limited"]
        assert not any(task.done() for task in hanging)
        stuck.set()
        assert [(await task).status_code for task in hanging] == [202, 202, 202]


@pytest.mark.parametrize(("auth", "demanded"), [("auto", True), ("off", False)])
def test_a_socket_beyond_loopback_demands_a_key_unless_auth_is_off_by_name(
    tmp_path: Path, auth: str, demanded: bool
) -> None:
    # Settings say loopback, but the server (not `bookgen serve`) accepted on a public address.
    authenticator = Authenticator(fast_settings(tmp_path, auth=auth))
    request = Request({"type": "http", "server": ("10.0.0.5", 8000), "headers": []})
    assert authenticator._must_authenticate(request) is demanded
