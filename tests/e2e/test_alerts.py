"""End to end on the fast profile: a clean soak stays silent, then every alert rule fires and
resolves within 2 x (for + scrape + evaluation + group_wait) of its fault, measured at the receiver.

The tests run in file order on one stack: the soak first (the dashboard and rate-limit checks run
inside it: neither may raise an alert), then groups of faults that do not interfere run
concurrently: the tickets below the page thresholds before the pages (a page's errors stay in the
tickets' long windows for a while), target down and target absent last (they inhibit alerts).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
import pytest

from bookgen.slo.dashboards import panel_queries
from bookgen.stack.faults import ApiFaults, ScrapeJobs, SimFaults, debug_headers
from bookgen.stack.profile import load_spec
from bookgen.stack.receiver import alert_events, read_notifications
from bookgen.stack.supervisor import Stack
from e2e.conftest import E2E_ENV
from e2e.load import NormalLoad, keep_submitting, submit
from e2e.report import RESULTS
from e2e.scenarios import Expect, Scenario, problems, run, run_together

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The clean soak: in CI at least 5 min of the fast profile (5 h of production behaviour).
CLEAN_S = float(os.environ.get("BOOKGEN_E2E_CLEAN_S", "300"))
MIB = 1024 * 1024
QUEUE = int(E2E_ENV["BOOKGEN_MAX_QUEUE"])
_ids = itertools.count()


@pytest.fixture(scope="module")
def load(stack: Stack) -> Iterator[NormalLoad]:
    with NormalLoad(stack.api_url) as running:
        yield running


@pytest.fixture(scope="module")
def soak(stack: Stack, load: NormalLoad) -> float:
    """When the clean soak began: the normal load runs from here on, and no fault until it ends."""
    return time.time()


@pytest.fixture(scope="module")
def api(stack: Stack) -> ApiFaults:
    return ApiFaults(stack.api_url, stack.workers, token=stack.debug_token)


@pytest.fixture(scope="module")
def sim(stack: Stack) -> Iterator[SimFaults]:
    assert stack.sim_url is not None
    faults = SimFaults(stack.sim_url)
    yield faults
    faults.close()


def record(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    RESULTS["scenarios"].extend(results)
    assert not problems(results), problems(results)
    return results


def keep_failing(
    api_url: str, every_s: float, clients: int = 1, token: str | None = None
) -> Callable[[threading.Event], None]:
    """A `Scenario.during` body: `clients` loops of GET /debug/fail (always 500) every `every_s`."""

    def one(stop: threading.Event) -> None:
        with httpx.Client(base_url=api_url, timeout=5.0, headers=debug_headers(token)) as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    client.get("/debug/fail")
                stop.wait(every_s)

    return in_parallel(one, clients)


def keep_slow_share(
    stack: Stack, share: float, seconds: float = 0.3
) -> Callable[[threading.Event], None]:
    """A `Scenario.during` body: requests that answer after `seconds` (GET /debug/slow), as many
    as make `share` of all API requests; the rate follows the measured 5 s request rate (the
    other scenarios' traffic comes and goes)."""
    total = 'sum(rate(bookgen_http_request_duration_seconds_count{job="bookgen"}[5s]))'
    headers = debug_headers(stack.debug_token)

    def slow(client: httpx.Client) -> None:
        with contextlib.suppress(httpx.HTTPError):
            client.get("/debug/slow", params={"seconds": seconds})

    def body(stop: threading.Event) -> None:
        per_s = 2.0
        with (
            httpx.Client(base_url=stack.api_url, timeout=10.0, headers=headers) as client,
            httpx.Client(base_url=stack.prometheus_url, timeout=5.0) as prometheus,
            ThreadPoolExecutor(max_workers=32) as pool,
        ):
            next_check = time.monotonic() + 2
            while not stop.is_set():
                pool.submit(slow, client)
                stop.wait(1.0 / per_s)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + 2
                    with contextlib.suppress(httpx.HTTPError, KeyError, IndexError, ValueError):
                        result = prometheus.get("/api/v1/query", params={"query": total}).json()
                        rate = float(result["data"]["result"][0]["value"][1])
                        # Ours are part of the total: slow = share x (others + slow).
                        others = max(rate - per_s, 1.0)
                        per_s = min(max(share * others / (1 - share), 0.5), 30.0)

    return body


def keep_leaking(api: ApiFaults, worker: int, mib_per_s: int) -> Callable[[threading.Event], None]:
    """A `Scenario.during` body: worker `worker` holds `mib_per_s` MiB more every second."""

    def body(stop: threading.Event) -> None:
        while not stop.is_set():
            began = time.monotonic()
            api.balloon(mib_per_s, worker=worker)
            stop.wait(max(0.0, 1.0 - (time.monotonic() - began)))

    return body


def in_parallel(
    one: Callable[[threading.Event], None], count: int
) -> Callable[[threading.Event], None]:
    def body(stop: threading.Event) -> None:
        loops = [threading.Thread(target=one, args=(stop,)) for _ in range(count)]
        for loop in loops:
            loop.start()
        for loop in loops:
            loop.join()

    return body


def keep_reading(api_url: str, every_s: float) -> Callable[[threading.Event], None]:
    """A `Scenario.during` body: GET /api/v1/status every `every_s` (traffic above the floors)."""

    def body(stop: threading.Event) -> None:
        with httpx.Client(base_url=api_url, timeout=5.0) as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    client.get("/api/v1/status")
                stop.wait(every_s)

    return body


def burst(api_url: str, count: int) -> None:
    """`count` submissions at once from one client: its rate limit refuses the excess."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(lambda _: submit(api_url, "burst-client").status_code, range(count)))
    assert 429 in codes, codes


def firing_since(stack: Stack, since: float) -> set[str]:
    """Names of the alerts (but the Watchdog) the receiver got firing that began after `since`."""
    return {
        a["labels"]["alertname"]
        for _, a in alert_events(stack.notifications_path, since)
        if a.get("status") == "firing"
        and datetime.fromisoformat(str(a["startsAt"]).replace("Z", "+00:00")).timestamp()
        >= since - 1
    } - {"Watchdog"}


def slow_requests(stack: Stack, since: float) -> dict[str, Any]:
    """What the API-latency SLI saw since `since`: requests over the bound per route, and the
    highest value each SLI window reached. Recorded with the clean runs, so an alert there can
    be traced to the requests behind it."""
    seconds = max(1, int(time.time() - since))
    bound = 'le="0.2"'
    duration = "bookgen_http_request_duration_seconds"
    slow = (
        f"sum by (route) (increase({duration}_count[{seconds}s]))"
        f" - sum by (route) (increase({duration}_bucket{{{bound}}}[{seconds}s]))"
    )
    found: dict[str, Any] = {"by_route": {}, "sli_max": {}}
    with httpx.Client(base_url=stack.prometheus_url, timeout=10) as client:

        def query(expr: str) -> list[dict[str, Any]]:
            data = client.get("/api/v1/query", params={"query": expr}).json()
            return list(data.get("data", {}).get("result", []))

        for series in query(slow):
            value = round(float(series["value"][1]), 1)
            if value >= 0.5:
                found["by_route"][series["metric"].get("route", "?")] = value
        for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
            sli = f'slo:sli_error:ratio_rate{window}{{slo="api_latency"}}'
            for series in query(f"max_over_time({sli}[{seconds}s])"):
                found["sli_max"][window] = round(float(series["value"][1]), 4)
    return found


def wait_inactive(stack: Stack, alertnames: list[str], timeout_s: float = 150) -> None:
    """Until Prometheus has none of `alertnames` pending or firing (an earlier fault drained)."""
    query = f'ALERTS{{alertname=~"{"|".join(alertnames)}"}}'
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=stack.prometheus_url, timeout=5) as client:
        while time.monotonic() < deadline:
            result = client.get("/api/v1/query", params={"query": query}).json()["data"]["result"]
            if not result:
                return
            time.sleep(1)
    pytest.fail(f"still active after {timeout_s} s: {result}")


def prometheus_firing(stack: Stack, expr: str, start: float, end: float) -> int:
    """How many 1 s steps of [start, end] Prometheus had a result for `expr`."""
    with httpx.Client(base_url=stack.prometheus_url, timeout=10) as client:
        data = client.get(
            "/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": 1}
        ).json()
    assert data["status"] == "success", data
    return sum(len(series["values"]) for series in data["data"]["result"])


def test_every_dashboard_panel_query_returns_data_from_live_prometheus(
    stack: Stack, load: NormalLoad, soak: float
) -> None:
    """Grafana cannot run here: each panel's PromQL, run against the stack, must return series."""
    # The worker tier's board needs a worker tier: test_worker_alerts.py proves it on one.
    queries = [q for q in panel_queries(load_spec()) if q[0] != "bookgen-workers"]
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=stack.prometheus_url, timeout=10) as client:

        def returns_data(expr: str) -> bool:
            data = client.get("/api/v1/query", params={"query": expr}).json()
            assert data["status"] == "success", (expr, data)
            return bool(data["data"]["result"])

        pending = list(queries)
        while True:  # a rate over 1 m needs two samples of a series that appeared recently
            pending = [q for q in pending if not returns_data(q[2])]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(2)
    empty = {f"{uid} / {title}": expr for uid, title, expr in pending}
    RESULTS["dashboards"] = {"queries": len(queries), "empty": empty}
    assert len(queries) > 0
    assert empty == {}, empty


