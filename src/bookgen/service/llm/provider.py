"""Which model the service talks to, decided once at start; anything unclear stops startup.

The simulated model writes plausible prose for free, so a deployment that silently fell back to
it would look healthy while producing no real book. It therefore runs only when asked for
(`BOOKGEN_LLM_SIM=true`, `--sim`) or when no provider setting at all is present (a fresh
checkout), and then says so; every other combination must name a real provider completely.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from bookgen.service.hooks import Hooks
from bookgen.service.llm.errors import LLMConfigError
from bookgen.service.settings import Settings

OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
SIM_PROVIDER = "bookgen-sim"
PROVIDER_FIELDS = ("llm_sim", "llm_base_url", "llm_api_key", "llm_provider_name")

logger = logging.getLogger("bookgen.llm")


@dataclass(frozen=True, slots=True)
class Provider:
    """The resolved provider. `base_url` None means: start the simulated model in-process."""

    name: str
    simulated: bool
    base_url: str | None
    why: str  # for the start-up log line: how the choice was made (never a secret)


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LLMConfigError(
            f"BOOKGEN_LLM_BASE_URL={url!r} is not an http(s) URL: set it to the provider's "
            "OpenAI-compatible base, e.g. https://openrouter.ai/api/v1"
        )
    return url.rstrip("/")


def resolve_provider(settings: Settings) -> Provider:
    """The provider the settings name, or `LLMConfigError` with one line naming the fix."""
    # Set explicitly, to something: None passed in code is the same as not set.
    given = {
        name
        for name in PROVIDER_FIELDS
        if name in settings.model_fields_set and getattr(settings, name) is not None
    }
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key is not None else None
    url = settings.llm_base_url
    if settings.llm_api_key is not None and not (key or "").strip():
        raise LLMConfigError(
            "BOOKGEN_LLM_API_KEY is set but empty: give the provider's key, or unset it"
        )
    if url is not None and not url.strip():
        raise LLMConfigError(
            "BOOKGEN_LLM_BASE_URL is set but empty: give the provider's URL, or unset it"
        )
    if settings.llm_sim:
        if key:
            raise LLMConfigError(
                "BOOKGEN_LLM_SIM=true contradicts BOOKGEN_LLM_API_KEY: unset the key to use the "
                "simulated model, or unset BOOKGEN_LLM_SIM (and drop --sim) to use the provider"
            )
        if url is not None:
            # A simulated model served elsewhere (`bookgen sim-llm`, `bookgen up`).
            return Provider(SIM_PROVIDER, True, _check_url(url), "BOOKGEN_LLM_SIM=true")
        return Provider(SIM_PROVIDER, True, None, "BOOKGEN_LLM_SIM=true")
    if not given:
        return Provider(SIM_PROVIDER, True, None, "no provider configured")
    if url is None and not key:
        raise LLMConfigError(
            "no LLM provider: set BOOKGEN_LLM_API_KEY (OpenRouter) or BOOKGEN_LLM_BASE_URL "
            "(any OpenAI-compatible API), or BOOKGEN_LLM_SIM=true for the simulated model"
        )
    if url is None:
        return Provider(settings.llm_provider_name, False, OPENROUTER_BASE_URL, "API key")
    base = _check_url(url)
    if urlsplit(base).hostname == "openrouter.ai" and not key:
        raise LLMConfigError(
            "BOOKGEN_LLM_BASE_URL is OpenRouter but BOOKGEN_LLM_API_KEY is not set: set the key"
        )
    return Provider(settings.llm_provider_name, False, base, "BOOKGEN_LLM_BASE_URL")


def announce_provider(settings: Settings, hooks: Hooks) -> Provider:
    """Resolve the provider and say which it is: a log line and `hooks.llm_provider`. On a
    bad configuration, log the one line naming the fix and raise `LLMConfigError`."""
    try:
        provider = resolve_provider(settings)
    except LLMConfigError as error:
        logger.error("LLM provider misconfigured: %s", error)
        raise
    if provider.simulated:
        logger.warning(
            "LLM provider: the SIMULATED model (%s; %s); books are not written by a real model",
            provider.why,
            "embedded" if provider.base_url is None else provider.base_url,
        )
    else:
        logger.info("LLM provider: %s at %s", provider.name, provider.base_url)
    hooks.llm_provider(provider.name, provider.simulated)
    return provider
