"""Normal load for the end-to-end tests: a few users reading, and submitting small books."""

from __future__ import annotations

import collections
import contextlib
import itertools
import random
import threading
import time
import zlib
from collections.abc import Callable

import httpx

SMALL_BOOK = {"character": "Ada Lovelace", "chapters": 1, "total_words": 1000}
TERMINAL = {"completed", "failed", "cancelled"}
_ids = itertools.count()


def client_address(client_id: str) -> str:
    """A loopback address of its own for `client_id`: without keys the service counts its
    limits per client address, and all of 127.0.0.0/8 reaches the stack."""
    h = zlib.crc32(client_id.encode())
    return f"127.{1 + (h >> 16) % 254}.{(h >> 8) % 256}.{1 + h % 254}"


def client(api_url: str, client_id: str, timeout_s: float = 10.0) -> httpx.Client:
    """An HTTP client that reaches the stack as `client_id` (from its own address)."""
    transport = httpx.HTTPTransport(local_address=client_address(client_id))
    return httpx.Client(base_url=api_url, timeout=timeout_s, transport=transport)


def submit(api_url: str, client_id: str, timeout_s: float = 10.0) -> httpx.Response:
    """POST one small book as `client_id` (the rate limit is per client and per worker)."""
    with client(api_url, client_id, timeout_s) as c:
        return c.post("/api/v1/biographies/generate", json=SMALL_BOOK)


class NormalLoad:
    """`users` threads reading health, status and list; each also submits a small book now and then.

    Each book is polled to its end and downloaded. Status codes are counted per route group.
    """

    def __init__(
        self, api_url: str, users: int = 4, think_s: float = 0.4, book_every_s: float = 15.0
    ) -> None:
        self.api_url = api_url
        self.users = users
        self.think_s = think_s
        self.book_every_s = book_every_s
        self.codes: collections.Counter[tuple[str, int]] = collections.Counter()
        self.books: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> NormalLoad:
        for index in range(self.users):
            thread = threading.Thread(target=self._user, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _count(self, group: str, code: int) -> None:
        with self._lock:
            self.codes[(group, code)] += 1

    def _get(self, client: httpx.Client, group: str, path: str) -> httpx.Response | None:
        try:
            response = client.get(path)
        except httpx.HTTPError:
            self._count(group, 0)
            return None
        self._count(group, response.status_code)
        return response

    def _user(self, index: int) -> None:
        rng = random.Random(index)
        next_book = time.monotonic() + rng.uniform(0, self.book_every_s)
        job: str | None = None
        with client(self.api_url, f"user-{index}", 5.0) as http:
            while not self._stop.is_set():
                self._get(http, "health", "/health")
                self._get(http, "status", "/api/v1/status")
                self._get(http, "list", "/api/v1/biographies?limit=5")
                if job is not None:
                    job = self._follow(http, job)
                elif time.monotonic() >= next_book:
                    next_book = time.monotonic() + self.book_every_s
                    job = self._submit(f"user-{index}-{next(_ids)}")
                self._stop.wait(self.think_s * rng.uniform(0.5, 1.5))

    def _submit(self, client_id: str) -> str | None:
        try:
            response = submit(self.api_url, client_id)
        except httpx.HTTPError:
            self._count("generate", 0)
            return None
        self._count("generate", response.status_code)
        if response.status_code != 202:
            return None
        with self._lock:
            self.books["submitted"] += 1
        job_id: str = response.json()["job_id"]
        return job_id

    def _follow(self, client: httpx.Client, job: str) -> str | None:
        response = self._get(client, "job-status", f"/api/v1/biographies/{job}/status")
        if response is None or response.status_code != 200:
            return job
        state = response.json()["status"]
        if state not in TERMINAL:
            return job
        with self._lock:
            self.books[state] += 1
        if state == "completed":
            self._get(client, "download", f"/api/v1/biographies/{job}/download")
        return None

    def failures(self) -> dict[str, int]:
        """Responses that were neither 2xx nor expected, by `group code`."""
        with self._lock:
            return {
                f"{group} {code}": n
                for (group, code), n in self.codes.items()
                if not 200 <= code < 300
            }


def keep_submitting(api_url: str, every_s: float) -> Callable[[threading.Event], None]:
    """A `Scenario.during` body: a small book every `every_s`, each from a fresh client id."""

    def body(stop: threading.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                submit(api_url, f"drill-{next(_drills)}", timeout_s=5.0)
            stop.wait(every_s)

    return body


_drills = itertools.count()