def test_one_client_over_its_rate_limit_gets_429s_and_pages_nobody(
    stack: Stack, load: NormalLoad, soak: float
) -> None:
    """Per-client limiting protects the service; it is not an incident (inside the soak)."""
    started = time.time()
    burst(stack.api_url, 40)
    profile = stack.alert_profile
    assert profile is not None
    # Longer than the slowest bound of any alert a refusal could move, then look.
    time.sleep(max(profile.detection_bound_s("BookGenQueueFull", "warning"), 10.0) + 5)
    names = firing_since(stack, started)
    RESULTS["rate_limited_client"] = {"burst": 40, "alerts": sorted(names)}
    if names:
        RESULTS["rate_limited_client"]["slow_requests"] = slow_requests(stack, started)
    assert names == set(), RESULTS["rate_limited_client"]


@pytest.mark.timeout(CLEAN_S + 300)  # a long soak (BOOKGEN_E2E_CLEAN_S=3600) is no hang
def test_clean_soak_of_normal_load_raises_no_alert_but_watchdog(
    stack: Stack, load: NormalLoad, soak: float
) -> None:
    time.sleep(max(0.0, soak + CLEAN_S - time.time()))
    duration = time.time() - soak
    names = sorted(
        {a["labels"]["alertname"] for _, a in alert_events(stack.notifications_path)} - {"Watchdog"}
    )
    RESULTS["clean_run"] = {
        "duration_s": round(duration, 1),
        "alerts_other_than_watchdog": names,
        "books": dict(load.books),
        "non_2xx": load.failures(),
        "slow_requests": slow_requests(stack, soak),
    }
    assert duration >= CLEAN_S
    assert load.books["completed"] >= 1, load.books
    assert load.failures() == {}
    assert names == [], RESULTS["clean_run"]


