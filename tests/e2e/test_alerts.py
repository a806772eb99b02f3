"""End to end on the fast profile: a clean run stays silent, then every alert family fires and
resolves within 2 x (for + scrape + evaluation + group_wait) of its fault, measured at the receiver.

The tests run in file order on one stack: the clean run first, then groups of faults that do not
interfere run concurrently; target down last (it inhibits every other alert).
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from bookgen.stack.faults import ApiFaults, SimFaults
from bookgen.stack.profile import load_spec
from bookgen.stack.receiver import alert_events
from bookgen.stack.supervisor import Stack
from tests.e2e.conftest import RESULTS
from tests.e2e.load import NormalLoad, submit
from tests.e2e.scenarios import Expect, Scenario, problems, run, run_together

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLEAN_S = float(os.environ.get("BOOKGEN_E2E_CLEAN_S", "120"))
MIB = 1024 * 1024
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


def submitting(api_url: str, every_s: float) -> threading.Thread:
    """A body for `Scenario.during`: submit a small book every `every_s` as a fresh client."""
    raise NotImplementedError


def keep_submitting(api_url: str, every_s: float) -> object:
    def body(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                submit(api_url, f"drill-{next(_ids)}", timeout_s=5.0)
            except httpx.HTTPError:
                pass
            stop.wait(every_s)

    return body


def test_clean_run_of_normal_load_raises_no_alert_but_watchdog(
    stack: Stack, load: NormalLoad
) -> None:
    time.sleep(CLEAN_S)
    names = sorted(
        {a["labels"]["alertname"] for _, a in alert_events(stack.notifications_path)}
        - {"Watchdog"}
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
