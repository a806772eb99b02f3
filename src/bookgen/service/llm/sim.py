"""The simulated model: an OpenAI-compatible chat-completions server inside the package.

Routes (mount the app at the root; clients use base URL `http://HOST:PORT/v1`):
- `POST /v1/chat/completions` - streaming (SSE: `data: {chunk}` lines, then `data: [DONE]`; with
  `stream_options.include_usage` a last chunk with empty `choices` and `usage`) and not.
- `GET /v1/models`, `GET /health`, `GET /metrics` (own `CollectorRegistry` per app).
- `GET|PATCH /admin/config` - read or change the knobs (`SimSettings`) at runtime; a PATCH body
  holds the knobs to change, unknown names or bad values answer 422 and change nothing.

Prompt conventions (the last user message decides):
- A line `Target length: N words.` asks for N words of prose (default 300). Output is
  deterministic for a prompt (seeded by a SHA-256 of all messages), readable English sentences
  ending in periods, in paragraphs separated by blank lines.
- A message containing `Return a JSON outline` gets a JSON object
  `{"chapters": [{"title": ..., "synopsis": ...}, ...]}` with as many entries as a line
  `Chapters: N.` asks for (default 5); each synopsis is one sentence (10-16 words, or sized so
  the outline has about `Target length` words when that line is present).
- A message containing `Return exactly N lines` (the pipeline's outline prompt) gets N lines
  `i. Title: one-sentence synopsis.`, about `Target length` words in all when given.
- `max_tokens` (or `max_completion_tokens`) is honoured: 1 word = 4/3 tokens; when the answer is
  cut, `finish_reason` is `"length"`, else `"stop"`. Usage: prompt tokens = 4/3 x prompt words,
  completion tokens = ceil(4/3 x completion words).

Pacing: every response waits `latency_s` + `time_to_first_token_s`, then emits at
`tokens_per_second` (per stream), in chunks every ~0.1 s that carry whatever words are due by
then, so the rate stays exact under load while 100+ streams cost ~10 chunks/s each. `jitter`
(0-1) scales the first-token wait and each tick by a random factor in [1-jitter, 1+jitter]
without drift, since words due are computed from the stream's start. `stall_s` pauses once
half way through. Non-streaming answers take the same time as a stream would.

Faults (each request draws independently): `error_rate` -> `error_status` (500 by default;
503 with `error_rate` 1 is an outage), `rate_limit_rate` -> 429 with
`Retry-After: retry_after_s` (a decimal number of seconds when not whole), `timeout_rate` ->
the request hangs for `hang_s` (bounded; ends early when the client disconnects) then 504.

Quotas, per API key (the bearer token; none is one anonymous key), as a paid provider tier
enforces them: `rpm_limit` requests and `tpm_limit` tokens per minute (token buckets that refill
continuously; a request is charged its prompt plus the completion it will return) and
`max_concurrent_streams` answers in progress at once. Over any of them: 429 with `Retry-After`
(when the bucket will hold the request again) and an OpenAI-style error body. Every answer carries
OpenAI's headers: `x-ratelimit-limit-requests|tokens`, `x-ratelimit-remaining-requests|tokens`
and `x-ratelimit-reset-requests|tokens` (time until the bucket is full, e.g. `1.2s`, `6m0s`).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask

from bookgen.service.llm.prose import outline_json, outline_lines, prose, seed_for
from bookgen.service.settings import SimSettings

SIM_MODEL = "bookgen-sim"
DEFAULT_WORDS = 300
DEFAULT_CHAPTERS = 5
MAX_WORDS = 200_000
CHUNK_INTERVAL_S = 0.1
WORDS_PER_TOKEN = 3.0 / 4.0

_TARGET_RE = re.compile(r"Target length:\s*([\d,_]+)\s*words", re.IGNORECASE)
_CHAPTERS_RE = re.compile(r"Chapters:\s*(\d+)", re.IGNORECASE)
_OUTLINE_MARK = "return a json outline"
_LINES_RE = re.compile(r"Return exactly\s+(\d+)\s+lines", re.IGNORECASE)
_PIECES = re.compile(r"\S+\s*")


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            return " ".join(str(p.get("text", "")) for p in self.content if isinstance(p, dict))
        return ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stream: bool = False
    stream_options: dict[str, Any] | None = None


def completion_tokens(words: int) -> int:
    return math.ceil(words / WORDS_PER_TOKEN) if words else 0


def prompt_tokens(messages: list[Message]) -> int:
    return completion_tokens(sum(len(m.text().split()) for m in messages))


def _target_words(text: str) -> int | None:
    found = _TARGET_RE.search(text)
    if not found:
        return None
    digits = re.sub(r"[,_]", "", found.group(1))
    return max(1, min(MAX_WORDS, int(digits))) if digits else None


def compose(req: ChatRequest, length_error: float = 0.0) -> tuple[str, str]:
    """(text, finish_reason) for a request: deterministic, cut to `max_tokens`.

    Prose misses its target by a seeded factor within ±`length_error`, as a real model does.
    """
    all_text = "\n".join(f"{m.role}:{m.text()}" for m in req.messages)
    seed = seed_for(all_text)
    users = [m for m in req.messages if m.role == "user"]
    last = (users[-1] if users else req.messages[-1]).text()
    target = _target_words(last)
    if _OUTLINE_MARK in last.lower():
        found = _CHAPTERS_RE.search(last)
        chapters = max(1, min(200, int(found.group(1)))) if found else DEFAULT_CHAPTERS
        text = outline_json(seed, chapters, target)
    elif found_lines := _LINES_RE.search(last):
        text = outline_lines(seed, max(1, min(200, int(found_lines.group(1)))), target)
    else:
        words = target or DEFAULT_WORDS
        if length_error > 0:
            words = max(
                1, round(words * random.Random(seed).uniform(1 - length_error, 1 + length_error))
            )
        text = prose(seed, words)
    limit = req.max_tokens or req.max_completion_tokens
    if limit is not None:
        max_words = int(limit * WORDS_PER_TOKEN)
        pieces = _PIECES.findall(text)
        if len(pieces) > max_words:
            return "".join(pieces[:max_words]).rstrip(), "length"
    return text, "stop"


@dataclass
class Bucket:
    """A token bucket of `capacity` that refills `capacity` per minute, continuously."""

    level: float
    at: float

    def refill(self, capacity: float, now: float) -> None:
        rate = capacity / 60.0
        self.level = min(capacity, self.level + (now - self.at) * rate)
        self.at = now

    def wait_for(self, amount: float, capacity: float) -> float:
        """Seconds until `amount` is in the bucket (0 when it is now; inf when it never fits)."""
        if amount <= self.level:
            return 0.0
        if amount > capacity:
            return math.inf
        return (amount - self.level) / (capacity / 60.0)

    def reset_s(self, capacity: float) -> float:
        return max(0.0, (capacity - self.level) / (capacity / 60.0))


@dataclass
class KeyQuota:
    requests: Bucket
    tokens: Bucket
    streams: int = 0


@dataclass
class Admission:
    ok: bool
    headers: dict[str, str]
    retry_after_s: float = 0.0
    limit: str = ""  # requests | tokens | streams, when refused
    message: str = ""


def reset_text(seconds: float) -> str:
    """A duration as OpenAI's reset headers write it: `12ms`, `1.5s`, `6m0s`."""
    if seconds < 1.0:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60.0:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes)}m{rest:.0f}s"