def test_tickets_below_the_page_thresholds_fire_and_resolve(
    stack: Stack, load: NormalLoad, api: ApiFaults, sim: SimFaults
) -> None:
    """Faults under every page threshold, all at once: each raises its tickets (the threshold
    alert and the burn-rate warning of its SLO) and no page. A burn ticket resolves only when
    its 6 min (fast: 6 s x 60) short window has drained."""
    since = time.time()
    record(
        run_together(
            stack,
            [
                Scenario(
                    "8 % of API requests answer 500 (reads at up to 50 a second)",
                    lambda: api.errors(0.08),
                    lambda: api.errors(0.0),
                    [
                        Expect("error rate", "BookGenAPIErrorRateHigh", {"severity": "warning"}),
                        # Under the 14.4x (14.4 %) and 6x (6 % over 6 min) pages.
                        Expect(
                            "availability",
                            "BookGenAvailabilityErrorBudgetBurn",
                            {"severity": "warning", "slo": "availability"},
                            error_ratio=0.05,
                        ),
                    ],
                    during=keep_reading(stack.api_url, 0.02),
                ),
                Scenario(
                    "9 % of API requests answer after 0.3 s (GET /debug/slow)",
                    lambda: None,
                    lambda: None,
                    [
                        # Under the 14.4x (14.4 %) and 6x (6 % over 6 min) pages.
                        Expect(
                            "api latency",
                            "BookGenAPILatencyErrorBudgetBurn",
                            {"severity": "warning", "slo": "api_latency"},
                            error_ratio=0.09,
                        )
                    ],
                    during=keep_slow_share(stack, 0.09),
                ),
                Scenario(
                    "the model answers 20 % of calls with 500 (retries save most books)",
                    lambda: sim.set(error_rate=0.2),
                    lambda: sim.set(error_rate=0.0),
                    [
                        # Above the 5 % threshold, under every page's factor.
                        Expect("llm errors", "BookGenLLMErrorsHigh", {"severity": "warning"}),
                        Expect(
                            "llm errors",
                            "BookGenLLMErrorBudgetBurn",
                            {"severity": "warning", "slo": "llm"},
                            error_ratio=0.2,
                        ),
                        # A book fails when a call fails twice: ~1 book in 10.
                        Expect(
                            "books",
                            "BookGenBooksErrorBudgetBurn",
                            {"severity": "warning", "slo": "books"},
                            error_ratio=0.08,
                        ),
                    ],
                    during=keep_submitting(stack.api_url, 0.5),
                    # As many clean books after: the error share of the short windows halves
                    # with every fault's length of clean traffic instead of waiting them out.
                    after=keep_submitting(stack.api_url, 0.5),
                ),
            ],
        )
    )
    pages = sorted(
        a["labels"]["alertname"]
        for _, a in alert_events(stack.notifications_path, since)
        if a.get("status") == "firing" and a["labels"].get("severity") == "critical"
    )
    RESULTS["pages_during_tickets"] = pages
    assert pages == []


