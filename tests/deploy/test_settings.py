"""The settings a deployment relies on: metrics reachable from the cluster, no DDL by app pods."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from bookgen.instrumentation import instrument
from bookgen.service.settings import Settings


def test_metrics_port_listens_where_the_setting_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOKGEN_METRICS_HOST", "0.0.0.0")
    settings = Settings(metrics_port_base=9100, worker_index=0)
    telemetry = instrument(FastAPI(), settings, registry=CollectorRegistry())
    try:
        assert telemetry.worker_server is not None
        assert (telemetry.worker_server.host, telemetry.worker_server.port) == ("0.0.0.0", 9100)
    finally:
        telemetry.tracing.shutdown()


def test_one_machine_keeps_loopback_metrics_and_migrates_on_start() -> None:
    settings = Settings()
    assert settings.metrics_host == "127.0.0.1"
    assert settings.db_auto_migrate is True


def test_a_deployment_turns_start_up_migrations_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOKGEN_DB_AUTO_MIGRATE", "false")
    assert Settings().db_auto_migrate is False
