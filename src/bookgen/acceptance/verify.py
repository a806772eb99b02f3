"""`bookgen verify`: the stack up, the acceptance load while books are written, the six targets.

Every measured figure comes from this run: book time from the full-size books' own timestamps,
API p95 and error rate from Locust, which must agree with Prometheus's view within the gate's
tolerances; users served from the service's side (the store's own record of each user's books:
the most users it was serving at once, no submission refused while the queue had room, the
server's p95 under the bound); memory
per worker as the max RSS sampled with psutil and read from Prometheus; throughput from the books
completed during the run. Target numbers come from slo.yaml and the thresholds generated from it.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from bookgen.acceptance.clients import client_headers
from bookgen.acceptance.locust_run import LocustRun, stop
from bookgen.acceptance.project import Project, find_project
from bookgen.acceptance.report import collect, read_notifications, report_data, write_report
from bookgen.acceptance.targets import AcceptanceTargets

FINISHED = ("completed", "failed", "cancelled")


@dataclass
class VerifyOptions:
    report_dir: Path
    users: int = 10
    duration_s: float = 300.0
    full_books: int = 4
    book_chapters: int = 20
    book_words: int = 51_000
    book_wait_s: float = 240.0
    workers: int = 2
    fast: bool = False
    # The load's own books (each Locust user keeps one on the go). Long enough that a user's book
    # is still being written when its next poll comes, so the books the service holds at once
    # show how many users it is serving.
    user_book_chapters: int = 3
    user_book_words: int = 3_000
    project: Project | None = None


@dataclass(frozen=True)
class Row:
    target: str
    measured: str
    goal: str
    ok: bool
    note: str = ""


@dataclass
class Book:
    job_id: str
    status: str = "pending"
    created_at: float | None = None
    completed_at: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    words: int = 0

    @property
    def seconds(self) -> float | None:
        if self.created_at is None or self.completed_at is None:
            return None
        return self.completed_at - self.created_at


def _ts(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def nearest_rank(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class RssSampler(threading.Thread):
    """Max RSS per worker PID, sampled every `every_s` until stopped."""

    def __init__(self, pids: list[int], every_s: float = 1.0) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pids = pids
        self.every_s = every_s
        self.max_rss: dict[int, int] = {}
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        for _ in range(1_000_000):  # bounded; each pass waits every_s
            for pid in self.pids:
                try:
                    rss = psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    continue
                self.max_rss[pid] = max(self.max_rss.get(pid, 0), rss)
            self.samples += 1
            if self._stop_event.wait(self.every_s):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def api_headers() -> dict[str, str]:
    """The API key (BOOKGEN_API_KEY, set by `--api-key`) for an API that requires one."""
    key = os.environ.get("BOOKGEN_API_KEY", "").strip()
    return {"Authorization": f"Bearer {key}"} if key else {}


def submit_books(api: str, count: int, chapters: int, words: int) -> list[Book]:
    books = []
    with httpx.Client(base_url=api, timeout=10.0, headers=api_headers()) as client:
        for i in range(count):
            response = client.post(
                "/api/v1/biographies/generate",
                json={
                    "character": f"Ada Lovelace {i + 1}",
                    "chapters": chapters,
                    "total_words": words,
                },
                # Each book from a client of its own (the stack trusts us as its proxy).
                headers=client_headers(f"verify-book-{i + 1}"),
            )
            response.raise_for_status()
            books.append(Book(response.json()["job_id"]))
    return books


def poll_books(api: str, books: list[Book]) -> None:
    with httpx.Client(base_url=api, timeout=10.0, headers=api_headers()) as client:
        for book in books:
            if book.status in FINISHED:
                continue
            try:
                body = client.get(f"/api/v1/biographies/{book.job_id}/status").json()
            except (httpx.HTTPError, ValueError):
                continue
            book.status = body.get("status", book.status)
            book.created_at = _ts(body.get("created_at"))
            book.completed_at = (
                _ts(body.get("completed_at")) if book.status == "completed" else None
            )
            tokens = body.get("tokens") or {}
            book.input_tokens = int(tokens.get("input") or 0)
            book.output_tokens = int(tokens.get("output") or 0)
            book.words = int(body.get("words_written") or 0)


def all_jobs(api: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    with httpx.Client(base_url=api, timeout=10.0, headers=api_headers()) as client:
        for page in range(1, 200):
            body = client.get("/api/v1/biographies", params={"page": page, "page_size": 100}).json()
            jobs.extend(body.get("items", []))
            if page >= int(body.get("pages", 0)):
                break
    return jobs


def prom_value(prom: str, query: str, at: float) -> float | None:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": query, "time": f"{at:.3f}"})
    try:
        data = httpx.get(url, timeout=5.0).json()
        result = data["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value
    except (httpx.HTTPError, ValueError, KeyError, IndexError):
        return None


def read_alerts(path: Path) -> list[dict[str, Any]]:
    """One entry per alert name and labels: first firing time, and whether it resolved."""
    seen: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return []
    for line in path.read_text().splitlines():
        try:
            notification = json.loads(line)
        except ValueError:
            continue
        for alert in notification.get("alerts", []):
            labels = alert.get("labels", {})
            key = json.dumps(labels, sort_keys=True)
            entry = seen.setdefault(
                key,
                {
                    "alertname": labels.get("alertname", "?"),
                    "severity": labels.get("severity", ""),
                    "labels": labels,
                    "first_firing": alert.get("startsAt"),
                    "status": alert.get("status"),
                },
            )
            entry["status"] = alert.get("status")
    return sorted(seen.values(), key=lambda a: (a["alertname"], str(a["labels"])))


@dataclass
class Measured:
    book_seconds: list[float] = field(default_factory=list)
    books_total: int = 0
    books_unfinished: int = 0
    group_p95_ms: dict[str, float] = field(default_factory=dict)
    overall_p95_ms: float | None = None
    fail_ratio: float | None = None
    requests: int = 0
    max_users: int = 0  # Locust's count of users it spawned
    users_served: int = 0  # the service's: most users whose books it was serving at once
    rejections: float | None = None  # submissions refused while the queue had room
    rejected_queue_full: float | None = None
    queue_had_room: bool | None = None
    missing_groups: list[str] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)
    server_error: str | None = None
    rss_psutil: int = 0
    rss_prometheus: float | None = None
    completed_in_window: int = 0
    completed_full_in_window: int = 0
    window_s: float = 0.0
    server_error_ratio: float | None = None
    server_p95_ms: float | None = None
    gate_exit: int | None = None


def acceptance_rows(m: Measured, t: AcceptanceTargets) -> list[Row]:
    rows: list[Row] = []
    p = nearest_rank(m.book_seconds, t.book_quantile)
    done = f"{len(m.book_seconds)}/{m.books_total} full-size books completed"
    if m.books_unfinished:
        done += f"; {m.books_unfinished} unfinished at the end"
    rows.append(
        Row(
            f"book time (p{t.book_quantile * 100:g})",
            "-" if p is None else f"{p:.0f} s",
            f"< {t.book_time_s:g} s",
            p is not None and p < t.book_time_s and m.books_unfinished == 0,
            done,
        )
    )
    breaches = [g for g, v in m.group_p95_ms.items() if v >= t.p95_by_group_ms.get(g, t.api_p95_ms)]
    missing = sorted(set(m.missing_groups) | (set(t.p95_by_group_ms) - set(m.group_p95_ms)))
    worst = max(m.group_p95_ms.items(), key=lambda kv: kv[1], default=None)
    note = f"worst group {worst[0]}" if worst else "no requests"
    if breaches:
        note += f"; over target: {', '.join(sorted(breaches))}"
    if missing:
        note += f"; no samples: {', '.join(missing)}"
    if m.server_p95_ms is not None:
        note += f"; server-side p95 {m.server_p95_ms:.0f} ms"
    if m.server_error:
        note += f"; server side: {m.server_error}"
    if m.disagreements:
        note += f"; client/server disagree: {' | '.join(m.disagreements)}"
    rows.append(
        Row(
            "API p95 (every route)",
            "-" if worst is None else f"{worst[1]:.0f} ms",
            f"< {t.api_p95_ms:g} ms",
            worst is not None
            and not breaches
            and not missing
            and not m.disagreements
            and m.server_error is None,
            note,
        )
    )
    rows.append(users_row(m, t))
    rss = max(float(m.rss_psutil), m.rss_prometheus or 0.0)
    rows.append(
        Row(
            "memory per worker (max RSS)",
            f"{rss / 2**20:.0f} MiB",
            f"< {t.max_rss_bytes / 2**20:g} MiB",
            0 < rss < t.max_rss_bytes,
            f"psutil {m.rss_psutil / 2**20:.0f} MiB, Prometheus "
            + ("-" if m.rss_prometheus is None else f"{m.rss_prometheus / 2**20:.0f} MiB"),
        )
    )
    hours = m.window_s / 3600.0
    rate = m.completed_full_in_window / hours if hours > 0 else 0.0
    rows.append(
        Row(
            "throughput (full-size books/h)",
            f"{rate:.1f}",
            f">= {t.min_books_per_hour:g}",
            rate >= t.min_books_per_hour,
            f"{m.completed_full_in_window} full-size and {m.completed_in_window} books in all "
            f"completed in {m.window_s:.0f} s",
        )
    )
    server = "-" if m.server_error_ratio is None else f"{m.server_error_ratio:.4f}"
    rows.append(
        Row(
            "error rate",
            "-" if m.fail_ratio is None else f"{m.fail_ratio:.4f}",
            f"< {t.max_error_ratio:g}",
            m.fail_ratio is not None and m.requests > 0 and m.fail_ratio < t.max_error_ratio,
            f"{m.requests} requests; server-side 5xx|429 ratio {server}",
        )
    )
    return rows


def users_row(m: Measured, t: AcceptanceTargets) -> Row:
    """Users served, as the service saw them: held at once, none refused, its p95 held."""
    held = m.server_p95_ms is not None and m.server_p95_ms < t.api_p95_ms
    rejected = m.rejections
    ok = m.users_served >= t.min_users and rejected == 0 and held
    room = {None: "unknown", True: "had room", False: "was full at times"}[m.queue_had_room]
    note = (
        f"service served {m.users_served} users at once (Locust spawned {m.max_users}); "
        + ("rejections unknown" if rejected is None else f"{rejected:.0f} refused")
        + f" while the queue {room}"
        + (f" ({m.rejected_queue_full:.0f} queue_full)" if m.rejected_queue_full else "")
        + "; server p95 "
        + ("unknown" if m.server_p95_ms is None else f"{m.server_p95_ms:.0f} ms")
    )
    goal = f">= {t.min_users}, 0 refused, p95 held"
    return Row("users served (service side)", f"{m.users_served}", goal, ok, note)


def users_served(jobs: list[dict[str, Any]], exclude: set[str], t0: float, t_end: float) -> int:
    """The most users the service was serving at once, by the store's own record of their books.

    A user is an owner (the principal the service recorded) with a book accepted in
    [t0, t_end] (not `exclude`); the service serves that user from its first such book's
    acceptance to its last such book's end (or `t_end` if one is still held). The gaps
    between one book and the next are the user's own pauses, not a user the service let go:
    counting only books held at one instant made ten users read as nine whenever one of them
    was between books at every moment. Refusals and the server's p95 are gated beside this.
    A book without a recorded owner counts as a user of its own.
    """
    sessions: dict[str, tuple[float, float]] = {}
    for job in jobs:
        created = _ts(job.get("created_at"))
        if job.get("job_id") in exclude or created is None or not t0 <= created <= t_end:
            continue
        ended = _ts(job.get("completed_at"))
        if ended is None and job.get("status") in FINISHED:
            continue  # ended without a recorded time (cancelled while queued): never held long
        end = t_end if ended is None else ended
        user = job.get("owner") or f"job:{job.get('job_id')}"
        first, last = sessions.get(user, (created, end))
        sessions[user] = (min(first, created), max(last, end))
    changes = [(t, c) for first, last in sessions.values() for t, c in ((first, 1), (last, -1))]
    held = most = 0
    for _, change in sorted(changes):  # ends before starts on ties
        held += change
        most = max(most, held)
    return most


def generation_bounds(books: list[Book], chapters: int, words: int) -> str:
    """The full-size books against the least time the model allows (see `generation`).

    Bounds: the critical path at the model's stream rate, and the model's per-key quotas (tokens
    per minute for the prompts sent plus the words kept; concurrent streams at the stream rate)
    for the full-size books alone (the load's own small books share the key, so the true quota
    bound is a little higher)."""
    from bookgen.acceptance.generation import critical_path, nominal_tokens
    from bookgen.service.settings import Settings

    done = [b for b in books if b.seconds is not None]
    if not done:
        return "generation vs the model: no full-size book completed"
    sim = Settings().sim
    rate = sim.tokens_per_second
    path = critical_path(Settings(), chapters, words, rate)
    needed = sum(b.input_tokens + nominal_tokens(b.words) for b in done)
    kept = sum(nominal_tokens(b.words) for b in done)
    bounds = {
        "critical path": path,
        "tokens/min": 60.0 * needed / sim.tpm_limit if sim.tpm_limit else 0.0,
        "streams": kept / (sim.max_concurrent_streams * rate) if sim.max_concurrent_streams else 0,
    }
    binding = max(bounds, key=lambda k: bounds[k])
    worst = max(b.seconds or 0.0 for b in done)
    generated = sum(b.output_tokens for b in done)
    return (
        f"generation vs the model ({rate:g} tokens/s per stream, {sim.tpm_limit} tokens/min, "
        f"{sim.max_concurrent_streams} streams per key): slowest full-size book {worst:.0f} s, "
        f"bound {bounds[binding]:.0f} s ({binding}; "
        + ", ".join(f"{k} {v:.0f} s" for k, v in bounds.items())
        + f"), ratio {worst / bounds[binding]:.2f}; {len(done)} books at once: "
        f"{len(done) / worst * 3600:.0f} books/h vs {len(done) / bounds[binding] * 3600:.0f} "
        f"at the bound; completion tokens kept / reported {kept}/{generated}"
    )


def render_table(rows: list[Row]) -> str:
    width = max(len(r.target) for r in rows)
    lines = [f"{'target':<{width}}  {'measured':>10}  {'goal':<22} result  notes"]
    for r in rows:
        result = "PASS" if r.ok else "FAIL"
        lines.append(f"{r.target:<{width}}  {r.measured:>10}  {r.goal:<22} {result:<6}  {r.note}")
    return "\n".join(lines)


def render_alerts(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return "alerts: none received"
    lines = ["alerts received (first firing, last status):"]
    for a in alerts:
        rest = {k: v for k, v in a["labels"].items() if k not in ("alertname", "severity")}
        extra = f" {rest}" if rest else ""
        lines.append(
            f"  {a['alertname']:<36} {a['severity']:<9} {a['status']:<9} {a['first_firing']}{extra}"
        )
    return "\n".join(lines)


RSS_MAX = 'max(max_over_time(bookgen_process_resident_memory_bytes{{job="bookgen"}}[{w}]))'
REJECTED = 'sum(increase(bookgen_jobs_rejected_total{{job="bookgen",reason="{reason}"}}[{w}]))'
QUEUED_MAX = 'max_over_time(max(bookgen_jobs_queued{{job="bookgen"}})[{w}:1s])'
CAPACITY = 'min(bookgen_job_queue_capacity{{job="bookgen"}})'
REQUESTS = 'sum(increase(bookgen_http_requests_total{{job="bookgen"{sel}}}[{w}]))'


def server_figures(prom: str, m: Measured, t0: float, t_load_end: float, t_end: float) -> None:
    """What Prometheus saw: max worker RSS, rejections, and the 5xx|429 ratio under load."""
    window = f"{math.ceil(t_end - t0)}s"
    m.rss_prometheus = prom_value(prom, RSS_MAX.format(w=window), t_end)
    limited = prom_value(prom, REJECTED.format(reason="rate_limited", w=window), t_end)
    full = prom_value(prom, REJECTED.format(reason="queue_full", w=window), t_end)
    queued = prom_value(prom, QUEUED_MAX.format(w=window), t_end)
    capacity = prom_value(prom, CAPACITY.format(), t_end)
    if queued is not None and capacity is not None:
        m.queue_had_room = queued < capacity
    m.rejected_queue_full = full
    if limited is not None and m.queue_had_room is not None:
        # A full queue may refuse (that is its job); a per-client limit never should at 10 users.
        m.rejections = round(limited + ((full or 0.0) if m.queue_had_room else 0.0))
    load = f"{math.ceil(t_load_end - t0)}s"
    total = prom_value(prom, REQUESTS.format(sel="", w=load), t_load_end)
    bad = prom_value(prom, REQUESTS.format(sel=',status=~"5..|429"', w=load), t_load_end)
    if total:
        m.server_error_ratio = (bad or 0.0) / total


def run_verify(options: VerifyOptions, targets: AcceptanceTargets) -> int:
    """Bring the stack up, measure, print the table; 0 when every target passes."""
    from bookgen.stack.prometheus import seconds
    from bookgen.stack.supervisor import Stack

    out = options.report_dir.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    project = options.project or find_project()
    project.export()  # the stack renders its rules from this project's slo.yaml
    print(f"verify: reports in {out}; targets from {targets.source}", flush=True)
    m = Measured()
    with Stack(out / "stack", workers=options.workers, fast=options.fast) as stack:
        api, prom = stack.api_url, stack.prometheus_url
        print(f"verify: stack up: API {api}, Prometheus {prom}", flush=True)
        sampler = RssSampler(stack.worker_pids())
        sampler.start()
        t0 = time.time()
        books = submit_books(api, options.full_books, options.book_chapters, options.book_words)
        m.books_total = len(books)
        print(
            f"verify: {len(books)} books of {options.book_chapters} chapters / "
            f"{options.book_words} words submitted; {options.users} users for "
            f"{options.duration_s:.0f} s",
            flush=True,
        )
        run = LocustRun(
            "acceptance",
            api,
            out / "locust",
            users=options.users,
            duration_s=options.duration_s,
            prometheus_url=prom,
            project=project,
            extra=[
                "--book-chapters", str(options.user_book_chapters),
                "--book-words", str(options.user_book_words),
                # Every user's second book is cancelled, so even a short run cancels some.
                "--cancel-every", "2",
            ],
        )  # fmt: skip
        proc = run.start()
        deadline = time.monotonic() + options.duration_s + 120
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                poll_books(api, books)
                time.sleep(3.0)
        finally:
            stop(proc)
        m.gate_exit = proc.returncode
        t_load_end = time.time()
        wait_until = time.monotonic() + options.book_wait_s
        while time.monotonic() < wait_until:
            poll_books(api, books)
            if all(b.status in FINISHED for b in books):
                break
            time.sleep(3.0)
        t_end = time.time()
        sampler.stop()
        m.window_s = t_end - t0
        m.book_seconds = [s for b in books if (s := b.seconds) is not None]
        m.books_unfinished = sum(b.status not in FINISHED for b in books)
        full_ids = {b.job_id for b in books}
        jobs = all_jobs(api)
        m.users_served = users_served(jobs, full_ids, t0, t_load_end)
        for job in jobs:
            done = _ts(job.get("completed_at"))
            if job.get("status") == "completed" and done is not None and t0 <= done <= t_end:
                m.completed_in_window += 1
                m.completed_full_in_window += job["job_id"] in full_ids
        m.rss_psutil = max(sampler.max_rss.values(), default=0)
        time.sleep(2.0)  # one more scrape
        server_figures(prom, m, t0, t_load_end, t_end)
        gate = run.gate() or {}
        m.group_p95_ms = {
            g: float(v["p95_ms"])
            for g, v in gate.get("groups", {}).items()
            if v.get("p95_ms") is not None and g in targets.p95_by_group_ms
        }
        m.missing_groups = sorted(set(targets.p95_by_group_ms) - set(m.group_p95_ms))
        server = gate.get("server") or {}
        m.disagreements = list(server.get("disagreements") or [])
        m.server_error = server.get("error") if gate else "the Locust gate wrote no report"
        m.overall_p95_ms = gate.get("p95_ms_overall")
        m.fail_ratio = gate.get("fail_ratio")
        m.requests = int(gate.get("requests", 0))
        m.max_users = int(gate.get("max_users", 0))
        m.server_p95_ms = server.get("p95_ms")
        time.sleep(3.0)  # let Alertmanager deliver what fired during the run
        alerts = read_alerts(stack.notifications_path)
        notifications = read_notifications(stack.notifications_path)
        assert stack.alert_profile is not None, "set when the stack started"
        t_report = time.time()  # the charts cover the alerts' delivery too
        series = collect(prom, t0, t_report, seconds(stack.alert_profile.intervals.scrape))
    rows = acceptance_rows(m, targets)
    table = render_table(rows)
    alert_text = render_alerts(alerts) + (
        "\n  (fast alert profile: every time horizon is scaled down, so e.g. the book-time alert"
        " fires for a book far shorter than the target)"
        if options.fast and alerts
        else ""
    )
    passed = all(r.ok for r in rows)
    generation = generation_bounds(books, options.book_chapters, options.book_words)
    summary = (
        f"\nBookGen acceptance ({options.users} users, {options.duration_s:.0f} s load, "
        f"{options.full_books} full-size books of {options.book_chapters} chapters / "
        f"{options.book_words} words; Locust gate exit {m.gate_exit})\n"
        f"{table}\n\n{generation}\n\n{alert_text}\n\nVERIFY {'PASS' if passed else 'FAIL'}\n"
    )
    text_path, json_path = out / "acceptance.txt", out / "acceptance.json"
    text_path.write_text(summary)
    json_path.write_text(
        json.dumps(
            {
                "passed": passed,
                "rows": [asdict(r) for r in rows],
                "measured": asdict(m),
                "targets": asdict(targets),
                "alerts": alerts,
                "window": {"start": t0, "load_end": t_load_end, "end": t_end},
                "options": {k: str(v) for k, v in vars(options).items()},
            },
            indent=2,
        )
    )
    page = write_report(
        out,
        "acceptance",
        report_data(
            title=f"BookGen acceptance: {options.users} users, {options.duration_s:.0f} s load, "
            f"{options.full_books} books of {options.book_chapters} chapters / "
            f"{options.book_words} words",
            verdict=f"VERIFY {'PASS' if passed else 'FAIL'}",
            rows=[asdict(r) for r in rows],
            start=t0,
            end=t_report,
            limits={
                "api_p95_ms": targets.api_p95_ms,
                "max_rss_mib": targets.max_rss_bytes / 2**20,
            },
            series=series,
            notifications=notifications,
            marks={"load ends": t_load_end, "books waited for": t_end},
            notes=[generation, f"targets from {targets.source}", f"Locust gate exit {m.gate_exit}"]
            + (["fast alert profile: time horizons scaled down"] if options.fast else []),
        ),
    )
    print(summary, flush=True)
    print(f"table:  {text_path}\nfigures: {json_path}\nLocust: {run.report_dir}", flush=True)
    print(f"report: {page}", flush=True)
    print(f"stack logs: {out / 'stack'}", flush=True)
    return 0 if passed else 1