def test_pages_fire_resolve_and_hide_their_tickets(
    stack: Stack, load: NormalLoad, api: ApiFaults, sim: SimFaults
) -> None:
    record(
        run(
            stack,
            Scenario(
                "0.4 s added to every API route",
                lambda: api.latency(0.4),
                lambda: api.latency(0.0),
                [
                    Expect("api latency", "BookGenAPILatencyHigh", {"severity": "warning"}),
                    Expect(
                        "api latency",
                        "BookGenAPILatencyErrorBudgetBurn",
                        {"severity": "critical", "slo": "api_latency"},
                        error_ratio=1.0,
                    ),
                ],
                # The normal load waits for each answer, so it slows down: readers at the
                # normal request rate keep the slow requests' share of the window as timed.
                during=in_parallel(keep_reading(stack.api_url, 0.05), 12),
            ),
        )
    )
    record(
        run(
            stack,
            Scenario(
                "30 requests a second to /debug/fail (answers 500)",
                lambda: None,
                lambda: None,
                [
                    # 30 failures a second beside the normal load's ~10 requests: >= 40 %.
                    Expect(
                        "availability",
                        "BookGenAvailabilityErrorBudgetBurn",
                        {"severity": "critical", "slo": "availability"},
                        error_ratio=0.4,
                    )
                ],
                during=keep_failing(stack.api_url, 0.1, clients=3, token=stack.debug_token),
            ),
        )
    )
    every_book_fails = Scenario(
        "the model answers every call with 500: every book fails",
        lambda: sim.set(error_rate=1.0),
        lambda: sim.set(error_rate=0.0),
        [
            Expect(
                "llm errors",
                "BookGenLLMErrorBudgetBurn",
                {"severity": "critical", "slo": "llm"},
                error_ratio=0.9,
            ),
            # Four failing books a second against the normal load's one in 15 s.
            Expect(
                "books",
                "BookGenBooksErrorBudgetBurn",
                {"severity": "critical", "slo": "books"},
                error_ratio=0.9,
            ),
        ],
        during=keep_submitting(stack.api_url, 0.25),
    )
    since = time.time()
    rows = record(run(stack, every_book_fails))
    page = rows[0]
    paged, page_resolved = float(page["detected_at"]), float(page["resolved_at"])
    events = list(alert_events(stack.notifications_path, since))

    def tickets(alertname: str, extra: dict[str, str]) -> list[float]:
        # A notification already on its way when the page fired may land a moment later.
        return [
            received - paged
            for received, a in events
            if a["labels"]["alertname"] == alertname
            and a.get("status") == "firing"
            and all(a["labels"].get(k) == v for k, v in extra.items())
            and paged + 2 < received < page_resolved
        ]

    # One page per incident: while the LLM page is out, the ticket on the same SLO (the
    # threshold alert) and the page's own warning twin are held back by Alertmanager...
    threshold_ticket = tickets("BookGenLLMErrorsHigh", {})
    twin = tickets("BookGenLLMErrorBudgetBurn", {"severity": "warning"})
    # ...while Prometheus had the twin firing: it is the inhibition that keeps it quiet.
    twin_rule = (
        'ALERTS{alertname="BookGenLLMErrorBudgetBurn",severity="warning",alertstate="firing"}'
    )
    twin_firing_s = prometheus_firing(stack, twin_rule, paged + 2, page_resolved)
    RESULTS["inhibition"] = {
        "llm_page_s": round(page_resolved - paged, 1),
        "llm_threshold_ticket_notifications_under_the_page": len(threshold_ticket),
        "llm_warning_twin_notifications_under_the_page": len(twin),
        "llm_warning_twin_firing_in_prometheus_s": twin_firing_s,
    }
    assert threshold_ticket == []
    assert twin == []
    assert twin_firing_s > 0