@dataclass
class Quotas:
    """Every API key's buckets and open streams, checked against the current knobs."""

    keys: dict[str, KeyQuota] = field(default_factory=dict)

    def _key(self, key: str, cfg: SimSettings, now: float) -> KeyQuota:
        quota = self.keys.get(key)
        if quota is None:
            quota = KeyQuota(Bucket(cfg.rpm_limit, now), Bucket(cfg.tpm_limit, now))
            self.keys[key] = quota
        if cfg.rpm_limit:
            quota.requests.refill(cfg.rpm_limit, now)
        if cfg.tpm_limit:
            quota.tokens.refill(cfg.tpm_limit, now)
        return quota

    def _headers(self, quota: KeyQuota, cfg: SimSettings) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, bucket, limit in (
            ("requests", quota.requests, cfg.rpm_limit),
            ("tokens", quota.tokens, cfg.tpm_limit),
        ):
            if limit:
                headers[f"x-ratelimit-limit-{name}"] = str(limit)
                headers[f"x-ratelimit-remaining-{name}"] = str(max(0, math.floor(bucket.level)))
                headers[f"x-ratelimit-reset-{name}"] = reset_text(bucket.reset_s(limit))
        return headers

    def admit(self, key: str, tokens: int, cfg: SimSettings, now: float) -> Admission:
        """Take one request and `tokens` from the key's buckets and open a stream, or refuse."""
        quota = self._key(key, cfg, now)
        waits = {
            "requests": quota.requests.wait_for(1, cfg.rpm_limit) if cfg.rpm_limit else 0.0,
            "tokens": quota.tokens.wait_for(tokens, cfg.tpm_limit) if cfg.tpm_limit else 0.0,
        }
        full = cfg.max_concurrent_streams and quota.streams >= cfg.max_concurrent_streams
        limit, wait = max(waits.items(), key=lambda kv: kv[1])
        if wait > 0 or full:
            headers = self._headers(quota, cfg)
            if wait == math.inf:
                message = f"Request too large: {tokens} tokens, limit {cfg.tpm_limit} per min"
                return Admission(False, headers, 60.0, "tokens", message)
            if wait <= 0:  # only the stream limit: a stream ends within seconds, try again soon
                limit, wait = "streams", 1.0
            message = f"Rate limit reached for {limit} (per API key); retry in {wait:.3g} s"
            return Admission(False, headers, wait, limit, message)
        if cfg.rpm_limit:
            quota.requests.level -= 1
        if cfg.tpm_limit:
            quota.tokens.level -= tokens
        quota.streams += 1
        return Admission(True, self._headers(quota, cfg))

    def release(self, key: str) -> None:
        quota = self.keys.get(key)
        if quota is not None and quota.streams > 0:
            quota.streams -= 1


