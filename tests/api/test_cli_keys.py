"""`bookgen keys create|list|revoke`: the key is printed once, stored hashed, and can be revoked."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from bookgen.cli import main
from bookgen.service.auth import KEY_PREFIX, hash_key
from bookgen.service.settings import get_settings
from bookgen.service.store import Store


def test_create_list_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    monkeypatch.setenv("BOOKGEN_DATABASE_URL", url)
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        created = runner.invoke(main, ["keys", "create", "alice", "--quota", "3"])
        assert created.exit_code == 0, created.output
        key = created.stdout.strip()
        assert key.startswith(KEY_PREFIX) and len(key) > 40
        admin = runner.invoke(main, ["keys", "create", "ops", "--admin"])
        assert admin.exit_code == 0, admin.output

        listed = runner.invoke(main, ["keys", "list"])
        assert listed.exit_code == 0, listed.output
        assert "alice" in listed.output and "ops" in listed.output and "admin" in listed.output
        assert key not in listed.output and key[10:] not in listed.output

        async def stored() -> list[tuple[str, str, int | None]]:
            store = Store.from_url(url)
            try:
                return [(r.name, r.key_hash, r.quota) for r in await store.keys()]
            finally:
                await store.close()

        assert ("alice", hash_key(key), 3) in asyncio.run(stored())

        revoked = runner.invoke(main, ["keys", "revoke", "alice"])
        assert revoked.exit_code == 0 and "alice" in revoked.output
        assert [name for name, _, _ in asyncio.run(stored())] == ["ops"]
        again = runner.invoke(main, ["keys", "revoke", "alice"])
        assert again.exit_code != 0 and "no active key" in again.output

        bad = runner.invoke(main, ["keys", "create", "ip:1.2.3.4"])
        assert bad.exit_code == 2 and "key name" in bad.output
        zero = runner.invoke(main, ["keys", "create", "bob", "--quota", "0"])
        assert zero.exit_code == 2
    finally:
        get_settings.cache_clear()


def test_serve_tells_the_app_where_it_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    """`bookgen serve --host` reaches the settings, so keys are required off loopback."""
    import bookgen.cli.serve as serve_module
    from bookgen.service.auth import auth_required

    seen: list[tuple[str, int]] = []
    monkeypatch.setattr(
        serve_module, "run_worker", lambda host, port, **_: seen.append((host, port))
    )
    # Registered with monkeypatch so that both are restored after the test.
    monkeypatch.setenv("BOOKGEN_LISTEN_HOST", "127.0.0.1")
    monkeypatch.setenv("BOOKGEN_FORWARDED_ALLOW_IPS", "")
    monkeypatch.setenv("BOOKGEN_WORKER_INDEX", "0")
    try:
        result = CliRunner().invoke(
            main, ["serve", "--host", "0.0.0.0", "--port", "1", "--forwarded-allow-ips", "10.0.0.1"]
        )
        assert result.exit_code == 0, result.output
        settings = get_settings()
        assert seen == [("0.0.0.0", 1)]
        assert settings.listen_host == "0.0.0.0" and auth_required(settings)
        assert settings.forwarded_allow_ips == "10.0.0.1"
    finally:
        get_settings.cache_clear()