def pause_with_a_running_job(stack: Stack, api: ApiFaults, sim: SimFaults) -> None:
    """Slow the model so a job is surely mid-call, pause every worker, then queue more work.

    A paused worker holds its jobs before their next LLM call; the slow call in flight makes sure
    the pause lands before a small book has all its calls under way.
    """
    sim.set(latency_s=5.0)
    jobs = [submit(stack.api_url, f"slow-{next(_ids)}").json()["job_id"] for _ in range(2)]
    deadline = time.monotonic() + 20
    with httpx.Client(base_url=stack.api_url, timeout=5) as client:
        while time.monotonic() < deadline:
            states = {
                client.get(f"/api/v1/biographies/{job}/status").json()["status"] for job in jobs
            }
            if "in_progress" in states:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"no job started within 20 s: {states}")
    api.pause()
    sim.set(latency_s=0.0)
    for _ in range(3):
        assert submit(stack.api_url, f"queued-{next(_ids)}").status_code == 202


def pause_then_fill_the_queue(stack: Stack, api: ApiFaults, sim: SimFaults) -> None:
    """Paused workers, and books submitted (each from its own client) until the queue is full."""
    pause_with_a_running_job(stack, api, sim)
    codes = [submit(stack.api_url, f"fill-{next(_ids)}").status_code for _ in range(QUEUE + 5)]
    assert 429 in codes, codes


def test_stuck_jobs_waiting_books_queue_full_and_a_leak_fire_and_resolve(
    stack: Stack, load: NormalLoad, api: ApiFaults, sim: SimFaults
) -> None:
    record(
        run_together(
            stack,
            [
                Scenario(
                    "every worker paused with a job running, then the queue filled",
                    lambda: pause_then_fill_the_queue(stack, api, sim),
                    api.resume,
                    [
                        Expect("book wait", "BookGenBookWaitingTooLong", {"severity": "warning"}),
                        Expect("queue full", "BookGenQueueFull", {"severity": "warning"}),
                        Expect(
                            "stuck job",
                            "BookGenJobRunningTooLong",
                            {"severity": "warning", "job": "bookgen"},
                        ),
                        Expect(
                            "throughput",
                            "BookGenThroughputLow",
                            {"severity": "warning"},
                        ),
                    ],
                    # Clients keep trying while the queue is full: refusals go on until the
                    # workers resume (the normal load alone submits too rarely to hold the alert).
                    during=keep_submitting(stack.api_url, 1.0),
                ),
                Scenario(
                    "worker 1 grows 32 MiB a second (on course for 2 GiB within 4 min)",
                    lambda: None,
                    lambda: api.release(worker=1),
                    [
                        Expect(
                            "worker memory",
                            "BookGenWorkerMemoryLeak",
                            {"severity": "warning", "worker": "1", "job": "bookgen"},
                        )
                    ],
                    during=keep_leaking(api, worker=1, mib_per_s=32),
                ),
            ],
        )
    )


def test_slow_books_fire_book_duration_high(stack: Stack, load: NormalLoad, sim: SimFaults) -> None:
    # A small book is the outline, then its chapter (started from the streamed outline), and at
    # most one length fix: three calls one after another at most, two at least (> 30 s).
    call_s = 16.0
    # The paused books of the scenario before finished late: their durations leave the window.
    wait_inactive(stack, ["BookGenBookDurationHigh", "BookGenJobRunningTooLong"])
    record(
        run(
            stack,
            Scenario(
                f"the model answers every call after {call_s:.0f} s: books take over 30 s",
                lambda: sim.set(latency_s=call_s),
                lambda: sim.set(latency_s=0.0),
                [
                    Expect(
                        "book time",
                        "BookGenBookDurationHigh",
                        {"severity": "warning"},
                        fault_delay_s=3 * call_s,
                    )
                ],
                during=keep_submitting(stack.api_url, 4.0),
            ),
        )
    )


