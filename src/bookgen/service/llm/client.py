"""One async client for OpenAI-compatible chat-completions APIs (OpenRouter, vLLM, Ollama, ...).

- Streaming (SSE with `stream_options.include_usage`) and non-streaming.
- Retries 408, 409, 429, 5xx, timeouts, connection errors and streams that end without
  `[DONE]` or a finish reason, with exponential backoff and full jitter (capped by
  `llm_backoff_max_s`) for at most `llm_max_retries` failures. A `Retry-After` (seconds or an
  HTTP date) is waited out in full when it is at most `llm_retry_after_max_s`; a longer one
  ends the call at once (retryable, with `retry_after` set) so the book's own retry takes over.
  A 429 the provider timed is pacing, not a failure: it does not use up the retries. Other 4xx
  raise at once. Each attempt has a deadline (`llm_attempt_deadline_s`), and so has the call,
  waits included (`llm_call_deadline_s`).
- A circuit breaker (`breaker.py`): while the provider is down, calls wait instead of failing
  and one probe at a time finds out when it is back.
- A per-process concurrency window (`limit.py`) held only while a request is in flight (not
  while sleeping before a retry): it starts at `llm_max_concurrency`, narrows on the provider's
  429s and widens again on its answers, so one setting suits a small key and a large one.
- Token usage from the response (estimated from the text when the provider sends none, or when
  a `StreamWatch` ended the stream early); cost from `settings.prices` (an unknown model costs 0).
  A failed or cut-off attempt that had started to answer is charged what it streamed (and its
  prompt): in its `LLMCall`, in the `ChatResult` of a call that then succeeds, and otherwise in
  the run's unsaved spend (`spend.py`).
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
from bookgen.service.llm import spend
from bookgen.service.llm.breaker import BreakerOpen, CircuitBreaker
from bookgen.service.llm.errors import LLMConfigError, LLMError
from bookgen.service.llm.limit import AdaptiveLimit
from bookgen.service.llm.provider import OPENROUTER_BASE_URL
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
    if status == 408:
        return "timeout"
    if status == 409 or status >= 500:  # 409: a conflict the provider resolves on its side
        return "server_error"
    return None


@dataclass(slots=True)
class _Partial:
    """What an attempt received before it broke, so a failed attempt can still be charged."""

    started: bool = False  # a 2xx answer began: the provider generated (and bills) tokens
    parts: list[str] | None = None
    usage: dict[str, Any] | None = None


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
        breaker: CircuitBreaker | None = None,
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
        # /ready's probe has a connection of its own: behind the streams in `_http`'s pool (all
        # its connections busy with books, more requests waiting) it timed out under load.
        self._probe = httpx.AsyncClient(
            base_url=self.base_url + "/",
            headers=headers,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            transport=transport,
        )
        self.limit = AdaptiveLimit(limit, on_change=hooks.llm_window)
        self._sleep: SleepFn = sleep or asyncio.sleep
        self._rng = rng or random.Random()
        self.breaker = breaker or CircuitBreaker(
            settings.llm_breaker_threshold, settings.llm_breaker_open_s, on_change=self._breaker
        )
        self.max_in_flight = 0  # highest concurrency seen; tests and benchmarks read it

    # --- public API ---------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return self.limit.in_flight

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

        settings = self._settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.llm_call_deadline_s
        spent = [0, 0, 0.0]  # failed attempts of this call: input, output, cost
        failures = 0
        attempt = 1
        try:
            while True:
                try:
                    probe = await self._enter(deadline)
                except BreakerOpen:
                    raise LLMError(
                        "LLM provider unavailable (circuit open) past the call's deadline",
                        None,
                        True,
                        error_type="circuit_open",
                        reason="server_error",
                        retry_after=self.breaker.reopens_in(),
                    ) from None
                try:
                    result = await self._bounded_attempt(
                        payload, messages, attempt, watch, deadline, spent
                    )
                except LLMError as exc:
                    if exc.retryable and not _paced(exc, settings):
                        self.breaker.failure(probe)
                    elif exc.retryable:
                        self.breaker.neutral(probe)
                    else:
                        self.breaker.success(probe)  # it answered: the provider is up
                    if not exc.retryable:
                        raise
                    if exc.retry_after is not None:
                        if exc.retry_after > settings.llm_retry_after_max_s:
                            raise  # longer than a slot should idle: the book's retry waits
                        # The server's word is the floor (a little jitter on top spreads a
                        # herd); never 0, or a paced 429 would spin.
                        delay = max(0.05, exc.retry_after * (1.0 + self._rng.random() * 0.1))
                    else:
                        delay = self._backoff(failures + 1)
                    if not _paced(exc, settings):
                        failures += 1
                        if failures > settings.llm_max_retries:
                            raise
                    if loop.time() + delay >= deadline:
                        raise
                    logger.warning(
                        "LLM call failed (%s), retry %d in %.2fs",
                        exc.error_type,
                        attempt,
                        delay,
                    )
                    self._hooks.llm_retry(exc.reason or "server_error")
                    await self._sleep(delay)
                    attempt += 1
                    continue
                except BaseException:
                    self.breaker.neutral(probe)
                    raise
                self.breaker.success(probe)
                if not any(spent):
                    return result
                return ChatResult(
                    text=result.text,
                    input_tokens=result.input_tokens + int(spent[0]),
                    output_tokens=result.output_tokens + int(spent[1]),
                    finish_reason=result.finish_reason,
                    model=result.model,
                    cost_usd=result.cost_usd + float(spent[2]),
                )
        except BaseException:
            # Nothing stores what the failed attempts cost: the run's tally takes it.
            spend.unsaved(int(spent[0]), int(spent[1]), float(spent[2]))
            raise

    def _breaker(self, state: str) -> None:
        if state == "open":
            logger.warning("LLM provider circuit open: calls wait, no new work is taken")
        elif state == "closed":
            logger.info("LLM provider circuit closed: the provider answers again")
        self._hooks.llm_breaker(state)

    async def _enter(self, deadline: float) -> bool:
        """Wait out an open breaker (on the breaker's clock), up to the call's deadline."""
        remaining = deadline - asyncio.get_running_loop().time()
        return await self.breaker.enter(time.monotonic() + max(0.0, remaining))

    async def _bounded_attempt(
        self,
        payload: dict[str, Any],
        messages: list[dict[str, str]],
        attempt: int,
        watch: StreamWatch | None,
        deadline: float,
        spent: list[float],
    ) -> ChatResult:
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise self._deadline_error(self._settings.llm_call_deadline_s, "call")
        try:
            async with asyncio.timeout(remaining):
                granted = await self.limit.acquire()
        except TimeoutError:
            raise self._deadline_error(self._settings.llm_call_deadline_s, "call") from None
        self.max_in_flight = max(self.max_in_flight, self.limit.in_flight)
        try:
            limit = min(self._settings.llm_attempt_deadline_s, deadline - loop.time())
            result = await self._attempt(payload, messages, attempt, watch, limit, spent)
        except LLMError as exc:
            if exc.status == 429:
                self.limit.refused(granted)
            raise
        else:
            self.limit.succeeded()
            return result
        finally:
            self.limit.release()

    @staticmethod
    def _deadline_error(seconds: float, what: str) -> LLMError:
        return LLMError(
            f"LLM {what} passed its {seconds:g} s deadline",
            None,
            True,
            error_type="timeout",
            reason="timeout",
        )

    async def ping(self) -> bool:
        """Whether the provider answers `GET {base}/models` with 200, within a short timeout."""
        try:
            resp = await self._probe.get(
                "models", timeout=min(PING_TIMEOUT_S, self._settings.llm_timeout_s)
            )
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._probe.aclose()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"LLMClient(base_url={self.base_url!r}, model={self._settings.model!r})"

    # --- internals ----------------------------------------------------------------------
    def _backoff(self, failure: int) -> float:
        cap = self._settings.llm_backoff_max_s
        ceiling = min(cap, self._settings.llm_backoff_base_s * (2 ** (failure - 1)))
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
        limit: float,
        spent: list[float],
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
        partial = _Partial()
        with self._hooks.llm_call(call) as c:
            started = time.perf_counter()
            try:
                # httpx's timeout bounds each read, not the call: a stream that trickles a
                # token now and then would never end without a deadline of its own.
                async with asyncio.timeout(limit):
                    if stream:
                        text, usage, finish, resp_model, ttfc = await self._post_stream(
                            payload, started, watch, partial
                        )
                    else:
                        text, usage, finish, resp_model = await self._post(payload, partial)
                        ttfc = None
                        if watch is not None:
                            watch.feed(text)
            except BaseException as exc:
                c.error_type = "cancelled" if isinstance(exc, asyncio.CancelledError) else None
                error = self._as_llm_error(exc, limit)
                if c.error_type is None:
                    c.error_type = error.error_type if error is not None else type(exc).__name__
                self._charge_failed(c, partial, messages, model, spent)
                if error is None:
                    raise
                raise error from None
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

    def _as_llm_error(self, exc: BaseException, limit: float) -> LLMError | None:
        """The retry loop's view of what ended an attempt; None to let `exc` through as is."""
        if isinstance(exc, LLMError):
            return exc
        if isinstance(exc, TimeoutError):
            return self._deadline_error(limit, "attempt")
        if isinstance(exc, httpx.TimeoutException):
            return LLMError(
                f"LLM request timed out ({type(exc).__name__})",
                None,
                True,
                error_type="timeout",
                reason="timeout",
            )
        if isinstance(exc, httpx.TransportError):
            return LLMError(
                f"LLM connection failed ({type(exc).__name__})",
                None,
                True,
                error_type=type(exc).__name__,
                reason="connection",
            )
        return None  # cancellation (job cancelled, worker stopping) and programming errors

    def _charge_failed(
        self,
        call: LLMCall,
        partial: _Partial,
        messages: list[dict[str, str]],
        model: str,
        spent: list[float],
    ) -> None:
        """A failed attempt costs nothing unless the provider had begun to answer; then it
        costs the prompt and what was generated (the provider's usage when it sent one)."""
        if not partial.started:
            return
        input_tokens = _usage_int(partial.usage, "prompt_tokens")
        if input_tokens is None:
            input_tokens = sum(estimate_tokens(m.get("content", "")) for m in messages)
        output_tokens = _usage_int(partial.usage, "completion_tokens")
        if output_tokens is None:
            output_tokens = estimate_tokens("".join(partial.parts or ()))
        cost = compute_cost(self._settings, model, input_tokens, output_tokens)
        call.input_tokens, call.output_tokens, call.cost_usd = input_tokens, output_tokens, cost
        spent[0] += input_tokens
        spent[1] += output_tokens
        spent[2] += cost

    async def _post(
        self, payload: dict[str, Any], partial: _Partial
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
        self,
        payload: dict[str, Any],
        started: float,
        watch: StreamWatch | None,
        partial: _Partial,
    ) -> tuple[str, dict[str, Any] | None, str | None, str | None, float | None]:
        parts: list[str] = []
        usage: dict[str, Any] | None = None
        finish: str | None = None
        model: str | None = None
        ttfc: float | None = None
        done = False
        async with self._http.stream("POST", "chat/completions", json=payload) as resp:
            if resp.status_code >= 400:
                body = await resp.aread()
                raise self._status_error(resp.status_code, resp.headers, body)
            partial.started, partial.parts = True, parts
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
                    done = True
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
                    usage = partial.usage = chunk["usage"]
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
        if not done and finish is None:
            # The connection closed mid-answer (a proxy timeout, a crashed replica): what came
            # is a fragment, and a fragment of an outline would be padded into invented chapters.
            raise LLMError(
                "LLM stream ended before its end ([DONE] or a finish reason)",
                None,
                True,
                error_type="incomplete_stream",
                reason="server_error",
            )
        return "".join(parts), usage, finish, model, ttfc


def _usage_int(usage: dict[str, Any] | None, key: str) -> int | None:
    if not usage:
        return None
    value = usage.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _paced(exc: LLMError, settings: Settings) -> bool:
    """A 429 whose Retry-After we wait out: the provider is up and pacing us."""
    return (
        exc.reason == "rate_limited"
        and exc.retry_after is not None
        and exc.retry_after <= settings.llm_retry_after_max_s
    )
