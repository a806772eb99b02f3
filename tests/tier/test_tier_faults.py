"""Workers killed with SIGKILL mid-chapter, and every worker restarted with SIGTERM, during books.

Real processes: a private Redis (or the machine's RabbitMQ), PostgreSQL, the simulated model, an
API process and `bookgen worker`s. Each test prints the figures it measured.
"""

from __future__ import annotations

import signal
import time

import pytest

from bookgen.acceptance.fleet import Fleet, Host, Worker
from conftest import FleetFactory

pytestmark = [pytest.mark.tier, pytest.mark.postgres, pytest.mark.slow]

LOCAL = Host("local")
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


def wait_running(fleet: Fleet, worker: Worker, timeout_s: float = 60) -> list[tuple[str, int]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pieces = [p for p in fleet.running_pieces(worker.owner_prefix) if p[1] > 0]
        if pieces:
            return pieces
        time.sleep(0.2)
    raise AssertionError(f"{worker.component.name} never ran a chapter")


def kill_and_time_rerun(fleet: Fleet, worker: Worker, timeout_s: float = 120) -> float:
    """SIGKILL `worker` mid-chapter; seconds until each of its sections ran again (the max)."""
    pieces = wait_running(fleet, worker)
    prefix = worker.owner_prefix
    worker.component.kill()
    killed = time.time()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        restarted = fleet.restarted_at(pieces, prefix)
        if all(v is not None for v in restarted.values()):
            return max(v.timestamp() - killed for v in restarted.values() if v is not None)
        time.sleep(0.2)
    raise AssertionError(f"{pieces} did not run again within {timeout_s} s")


def assert_all_written_once(fleet: Fleet, ids: list[str], timeout_s: float) -> None:
    statuses = fleet.wait_finished(ids, timeout_s)
    census = fleet.census(ids)
    print(
        f"\n  books {census.books} completed {census.completed} failed {census.failed} "
        f"duplicate sections {census.duplicate_sections} missing {census.missing_sections}"
    )
    assert census.completed == len(ids), (statuses, census.errors)
    assert census.duplicate_sections == 0 and census.missing_sections == 0


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_killed_workers_sections_run_again_elsewhere(
    broker: str, make_fleet: FleetFactory, redis_url: str
) -> None:
    if broker == "rabbitmq":
        # A vhost of its own would need rabbitmqctl; a unique queue is not needed: a stray
        # message from another run names an unknown job and is dropped as a no-op.
        url = RABBITMQ
        pytest.importorskip("amqp")
    else:
        url = redis_url
    fleet = make_fleet(url, tokens_per_second=150.0).start([LOCAL, LOCAL])
    ids = fleet.submit(books=3, chapters=4, total_words=4000)
    delay = kill_and_time_rerun(fleet, fleet.workers[0])
    print(f"\n  {broker}: killed worker's sections ran again after {delay:.1f} s")
    # The lease (3 s) plus a reaper pass (0.5 s), with room for a loaded machine.
    assert delay <= 3 + 0.5 + 10
    fleet.restart(fleet.workers[0])
    assert_all_written_once(fleet, ids, timeout_s=240)


def test_a_rolling_restart_fails_no_book(make_fleet: FleetFactory, redis_url: str) -> None:
    fleet = make_fleet(redis_url, tokens_per_second=150.0).start([LOCAL, LOCAL])
    ids = fleet.submit(books=3, chapters=4, total_words=4000)
    handed = 0
    for worker in fleet.workers:
        wait_running(fleet, worker)
        before = len(fleet.running_pieces(worker.owner_prefix))
        worker.component.send(signal.SIGTERM)
        assert worker.component.process is not None
        code = worker.component.process.wait(timeout=60)
        assert code == 0, f"{worker.component.name} exited {code} on SIGTERM"
        handed += before
        fleet.restart(worker)
    print(f"\n  rolling restart: {len(fleet.workers)} workers, ~{handed} sections handed back")
    assert_all_written_once(fleet, ids, timeout_s=240)
