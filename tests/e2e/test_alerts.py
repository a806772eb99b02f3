"""End to end on the fast profile: a clean run stays silent, then every alert family fires and
resolves within 2 x (for + scrape + evaluation + group_wait) of its fault, measured at the receiver.

The tests run in file order on one stack: the clean run first, then groups of faults that do not
interfere run concurrently; target down last (it inhibits every other alert).
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

import httpx
import pytest

from bookgen.slo.dashboards import panel_queries
from bookgen.stack.faults import ApiFaults, SimFaults
from bookgen.stack.profile import load_spec
from bookgen.stack.receiver import alert_events, read_notifications
from bookgen.stack.supervisor import Stack
from e2e.conftest import E2E_ENV
from e2e.load import NormalLoad, keep_submitting, submit
from e2e.report import RESULTS
from e2e.scenarios import Expect, Scenario, problems, run, run_together

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLEAN_S = float(os.environ.get("BOOKGEN_E2E_CLEAN_S", "120"))
MIB = 1024 * 1024
QUEUE = int(E2E_ENV["BOOKGEN_MAX_QUEUE"])
_ids = itertools.count()


@pytest.fixture(scope="module")
def load(stack: Stack) -> Iterator[NormalLoad]:
    with NormalLoad(stack.api_url) as running:
        yield running


@pytest.fixture(scope="module")
def api(stack: Stack) -> ApiFaults:
    return ApiFaults(stack.api_url, stack.workers)


@pytest.fixture(scope="module")
def sim(stack: Stack) -> Iterator[SimFaults]:
    assert stack.sim_url is not None
    faults = SimFaults(stack.sim_url)
    yield faults
    faults.close()


def record(results: list[dict[str, object]]) -> None:
    RESULTS["scenarios"].extend(results)
    assert not problems(results), problems(results)


def keep_failing(
    api_url: str, every_s: float, clients: int = 1
) -> Callable[[threading.Event], None]:
    """A `Scenario.during` body: `clients` loops of GET /debug/fail (always 500) every `every_s`."""

    def one(stop: threading.Event) -> None:
        with httpx.Client(base_url=api_url, timeout=5.0) as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    client.get("/debug/fail")
                stop.wait(every_s)

    def body(stop: threading.Event) -> None:
        loops = [threading.Thread(target=one, args=(stop,)) for _ in range(clients)]
        for loop in loops:
            loop.start()
        for loop in loops:
            loop.join()

    return body


def test_clean_run_of_normal_load_raises_no_alert_but_watchdog(
    stack: Stack, load: NormalLoad
) -> None:
    time.sleep(CLEAN_S)
    names = sorted(
        {a["labels"]["alertname"] for _, a in alert_events(stack.notifications_path)} - {"Watchdog"}
    )
    RESULTS["clean_run"] = {
        "duration_s": CLEAN_S,
        "alerts_other_than_watchdog": names,
        "books": dict(load.books),
        "non_2xx": load.failures(),
    }
    assert load.books["completed"] >= 1, load.books
    assert load.failures() == {}
    assert names == []


def test_every_dashboard_panel_query_returns_data_from_live_prometheus(
    stack: Stack, load: NormalLoad
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
    stack: Stack, load: NormalLoad
) -> None:
    """Per-client limiting protects the service; it is not an incident."""
    wait_quiet(stack)
    started = time.time()
    burst(stack.api_url, 40)
    profile = stack.alert_profile
    assert profile is not None
    # Longer than the slowest bound of any alert a refusal could move, then look.
    time.sleep(max(profile.detection_bound_s("BookGenQueueFull", "warning"), 10.0) + 5)
    # Alerts that began after the burst (earlier scenarios' alerts may still be resolving).
    names = {
        a["labels"]["alertname"]
        for _, a in alert_events(stack.notifications_path, started)
        if a.get("status") == "firing"
        and datetime.fromisoformat(str(a["startsAt"]).replace("Z", "+00:00")).timestamp()
        >= started - 1
    } - {"Watchdog"}
    RESULTS["rate_limited_client"] = {"burst": 40, "alerts": sorted(names)}
    assert names == set()


def test_api_latency_error_rate_and_llm_errors_fire_and_resolve(
    stack: Stack, load: NormalLoad, api: ApiFaults, sim: SimFaults
) -> None:
    record(
        run_together(
            stack,
            [
                Scenario(
                    "0.4 s added to every API route",
                    lambda: api.latency(0.4),
                    lambda: api.latency(0.0),
                    [Expect("api latency", "BookGenAPILatencyHigh", {"severity": "warning"})],
                ),
            ],
        )
    )
    # Alone: the latency fault above would slow the traffic below the alert's floor.
    record(
        run(
            stack,
            Scenario(
                "5 % of API requests answer 500",
                lambda: api.errors(0.05),
                lambda: api.errors(0.0),
                # A ticket: above the 1 % target, far below the 14.4x burn that pages.
                [Expect("error rate", "BookGenAPIErrorRateHigh", {"severity": "warning"})],
                during=keep_reading(stack.api_url, 0.02),
            ),
        )
    )
    record(
        run_together(
            stack,
            [
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
                    during=keep_failing(stack.api_url, 0.1, clients=3),
                ),
            ],
        )
    )
    record(
        run(
            stack,
            Scenario(
                "the model answers 20 % of calls with 500 (retries save most books)",
                lambda: sim.set(error_rate=0.2),
                lambda: sim.set(error_rate=0.0),
                # A ticket: above the 5 % threshold, under every burn pair's factor.
                [Expect("llm errors", "BookGenLLMErrorsHigh", {"severity": "warning"})],
                during=keep_submitting(stack.api_url, 0.25),
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
    record(run(stack, every_book_fails))
    # One page per incident: once the LLM page is out, the ticket on the same SLO is held back
    # (the ticket may go out first: its 5 % threshold is crossed before the page's long window).
    events = list(alert_events(stack.notifications_path, since))
    paged = min(
        received
        for received, a in events
        if a["labels"]["alertname"] == "BookGenLLMErrorBudgetBurn"
        and a["labels"].get("severity") == "critical"
        and a.get("status") == "firing"
    )
    # A notification already on its way when the page fired may land a moment later.
    tickets = [
        received - paged
        for received, a in events
        if a["labels"]["alertname"] == "BookGenLLMErrorsHigh"
        and a.get("status") == "firing"
        and received > paged + 2
    ]
    RESULTS["llm_ticket_notifications_after_the_page"] = len(tickets)
    assert tickets == []


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


def wait_quiet(stack: Stack, timeout_s: float = 90) -> None:
    """Until Prometheus has no alert firing but the Watchdog (earlier faults have drained)."""
    query = 'ALERTS{alertstate="firing", alertname!="Watchdog"}'
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=stack.prometheus_url, timeout=5) as client:
        while time.monotonic() < deadline:
            result = client.get("/api/v1/query", params={"query": query}).json()["data"]["result"]
            if not result:
                return
            time.sleep(1)
    pytest.fail(f"alerts still firing after {timeout_s} s: {result}")


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


def test_stuck_jobs_waiting_books_queue_full_and_memory_fire_and_resolve(
    stack: Stack, load: NormalLoad, api: ApiFaults, sim: SimFaults
) -> None:
    spec = load_spec()
    balloon = spec.targets.memory.max_bytes // MIB + 256
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
                ),
                Scenario(
                    f"{balloon} MiB balloon in worker 0",
                    lambda: api.balloon(balloon, worker=0),
                    lambda: api.release(worker=0),
                    [
                        Expect(
                            "worker memory",
                            "BookGenWorkerMemoryHigh",
                            {"severity": "critical", "worker": "0", "job": "bookgen"},
                        )
                    ],
                ),
            ],
        )
    )


def test_a_worker_that_stops_answering_scrapes_fires_target_down(
    stack: Stack, load: NormalLoad
) -> None:
    pid = stack.worker_pids()[1]
    record(
        run(
            stack,
            Scenario(
                "worker 1 frozen (SIGSTOP)",
                lambda: os.kill(pid, signal.SIGSTOP),
                lambda: os.kill(pid, signal.SIGCONT),
                [
                    Expect(
                        "target down",
                        "BookGenTargetDown",
                        {"severity": "critical", "job": "bookgen", "worker": "1"},
                    )
                ],
            ),
        )
    )


def test_pages_tickets_and_the_watchdog_reach_their_own_receivers(stack: Stack) -> None:
    """Routing, proven on everything the receiver got in this module's scenarios."""
    seen: dict[str, set[str]] = {}
    for notification in read_notifications(stack.notifications_path):
        for alert in notification.get("alerts", []):
            severity = str(alert["labels"].get("severity", ""))
            seen.setdefault(severity, set()).add(str(notification.get("receiver")))
    RESULTS["routing"] = {severity: sorted(names) for severity, names in seen.items()}
    assert seen.get("critical") == {"page"}
    assert seen.get("warning") == {"ticket"}
    assert seen.get("info") == {"watchdog"}
