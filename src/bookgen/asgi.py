"""Composition root: the service, with telemetry attached at its one edge unless turned off."""

from __future__ import annotations

from fastapi import FastAPI

from bookgen.service.app import create_app
from bookgen.service.settings import Settings, get_settings


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = create_app(settings)
    if settings.telemetry:
        from bookgen.instrumentation import instrument

        instrument(app, settings)
    return app