def api_key(request: Request) -> str:
    """The bearer token that names the caller's quota (kept in memory only, never logged)."""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else "anonymous"


class SimMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bookgen_sim_requests",
            "Chat-completions requests answered by the simulated model, by HTTP status.",
            ["status"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "bookgen_sim_tokens_emitted",
            "Completion tokens emitted by the simulated model.",
            registry=self.registry,
        )
        self.active = Gauge(
            "bookgen_sim_active_requests",
            "Chat-completions requests in progress.",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "bookgen_sim_rate_limited",
            "Requests refused by a quota, by the limit they hit (requests, tokens, streams).",
            ["limit"],
            registry=self.registry,
        )
        for status in ("200", "400", "429", "500", "504"):
            self.requests.labels(status=status)
        for limit in ("requests", "tokens", "streams"):
            self.rate_limited.labels(limit=limit)


def _jittered(rng: random.Random, value: float, jitter: float) -> float:
    if value <= 0 or jitter <= 0:
        return max(0.0, value)
    return value * rng.uniform(1.0 - jitter, 1.0 + jitter)


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}".rstrip("0")


def create_sim_app(settings: SimSettings | None = None, *, seed: int | None = None) -> FastAPI:
    """The simulated model as a FastAPI app. `seed` fixes the fault/jitter draws (tests)."""
    app = FastAPI(title="BookGen simulated model", docs_url=None, redoc_url=None)
    app.state.sim_config = (settings or SimSettings()).model_copy()
    metrics = SimMetrics()
    app.state.sim_metrics = metrics
    quotas = Quotas()
    app.state.sim_quotas = quotas
    rng = random.Random(seed)

    def config() -> SimSettings:
        cfg: SimSettings = app.state.sim_config
        return cfg

    def error(
        status: int, message: str, kind: str, headers: dict[str, str] | None = None
    ) -> Response:
        metrics.requests.labels(status=str(status)).inc()
        body = {"error": {"message": message, "type": kind, "code": status}}
        return JSONResponse(body, status_code=status, headers=headers)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "healthy", "model": SIM_MODEL}

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": SIM_MODEL, "object": "model", "created": 0, "owned_by": "bookgen"}],
        }

    @app.get("/admin/config")
    async def get_config() -> dict[str, Any]:
        return config().model_dump()

    @app.patch("/admin/config")
    async def patch_config(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"detail": "body must be a JSON object"}, status_code=422)
        if not isinstance(body, dict):
            return JSONResponse({"detail": "body must be a JSON object"}, status_code=422)
        unknown = sorted(set(body) - set(SimSettings.model_fields))
        if unknown:
            return JSONResponse({"detail": f"unknown knobs: {unknown}"}, status_code=422)
        try:
            new = SimSettings.model_validate({**config().model_dump(), **body})
        except ValidationError as exc:
            errors = [
                {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()
            ]
            return JSONResponse({"detail": errors}, status_code=422)
        app.state.sim_config = new
        return JSONResponse(new.model_dump())

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        try:
            raw = await request.json()
            req = ChatRequest.model_validate(raw)
        except ValueError as exc:  # JSON decode errors and ValidationError are both ValueErrors
            message = "invalid request"
            if isinstance(exc, ValidationError):
                message = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
                )
            return error(400, message, "invalid_request_error")
        cfg = config()
        if cfg.error_rate > 0 and rng.random() < cfg.error_rate:
            return error(cfg.error_status, "simulated server error", "server_error")
        if cfg.rate_limit_rate > 0 and rng.random() < cfg.rate_limit_rate:
            headers = {"Retry-After": _fmt_seconds(cfg.retry_after_s)}
            return error(429, "simulated rate limit", "rate_limit_error", headers)
        if cfg.timeout_rate > 0 and rng.random() < cfg.timeout_rate:
            deadline = time.monotonic() + cfg.hang_s
            while time.monotonic() < deadline:
                if await request.is_disconnected():
                    break
                await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            return error(504, "simulated timeout", "timeout")

        text, finish = compose(req, cfg.length_error)
        model = req.model or SIM_MODEL
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        pieces = _PIECES.findall(text)
        usage = {
            "prompt_tokens": prompt_tokens(req.messages),
            "completion_tokens": completion_tokens(len(pieces)),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        key = api_key(request)
        admission = quotas.admit(key, usage["total_tokens"], cfg, time.monotonic())
        if not admission.ok:
            metrics.rate_limited.labels(limit=admission.limit).inc()
            retry = {"Retry-After": _fmt_seconds(math.ceil(admission.retry_after_s * 1000) / 1000)}
            return error(429, admission.message, "rate_limit_error", admission.headers | retry)
        released = [False]

        def release() -> None:
            # Idempotent: the stream's own end and the response's background task both call it,
            # so a client that leaves before the body starts still gives its stream back.
            if not released[0]:
                released[0] = True
                quotas.release(key)

        first_wait = cfg.latency_s + _jittered(rng, cfg.time_to_first_token_s, cfg.jitter)
        words_per_s = cfg.tokens_per_second * WORDS_PER_TOKEN

        async def paced() -> AsyncIterator[str]:
            """Yields pieces of text on the pacing schedule, several words per tick."""
            metrics.active.inc()
            try:
                await asyncio.sleep(first_wait)
                start = time.monotonic()
                stall_at = len(pieces) // 2 if cfg.stall_s > 0 else -1
                stalled = 0.0
                sent = 0
                while sent < len(pieces):
                    elapsed = time.monotonic() - start - stalled
                    due = max(sent + 1, min(len(pieces), int(elapsed * words_per_s) + 1))
                    if sent <= stall_at < due:
                        due = max(sent + 1, stall_at)
                    chunk = "".join(pieces[sent:due])
                    metrics.tokens.inc(completion_tokens(due) - completion_tokens(sent))
                    sent = due
                    yield chunk
                    if sent == stall_at:
                        t0 = time.monotonic()
                        await asyncio.sleep(cfg.stall_s)
                        stalled += time.monotonic() - t0
                        stall_at = -1
                    if sent < len(pieces):
                        # Sleep until the next word is due, and at least one tick unless
                        # every remaining word is due sooner than that.
                        now = time.monotonic() - start - stalled
                        next_due = sent / words_per_s - now
                        all_due = (len(pieces) - 1) / words_per_s - now
                        tick = _jittered(rng, CHUNK_INTERVAL_S, cfg.jitter)
                        await asyncio.sleep(max(next_due, min(tick, all_due)))
            finally:
                metrics.active.dec()
                release()

        if not req.stream:
            try:
                parts = [p async for p in paced()]
            finally:
                release()
            metrics.requests.labels(status="200").inc()
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(parts)},
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                },
                headers=admission.headers,
            )

        include_usage = bool((req.stream_options or {}).get("include_usage"))

        def sse(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> str:
            chunk: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
            }
            if extra:
                chunk.update(extra)
            return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"

        async def events() -> AsyncIterator[str]:
            first = True
            async for piece in paced():
                delta: dict[str, Any] = {"content": piece}
                if first:
                    delta = {"role": "assistant", "content": piece}
                    first = False
                yield sse([{"index": 0, "delta": delta, "finish_reason": None}])
            yield sse([{"index": 0, "delta": {}, "finish_reason": finish}])
            if include_usage:
                yield sse([], {"usage": usage})
            yield "data: [DONE]\n\n"

        metrics.requests.labels(status="200").inc()
        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **admission.headers},
            background=BackgroundTask(release),
        )

    return app
