"""Service settings: one home, read from `BOOKGEN_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ModelPrice(BaseModel):
    """USD per million tokens."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


def _default_prices() -> dict[str, ModelPrice]:
    return {
        "bookgen-sim": ModelPrice(input_per_mtok=0.15, output_per_mtok=0.60),
        "openai/gpt-4o-mini": ModelPrice(input_per_mtok=0.15, output_per_mtok=0.60),
        "openai/gpt-4o": ModelPrice(input_per_mtok=2.50, output_per_mtok=10.00),
        "anthropic/claude-3.5-sonnet": ModelPrice(input_per_mtok=3.00, output_per_mtok=15.00),
        "meta-llama/llama-3.1-70b-instruct": ModelPrice(input_per_mtok=0.12, output_per_mtok=0.30),
    }


class SimSettings(BaseModel):
    """Knobs of the built-in simulated model; all can be changed at runtime via its admin route."""

    tokens_per_second: float = Field(default=40.0, gt=0)
    time_to_first_token_s: float = Field(default=0.2, ge=0)
    jitter: float = Field(default=0.1, ge=0, le=1)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1)
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    retry_after_s: float = Field(default=1.0, ge=0)
    # The status `error_rate` answers with (500, or 502/503/504 for a gateway-style outage).
    error_status: int = Field(default=500, ge=500, le=599)
    # Fault injection (issue 5): a pause once mid-response, latency added before the first token,
    # and how long a simulated timeout hangs (bounded; longer than the client's timeout).
    stall_s: float = Field(default=0.0, ge=0, le=3600)
    latency_s: float = Field(default=0.0, ge=0, le=3600)
    hang_s: float = Field(default=150.0, ge=0, le=3600)
    # Like a real model, prose misses the asked length by up to this fraction (deterministic per
    # prompt), so the pipeline's length validation is exercised on every run, not only in tests.
    length_error: float = Field(default=0.08, ge=0, le=0.5)
    # Quotas per API key, enforced as a provider does (429, Retry-After, x-ratelimit-* headers);
    # 0 turns one off. Requests and tokens per minute are OpenAI's usage tier 2 for gpt-4o-mini
    # (platform.openai.com/docs/guides/rate-limits); OpenAI publishes no stream limit, so
    # concurrent streams is our own bound, a paid key's order of magnitude: one process with
    # llm_max_concurrency=256 fills it, and several sharing it learn their share from its 429s.
    rpm_limit: int = Field(default=5_000, ge=0)
    tpm_limit: int = Field(default=2_000_000, ge=0)
    max_concurrent_streams: int = Field(default=256, ge=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BOOKGEN_", env_nested_delimiter="__", extra="ignore"
    )

    # Storage
    database_url: str = "sqlite+aiosqlite:///./bookgen.db"
    # One machine upgrades its schema on start; deployments run `bookgen db upgrade` once first
    # and set this false, so app processes only check the revision and never run DDL.
    db_auto_migrate: bool = True

    # LLM provider (resolved by bookgen.service.llm.provider, which fails closed). The simulated
    # model runs only when `llm_sim` is true or no provider setting at all is given; a key with
    # no base URL means OpenRouter.
    llm_sim: bool | None = None
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_provider_name: str = "openrouter"
    model: str = "bookgen-sim"
    llm_timeout_s: float = Field(default=120.0, gt=0)  # connect, and between two reads
    # One attempt, start to last token (a whole chapter streams in ~1.5 min at 40 tokens/s).
    llm_attempt_deadline_s: float = Field(default=600.0, gt=0)
    llm_max_retries: int = Field(default=4, ge=0, le=20)
    llm_backoff_base_s: float = Field(default=0.5, ge=0)
    llm_backoff_max_s: float = Field(default=30.0, ge=0)
    # A Retry-After up to this long is waited out in full; a longer one ends the call at once
    # and leaves the wait to the book's own retry (which frees the slot meanwhile).
    llm_retry_after_max_s: float = Field(default=60.0, ge=0)
    # One call, all its attempts and waits included.
    llm_call_deadline_s: float = Field(default=1800.0, gt=0)
    # Provider outages: a book (in-process) or section (worker tier) whose call failed with a
    # retryable error is handed back, stored sections kept, and taken again after a backoff
    # (base doubling up to max); past `llm_handback_max` hand-backs it fails with the reason.
    llm_handback_max: int = Field(default=20, ge=0)
    llm_handback_base_s: float = Field(default=5.0, ge=0)
    llm_handback_max_s: float = Field(default=120.0, ge=0)
    # Circuit breaker: this many retryable failures in a row open it (no new work is taken);
    # after `llm_breaker_open_s` one probe call is let through, and its success closes it.
    llm_breaker_threshold: int = Field(default=5, ge=1)
    llm_breaker_open_s: float = Field(default=10.0, gt=0)
    # The ceiling of the client's concurrency window (`llm/limit.py`), which the provider's 429s
    # narrow, so a ceiling above the key's limit is safe: a paid key's order of magnitude, which
    # one process fills. (It was 64 while the SQLite writer thread made a request's writes wait
    # behind the books'; the store's writes run on the loop now, see `Store.write`.)
    llm_max_concurrency: int = Field(default=256, ge=1)
    llm_stream: bool = True
    prices: dict[str, ModelPrice] = Field(default_factory=_default_prices)
    sim: SimSettings = Field(default_factory=SimSettings)

    # Book defaults (BookGen v1 shape)
    chapters: int = 20
    total_words: int = 51_000
    length_tolerance: float = Field(default=0.05, gt=0, lt=1)
    length_max_attempts: int = Field(default=3, ge=1, le=10)

    # Work scheduling
    job_concurrency: int = Field(default=8, ge=1, description="jobs run at once per process")
    # At least a default book's 22 sections, so no section waits for a second wave; the
    # process-wide llm_max_concurrency is what bounds the total.
    chapter_concurrency: int = Field(
        default=32, ge=1, description="sections written at once per job"
    )
    max_queue: int = Field(default=200, ge=1, description="pending jobs before 429")
    job_lease_s: float = Field(default=30.0, gt=0)
    poll_interval_s: float = Field(default=0.5, gt=0)

    # Worker tier. With a broker URL the API only admits and enqueues; `bookgen worker`
    # processes (Celery) write the books, sharing the store (PostgreSQL across hosts).
    broker_url: str | None = None
    worker_concurrency: int = Field(default=32, ge=1, description="sections at once per worker")
    # A running section renews its lease every third of this; a killed worker's section is
    # queued again within about this long (plus one reaper interval).
    section_lease_s: float = Field(default=30.0, gt=0)
    reap_interval_s: float = Field(default=5.0, gt=0)
    # A section that was cut off this many times fails its book instead of killing more workers
    # (graceful stops do not count; a node failure can cut off the same section more than once).
    section_max_runs: int = Field(default=5, ge=1)
    # The longest one section may take; a section past it counts as a cut-off run.
    section_deadline_s: float = Field(default=1200.0, gt=0)
    # On SIGTERM, running sections get this long to finish before they are handed back.
    worker_drain_s: float = Field(default=20.0, ge=0)
    # A queued section whose message has not been picked up for this long is published again
    # (a broker that lost its queue, e.g. restarted without persistence).
    section_republish_s: float = Field(default=600.0, gt=0)
    # The same, sooner, while this worker has free slots: the broker would have handed a waiting
    # message to it, so one queued this long was lost (e.g. received by a worker killed before it
    # claimed the section; Redis keeps such a message until its visibility timeout).
    section_republish_idle_s: float = Field(default=30.0, gt=0)
    # Exported for the "fewer workers than expected" alert; 0 = not configured.
    workers_expected: int = Field(default=0, ge=0)

    # Principals and admission
    # Who may call the biography and source routes. "auto": a key (`Authorization: Bearer`, made
    # with `bookgen keys create`) is required unless the API listens on loopback only; "on":
    # always required; "off": never required (warned about at start unless loopback).
    auth: Literal["auto", "on", "off"] = "auto"
    # The address the API listens on (`bookgen serve --host` sets it), which "auto" goes by.
    listen_host: str = "127.0.0.1"
    # Proxies whose X-Forwarded-For is believed (addresses or networks, comma separated, "*"
    # for any), as uvicorn's --forwarded-allow-ips; without auth the client address keys the
    # limits, so no other client can choose it with a header.
    forwarded_allow_ips: str = ""
    # Queued + running books per principal when its key sets no quota (and per client address
    # without auth); 0 = no cap.
    principal_max_active: int = Field(default=0, ge=0)
    # How often each API process reconciles its in-memory admission counts with the store.
    admission_refresh_s: float = Field(default=1.0, gt=0)
    # A key lookup (or a miss) is remembered this long: a revoked key stops working within it.
    key_cache_ttl_s: float = Field(default=5.0, ge=0)

    # HTTP edge
    rate_limit: str = "120/minute"
    # A `limits` async storage URI. Memory counts per process (N workers: N x the rate); use
    # e.g. async+redis://127.0.0.1:6379/0 so every worker and host shares one limit.
    rate_limit_storage: str = "async+memory://"
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    debug_routes: bool = False
    # The debug routes answer only requests carrying it in X-Debug-Token; with none set they
    # answer nobody (`bookgen up --faults` makes one per run).
    debug_token: SecretStr | None = None
    # Let /sources/validate probe loopback and private addresses (internal documents only).
    sources_allow_private: bool = False
    # False: /sources/validate sends no request at all (accessibility is reported not checked).
    sources_probe: bool = True
    # Calls asking for accessibility checks, per client (apart from the submission limit).
    sources_rate_limit: str = "30/minute"

    # Telemetry (the service never reads these itself; the composition root does)
    telemetry: bool = True
    worker_index: int = 0
    metrics_port_base: int | None = None
    # Where that per-process /metrics listens: 0.0.0.0 in a container, so the cluster's
    # Prometheus reaches it on a port the API's Service and ingress do not publish.
    metrics_host: str = "127.0.0.1"
    # Record prompt/completion text in LLM spans (personal data: off unless opted in).
    capture_content: bool = False
    log_level: str = "INFO"
    # One JSON line per request (with telemetry on; it replaces uvicorn's access log).
    access_log: bool = True


@lru_cache
def get_settings() -> Settings:
    return Settings()