def test_a_frozen_worker_fires_target_down_and_hides_no_other_target_s_alert(
    stack: Stack, load: NormalLoad, api: ApiFaults
) -> None:
    """Target down hides only alerts read from that target: worker 0's memory page still goes
    out while worker 1 cannot be scraped."""
    balloon = load_spec().targets.memory.max_bytes // MIB + 256
    pid = stack.worker_pids()[1]
    seen: dict[str, Any] = {}

    def inject() -> None:
        api.balloon(balloon, worker=0)
        os.kill(pid, signal.SIGSTOP)

    def remove() -> None:
        # Both alerts are out: what Alertmanager says of the memory page, before the fault ends.
        seen["memory"] = alertmanager_alerts(stack, "BookGenWorkerMemoryHigh")
        seen["down"] = alertmanager_alerts(stack, "BookGenTargetDown")
        os.kill(pid, signal.SIGCONT)
        api.release(worker=0)

    record(
        run(
            stack,
            Scenario(
                f"worker 1 frozen (SIGSTOP) while worker 0 holds a {balloon} MiB balloon",
                inject,
                remove,
                [
                    Expect(
                        "target down",
                        "BookGenTargetDown",
                        {"severity": "critical", "job": "bookgen", "worker": "1"},
                    ),
                    Expect(
                        "worker memory",
                        "BookGenWorkerMemoryHigh",
                        {"severity": "critical", "worker": "0", "job": "bookgen"},
                    ),
                ],
            ),
        )
    )
    states = {
        name: [(a["labels"].get("worker"), a["status"]["state"]) for a in seen[key]]
        for name, key in (("BookGenTargetDown", "down"), ("BookGenWorkerMemoryHigh", "memory"))
    }
    RESULTS["target_down_hides_nothing_else"] = states
    assert states["BookGenTargetDown"] == [("1", "active")]
    # Active, not suppressed: the down target's inhibit rule matched nothing of worker 0.
    assert states["BookGenWorkerMemoryHigh"] == [("0", "active")]
    assert [a["status"]["inhibitedBy"] for a in seen["memory"]] == [[]]


def alertmanager_alerts(stack: Stack, alertname: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=stack.alertmanager_url, timeout=10) as client:
        response = client.get("/api/v2/alerts", params={"filter": f'alertname="{alertname}"'})
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()
    return found


def test_an_api_job_gone_from_prometheus_fires_target_absent(
    stack: Stack, load: NormalLoad
) -> None:
    jobs = ScrapeJobs(stack.run_dir / "prometheus" / "prometheus.yml", stack.prometheus_url)
    record(
        run(
            stack,
            Scenario(
                "the API job taken out of Prometheus's scrape config (reloaded)",
                lambda: jobs.drop("bookgen"),
                jobs.restore,
                [
                    Expect(
                        "target absent",
                        "BookGenTargetAbsent",
                        {"severity": "critical", "job": "bookgen"},
                    )
                ],
            ),
        )
    )


def test_pages_tickets_and_the_watchdog_reach_their_own_receivers(stack: Stack) -> None:
    """Routing, proven on everything the receiver got in this module's scenarios: every page at
    the page receiver and never at the ticket one, every ticket the other way round."""
    seen: dict[str, set[str]] = {}
    by_alert: dict[str, set[str]] = {}
    for notification in read_notifications(stack.notifications_path):
        for alert in notification.get("alerts", []):
            severity = str(alert["labels"].get("severity", ""))
            receiver = str(notification.get("receiver"))
            seen.setdefault(severity, set()).add(receiver)
            name = f"{alert['labels']['alertname']}/{severity}"
            by_alert.setdefault(name, set()).add(receiver)
    RESULTS["routing"] = {name: sorted(receivers) for name, receivers in sorted(by_alert.items())}
    assert seen.get("critical") == {"page"}
    assert seen.get("warning") == {"ticket"}
    assert seen.get("info") == {"watchdog"}
    pages = {name for name in by_alert if name.endswith("/critical")}
    assert len(pages) >= 6, pages
