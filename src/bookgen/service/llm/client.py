"""One async client for OpenAI-compatible chat-completions APIs (OpenRouter, vLLM, Ollama, ...).

- Streaming (SSE with `stream_options.include_usage`) and non-streaming.
- Retries 429, 5xx, timeouts and connection errors with exponential backoff and full jitter,
  honouring `Retry-After` (seconds or an HTTP date), every wait capped by `llm_backoff_max_s`.
  Other 4xx raise at once.
- A per-process concurrency limit (`llm_max_concurrency`), held only while a request is in flight
  (not while sleeping before a retry).
- Token usage from the response (estimated from the text when the provider sends none, or when
  a `StreamWatch` ended the stream early); cost from `settings.prices` (an unknown model costs 0).
- A `StreamWatch` sees each streamed delta and may end the reply there (`finish_reason`
  `client_stop`): closing the stream stops the generation, so text the caller would discard is
  neither waited for nor paid for.
- Each HTTP attempt runs inside `hooks.llm_call(...)`; `hooks.llm_retry(reason)` precedes each
  retry sleep. The API key is sent as a Bearer token and appears in no log line or exception.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from bookgen.service.hooks import Hooks, LLMCall
from bookgen.service.llm.errors import LLMConfigError, LLMError
from bookgen.service.settings import Settings

__all__ = [
    "OPENROUTER_BASE_URL",
    "ChatResult",
    "LLMClient",
    "LLMError",
    "StreamWatch",
    "compute_cost",
    "estimate_tokens",
    "parse_retry_after",
]

logger = logging.getLogger("bookgen.llm")

OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
PING_TIMEOUT_S = 5.0
TOKENS_PER_WORD = 4.0 / 3.0

SleepFn = Callable[[float], Awaitable[None]]
CLIENT_STOP = "client_stop"


class StreamWatch(Protocol):
    """Watches a reply as it streams in."""

    def begin(self) -> None:
        """An attempt starts: forget what an earlier, failed attempt showed."""

    def feed(self, delta: str) -> bool:
        """Sees the next piece of text; True ends the reply here."""


@dataclass(frozen=True, slots=True)
class ChatResult:
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str | None
    model: str
    cost_usd: float


def estimate_tokens(text: str) -> int:
    """Rough token count: 1 word = 4/3 tokens (the same rule the simulated model uses)."""
    words = len(text.split())
    return math.ceil(words * TOKENS_PER_WORD) if words else 0


def compute_cost(settings: Settings, model: str, input_tokens: int, output_tokens: int) -> float:
    """USD for one call from the per-model price table; 0.0 for a model without a price."""
    price = settings.prices.get(model)
    if price is None:
        return 0.0
    return (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1e6


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds (int or float) or an HTTP date; None when absent or unparseable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


_SECRET_LIKE = re.compile(r"(sk-[A-Za-z0-9_\-*.]{4,}|Bearer\s+\S+)")


def _retry_reason(status: int) -> str | None:
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    return None


class LLMClient:
    """OpenAI-compatible chat-completions client; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        hooks: Hooks,
        *,
        base_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: SleepFn | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._hooks = hooks
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else ""
        self._secret = key
        url = base_url or settings.llm_base_url
        if not url:
            if not key:
                raise LLMConfigError(
                    "no LLM base URL and no API key: set BOOKGEN_LLM_BASE_URL, or "
                    "BOOKGEN_LLM_API_KEY for OpenRouter, or pass the simulated model's URL"
                )
            url = OPENROUTER_BASE_URL
        self.base_url = url.rstrip("/")
        headers = {"Accept": "application/json", "X-Title": "BookGen"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        limit = settings.llm_max_concurrency
        self._http = httpx.AsyncClient(
            base_url=self.base_url + "/",
            headers=headers,
            timeout=httpx.Timeout(settings.llm_timeout_s),
            limits=httpx.Limits(max_connections=limit + 4, max_keepalive_connections=limit + 4),
            transport=transport,
        )
        self._semaphore = asyncio.Semaphore(limit)
        self._sleep: SleepFn = sleep or asyncio.sleep
        self._rng = rng or random.Random()
        self._in_flight = 0
        self.max_in_flight = 0  # highest concurrency seen; tests and benchmarks read it

    # --- public API ---------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stream: bool | None = None,
        watch: StreamWatch | None = None,
    ) -> ChatResult:
        """One completion. With `watch` the reply is streamed (unless `stream=False` or the
        settings turn streaming off, when the watch sees the whole text at once)."""
        model = model or self._settings.model
        stream = self._settings.llm_stream if stream is None else stream
        payload: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        if temperature is not None:
            payload["temperature"] = temperature
        if stream:
            payload["stream_options"] = {"include_usage": True}

        attempts = self._settings.llm_max_retries + 1
        attempt = 1
        while True:
            try:
                async with self._semaphore:
                    self._in_flight += 1
                    self.max_in_flight = max(self.max_in_flight, self._in_flight)
                    try:
                        return await self._attempt(payload, messages, attempt, watch)
                    finally:
                        self._in_flight -= 1
            except LLMError as exc:
                if not exc.retryable or attempt >= attempts:
                    raise
                delay = self._backoff(attempt, exc.retry_after)
                logger.warning(
                    "LLM call failed (%s), retry %d/%d in %.2fs",
                    exc.error_type,
                    attempt,
                    attempts - 1,
                    delay,
                )
                self._hooks.llm_retry(exc.reason or "server_error")
                await self._sleep(delay)
                attempt += 1

    async def ping(self) -> bool:
        """Whether the provider answers `GET {base}/models` with 200, within a short timeout."""
        try:
            resp = await self._http.get(
                "models", timeout=min(PING_TIMEOUT_S, self._settings.llm_timeout_s)
            )
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"LLMClient(base_url={self.base_url!r}, model={self._settings.model!r})"

    # --- internals ----------------------------------------------------------------------
    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = self._settings.llm_backoff_max_s
        if retry_after is not None:
            # The server's word is the floor; a little jitter on top spreads a herd of clients.
            return min(cap, retry_after + self._rng.random() * 0.1 * retry_after)
        ceiling = min(cap, self._settings.llm_backoff_base_s * (2 ** (attempt - 1)))
        return self._rng.uniform(0.0, ceiling)  # full jitter

    def _scrub(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "***")
        return _SECRET_LIKE.sub("***", text)[:300]

    def _status_error(self, status: int, headers: Mapping[str, str], body: bytes) -> LLMError:
        reason = _retry_reason(status)
        detail = ""
        if status not in (401, 403):  # auth errors may echo part of the key: say nothing
            detail = self._error_message(body)
        message = "LLM provider returned an error" + (f": {detail}" if detail else "")
        return LLMError(
            self._scrub(message),
            status,
            reason is not None,
            error_type=str(status),
            reason=reason,
            retry_after=parse_retry_after(headers.get("retry-after")) if reason else None,
        )

    @staticmethod
    def _error_message(body: bytes) -> str:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return ""
        if isinstance(data, dict):
            err = data.get("error")
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                return str(err["message"])
            if isinstance(err, str):
                return err
        return ""

    def _body_error(self, err: Any) -> LLMError:
        """An `{"error": ...}` object inside a 200 body or an SSE chunk (OpenRouter does this)."""
        code: int | None = None
        message = "LLM provider reported an error"
        if isinstance(err, dict):
            raw = err.get("code")
            if isinstance(raw, int):
                code = raw
            elif isinstance(raw, str) and raw.isdigit():
                code = int(raw)
            if isinstance(err.get("message"), str) and code not in (401, 403):
                message += f": {err['message']}"
        reason = _retry_reason(code) if code is not None else "server_error"
        return LLMError(
            self._scrub(message),
            code,
            reason is not None,
            error_type=str(code) if code is not None else "provider_error",
            reason=reason,
        )

    async def _attempt(
        self,
        payload: dict[str, Any],
        messages: list[dict[str, str]],
        attempt: int,
        watch: StreamWatch | None,
    ) -> ChatResult:
        model = str(payload["model"])
        stream = bool(payload["stream"])
        call = LLMCall(
            operation="chat",
            provider=self._settings.llm_provider_name,
            model=model,
            stream=stream,
            max_tokens=payload.get("max_tokens"),
            temperature=payload.get("temperature"),
            attempt=attempt,
        )
        capture = self._hooks.capture_content
        if capture:
            call.prompt = "\n".join(
                f"{m.get('role', '')}: {m.get('content', '')}" for m in messages
            )
        if watch is not None:
            watch.begin()
        with self._hooks.llm_call(call) as c:
            started = time.perf_counter()
            try:
                # httpx's timeout bounds each read, not the call: a stream that trickles a
                # token now and then would never end without a deadline of its own.
                async with asyncio.timeout(self._settings.llm_attempt_deadline_s):
                    if stream:
                        text, usage, finish, resp_model, ttfc = await self._post_stream(
                            payload, started, watch
                        )
                    else:
                        text, usage, finish, resp_model = await self._post(payload)
                        ttfc = None
                        if watch is not None:
                            watch.feed(text)
            except LLMError as exc:
                c.error_type = exc.error_type
                raise
            except TimeoutError:
                c.error_type = "timeout"
                raise LLMError(
                    f"LLM call passed its {self._settings.llm_attempt_deadline_s:g} s deadline",
                    None,
                    True,
                    error_type="timeout",
                    reason="timeout",
                ) from None
            except httpx.TimeoutException as exc:
                c.error_type = "timeout"
                raise LLMError(
                    f"LLM request timed out ({type(exc).__name__})",
                    None,
                    True,
                    error_type="timeout",
                    reason="timeout",
                ) from None
            except httpx.TransportError as exc:
                c.error_type = type(exc).__name__
                raise LLMError(
                    f"LLM connection failed ({type(exc).__name__})",
                    None,
                    True,
                    error_type=type(exc).__name__,
                    reason="connection",
                ) from None
            except asyncio.CancelledError:
                c.error_type = "cancelled"  # the job was cancelled or the worker is stopping
                raise
            except Exception as exc:
                c.error_type = type(exc).__name__
                raise
            input_tokens = _usage_int(usage, "prompt_tokens")
            if input_tokens is None:
                input_tokens = sum(estimate_tokens(m.get("content", "")) for m in messages)
            output_tokens = _usage_int(usage, "completion_tokens")
            if output_tokens is None:
                output_tokens = estimate_tokens(text)
            resp_model = resp_model or model
            price_model = model if model in self._settings.prices else resp_model
            cost = compute_cost(self._settings, price_model, input_tokens, output_tokens)
            c.response_model = resp_model
            c.input_tokens = input_tokens
            c.output_tokens = output_tokens
            c.finish_reason = finish
            c.time_to_first_chunk_s = ttfc
            c.cost_usd = cost
            if capture:
                c.completion = text
            return ChatResult(
                text=text,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                finish_reason=finish,
                model=resp_model,
                cost_usd=cost,
            )

    async def _post(
        self, payload: dict[str, Any]
    ) -> tuple[str, dict[str, Any] | None, str | None, str | None]:
        resp = await self._http.post("chat/completions", json=payload)
        if resp.status_code >= 400:
            raise self._status_error(resp.status_code, resp.headers, resp.content)
        return self._parse_body(resp)

    def _parse_body(
        self, resp: httpx.Response
    ) -> tuple[str, dict[str, Any] | None, str | None, str | None]:
        try:
            data = resp.json()
        except ValueError:
            raise LLMError(
                "LLM provider sent a body that is not JSON",
                resp.status_code,
                True,
                error_type="invalid_response",
                reason="server_error",
            ) from None
        if not isinstance(data, dict):
            raise LLMError(
                "LLM provider sent an unexpected body",
                resp.status_code,
                False,
                error_type="invalid_response",
            )
        if "error" in data:
            raise self._body_error(data["error"])
        choices = data.get("choices") or []
        text = ""
        finish: str | None = None
        if choices and isinstance(choices[0], dict):
            message = choices[0].get("message") or {}
            text = str(message.get("content") or "")
            finish = choices[0].get("finish_reason")
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        model = data.get("model") if isinstance(data.get("model"), str) else None
        return text, usage, finish, model

    async def _post_stream(
        self, payload: dict[str, Any], started: float, watch: StreamWatch | None = None
    ) -> tuple[str, dict[str, Any] | None, str | None, str | None, float | None]:
        parts: list[str] = []
        usage: dict[str, Any] | None = None
        finish: str | None = None
        model: str | None = None
        ttfc: float | None = None
        async with self._http.stream("POST", "chat/completions", json=payload) as resp:
            if resp.status_code >= 400:
                body = await resp.aread()
                raise self._status_error(resp.status_code, resp.headers, body)
            content_type = resp.headers.get("content-type", "")
            if "json" in content_type and "event-stream" not in content_type:
                # A server that ignores `stream: true` answers with one JSON body.
                await resp.aread()
                ttfc = time.perf_counter() - started
                text, usage, finish, model = self._parse_body(resp)
                if watch is not None:
                    watch.feed(text)
                return text, usage, finish, model, ttfc
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, `: keep-alive` comments, `event:` lines
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    continue
                if not isinstance(chunk, dict):
                    continue
                if "error" in chunk:
                    raise self._body_error(chunk["error"])
                if ttfc is None:
                    ttfc = time.perf_counter() - started
                if isinstance(chunk.get("model"), str):
                    model = chunk["model"]
                if isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    if not isinstance(choice, dict):
                        continue
                    delta = choice.get("delta") or {}
                    content = delta.get("content") if isinstance(delta, dict) else None
                    if content:
                        parts.append(str(content))
                        if watch is not None and watch.feed(str(content)):
                            # Leaving the block closes the connection, which stops the
                            # generation; the provider's usage never comes, so it is estimated.
                            return "".join(parts), None, CLIENT_STOP, model, ttfc
                    if choice.get("finish_reason"):
                        finish = str(choice["finish_reason"])
        return "".join(parts), usage, finish, model, ttfc


def _usage_int(usage: dict[str, Any] | None, key: str) -> int | None:
    if not usage:
        return None
    value = usage.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)
