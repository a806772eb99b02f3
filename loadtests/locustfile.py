"""BookGen users for Locust: a realistic mix, an aggressive one, and the capacity mix.

Pick one by name: `locust -f loadtests/locustfile.py BookGenUser` (or StressTestUser,
CapacityUser). Route groups (`name=`) are the contract's: health, ready, status, generate,
job-status, download, list, cancel, sources, metrics. Every answer's body is checked
(`checks.py`); the gate (`gate.py`) turns the thresholds into the exit code.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser

import checks
import gate

gate.register()

CHARACTERS = (
    "Ada Lovelace",
    "Alan Turing",
    "Grace Hopper",
    "Marie Curie",
    "Katherine Johnson",
    "Emmy Noether",
    "Claude Shannon",
    "Hedy Lamarr",
)
SOURCES: list[dict[str, Any]] = [
    {
        "url": "https://en.wikipedia.org/wiki/Ada_Lovelace",
        "title": "Ada Lovelace",
        "author": "Wikipedia contributors",
        "source_type": "website",
    },
    {"title": "Ada's Algorithm", "author": "James Essinger", "source_type": "book"},
    {"url": "not a url", "title": "", "source_type": "article"},
]
# Job ids seen by any user of this process, for the read-only mixes (bounded).
KNOWN_JOBS: deque[str] = deque(maxlen=256)
FINISHED_JOBS: deque[str] = deque(maxlen=64)


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]
def _options(parser: Any) -> None:
    group = parser.add_argument_group("BookGen users")
    group.add_argument(
        "--api-key",
        default=os.environ.get("BOOKGEN_API_KEY", ""),
        help="sent as Authorization: Bearer (default BOOKGEN_API_KEY); needed when the API "
        "requires keys. Every user shares it, so they share its rate limit and quota.",
    )
    group.add_argument("--book-chapters", type=int, default=2, help="chapters per small book")
    group.add_argument("--book-words", type=int, default=1000, help="words per small book")
    group.add_argument(
        "--book-timeout", type=float, default=900.0, help="seconds before a polled book fails"
    )
    group.add_argument(
        "--cancel-every", type=int, default=5, help="every Nth book of a user is cancelled"
    )
    group.add_argument(
        "--capacity-user-rate",
        type=float,
        default=20.0,
        help="requests per second per CapacityUser (open-loop pacing)",
    )


def client_address(name: str) -> str:
    """A stable address for the user `name` in 198.19.0.0/16 (in RFC 2544's benchmarking range),
    derived as `bookgen.acceptance.clients.client_address` does."""
    network = ipaddress.IPv4Network("198.19.0.0/16")
    digest = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")
    return str(network.network_address + 1 + digest % (network.num_addresses - 2))


class _BookGenBase(FastHttpUser):
    abstract = True

    def on_start(self) -> None:
        self.client_id = f"locust-{uuid.uuid4().hex[:16]}"
        key = getattr(self.environment.parsed_options, "api_key", "") or os.environ.get(
            "BOOKGEN_API_KEY", ""
        )
        # Each user claims an address of its own, as a proxy in front of many clients would
        # say: a server that trusts this machine as its proxy (`BOOKGEN_FORWARDED_ALLOW_IPS`,
        # as the servers BookGen's own tools start on loopback do) limits each user apart; any
        # other server ignores the header. With a key, the key is what the limits count on.
        self.headers = {"X-Forwarded-For": client_address(self.client_id)}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.books = 0
        self.job_id: str | None = None
        self.job_since = 0.0

    # --- one request, checked -----------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        group: str,
        check: Callable[[Any], str | None],
        json_body: Any = None,
    ) -> Any:
        """Send one request under its route group; `check` gets the response, returns a reason."""
        with self.client.request(
            method, path, name=group, headers=self.headers, json=json_body, catch_response=True
        ) as response:
            try:
                reason = check(response)
            except Exception as exc:  # a checker crash is a wrong body, not a Locust error
                reason = f"{group}: unreadable body ({type(exc).__name__})"
            if reason is None:
                response.success()
            else:
                response.failure(reason)
            return response

    def _json_call(
        self,
        method: str,
        path: str,
        group: str,
        check: Callable[[int, Any], str | None],
        json_body: Any = None,
    ) -> Any:
        """Like `_call`, for JSON answers; returns the decoded body (None if wrong)."""
        decoded: list[Any] = [None]

        def run(response: Any) -> str | None:
            body, err = checks.parse_json(response.text)
            if err is not None:
                return f"{group}: HTTP {response.status_code}, {err}"
            reason = check(response.status_code, body)
            if reason is None:
                decoded[0] = body
            return reason

        self._call(method, path, group, run, json_body)
        return decoded[0]

    # --- the routes -------------------------------------------------------------------
    def health(self) -> None:
        self._json_call("GET", "/health", "health", checks.check_health)

    def ready(self) -> None:
        self._json_call("GET", "/ready", "ready", checks.check_ready)

    def status(self) -> None:
        self._json_call("GET", "/api/v1/status", "status", checks.check_status)

    def list_jobs(self, query: str = "") -> None:
        path = f"/api/v1/biographies?page_size=20{query}"
        body = self._json_call("GET", path, "list", checks.check_list)
        for item in checks.job_items(body) or []:
            KNOWN_JOBS.append(item["job_id"])
            if item.get("status") == "completed":
                FINISHED_JOBS.append(item["job_id"])

    def sources(self) -> None:
        count = random.randint(1, len(SOURCES))
        payload = {"sources": SOURCES[:count], "check_accessibility": False}
        self._json_call(
            "POST",
            "/api/v1/sources/validate",
            "sources",
            lambda s, b: checks.check_sources(s, b, count),
            payload,
        )

    def metrics(self) -> None:
        self._call(
            "GET", "/metrics", "metrics", lambda r: checks.check_metrics(r.status_code, r.text)
        )

    def job_status(self, job_id: str) -> dict[str, Any] | None:
        body: dict[str, Any] | None = self._json_call(
            "GET",
            f"/api/v1/biographies/{job_id}/status",
            "job-status",
            lambda s, b: checks.check_job_status(s, b, job_id),
        )
        return body

    def download(self, job_id: str) -> None:
        self._call(
            "GET",
            f"/api/v1/biographies/{job_id}/download",
            "download",
            lambda r: checks.check_download(r.status_code, r.headers, r.text),
        )

    def submit(self, accept_backpressure: bool = False) -> str | None:
        options = self.environment.parsed_options
        character = random.choice(CHARACTERS)
        payload = {
            "character": character,
            "chapters": getattr(options, "book_chapters", 2),
            "total_words": getattr(options, "book_words", 1000),
        }

        job: list[str | None] = [None]

        def run(response: Any) -> str | None:
            if accept_backpressure and response.status_code == 429:
                return checks.check_backpressure(response.status_code, response.headers)
            body, err = checks.parse_json(response.text)
            if err is not None:
                return f"generate: HTTP {response.status_code}, {err}"
            reason = checks.check_generate(response.status_code, body, character)
            if reason is None:
                job[0] = body["job_id"]
            return reason

        self._call("POST", "/api/v1/biographies/generate", "generate", run, payload)
        if job[0] is not None:
            KNOWN_JOBS.append(job[0])
        return job[0]

    def cancel(self, job_id: str) -> None:
        self._json_call(
            "POST",
            f"/api/v1/biographies/{job_id}/cancel",
            "cancel",
            lambda s, b: checks.check_cancel(s, b, job_id),
        )


class _ReadMix(_BookGenBase):
    """The read side of a BookGen client, shared by the realistic and the capacity users."""

    abstract = True

    @task(5)
    def t_health(self) -> None:
        self.health()

    @task(1)
    def t_ready(self) -> None:
        self.ready()

    @task(3)
    def t_status(self) -> None:
        self.status()

    @task(2)
    def t_list(self) -> None:
        self.list_jobs()

    @task(2)
    def t_sources(self) -> None:
        self.sources()


class BookGenUser(_ReadMix):
    """A person using BookGen: reads, validates sources, and has one small book on the go."""

    wait_time = between(1, 3)

    @task(1)
    def t_metrics(self) -> None:
        self.metrics()

    @task(4)
    def t_book(self) -> None:
        """One step of this user's book: submit, or poll, or download when done."""
        options = self.environment.parsed_options
        if self.job_id is None:
            self.job_id = self.submit()
            self.job_since = time.monotonic()
            self.books += 1
            cancel_every = getattr(options, "cancel_every", 0)
            if self.job_id is not None and cancel_every and self.books % cancel_every == 0:
                self.cancel(self.job_id)
                self.job_id = None
            return
        body = self.job_status(self.job_id)
        state = body.get("status") if body else "unknown"
        if state == "completed":
            self.download(self.job_id)
            FINISHED_JOBS.append(self.job_id)
            self.job_id = None
        elif body is None or state in checks.FINISHED:
            self.job_id = None  # the failure is already recorded by the status check
        elif time.monotonic() - self.job_since > getattr(options, "book_timeout", 900.0):
            events.request.fire(  # type: ignore[no-untyped-call]
                request_type="BOOK",
                name="book-timeout",
                response_time=0,
                response_length=0,
                exception=TimeoutError(f"book {self.job_id} not finished in time"),
                context={},
            )
            self.job_id = None


class StressTestUser(_BookGenBase):
    """Aggressive: no think time; a 429 with Retry-After on submission is correct back-pressure."""

    wait_time = between(0, 0.05)

    @task(10)
    def t_health(self) -> None:
        self.health()

    @task(5)
    def t_status(self) -> None:
        self.status()

    @task(5)
    def t_job_status(self) -> None:
        if KNOWN_JOBS:
            self.job_status(random.choice(KNOWN_JOBS))
        else:
            self.list_jobs()

    @task(3)
    def t_list(self) -> None:
        self.list_jobs()

    @task(3)
    def t_sources(self) -> None:
        self.sources()

    @task(1)
    def t_metrics(self) -> None:
        self.metrics()

    @task(1)
    def t_submit(self) -> None:
        self.submit(accept_backpressure=True)


class CapacityUser(_ReadMix):
    """BookGenUser's read mix at a fixed rate per user (open loop), without think time.

    No submissions (the capacity run keeps its own generations running, so the request rate steps
    with the number of users while the generation load stays constant) and no /metrics (that is
    Prometheus's scrape every few seconds, not user traffic).
    """

    def wait_time(self) -> float:
        rate = float(getattr(self.environment.parsed_options, "capacity_user_rate", 20.0))
        now = time.monotonic()
        self._next = max(getattr(self, "_next", now) + 1.0 / rate, now)
        return self._next - now

    def on_start(self) -> None:
        super().on_start()
        if not FINISHED_JOBS:
            self.list_jobs("&status=completed")

    @task(3)
    def t_job_status(self) -> None:
        if KNOWN_JOBS:
            self.job_status(random.choice(KNOWN_JOBS))
        else:
            self.list_jobs()

    @task(1)
    def t_download(self) -> None:
        if FINISHED_JOBS:
            self.download(random.choice(FINISHED_JOBS))
        else:
            self.status()
