"""`SectionWorker` without a broker: deliveries from a local queue, several threads as the pool.

What a broker adds (redelivery after kill -9, several processes) is tested with real Redis,
RabbitMQ and worker processes in tests/tier; here the pipeline, the ledger and the hand-back run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bookgen.service.hooks import Hooks, JobInfo, SectionRun
from bookgen.service.store import SectionRow
from bookgen.service.store.models import SectionTaskRow
from bookgen.service.store.tasks import OUTLINE_INDEX, SectionTasks
from bookgen.service.worker import SectionWorker
from service_helpers import LocalPublisher, Pool, submit_book, tier_settings, wait_for_job


class RecordingHooks(Hooks):
    def __init__(self) -> None:
        self.runs: list[SectionRun] = []
        self.finished: list[str] = []

    @contextmanager
    def section_task(self, run: SectionRun) -> Iterator[SectionRun]:
        self.runs.append(run)
        yield run

    def job_finished(self, job: JobInfo, outcome: str, duration_s: float) -> None:
        self.finished.append(outcome)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[SectionWorker, LocalPublisher, RecordingHooks]]:
    hooks = RecordingHooks()
    publisher = LocalPublisher()
    worker = SectionWorker(tier_settings(tmp_path), hooks, publisher, owner="worker-a")
    worker.start()
    try:
        yield worker, publisher, hooks
    finally:
        worker.close()


def rows(worker: SectionWorker, job_id: str) -> tuple[list[SectionRow], list[SectionTaskRow]]:
    assert worker.store is not None
    sections = worker._call(worker.store.sections(job_id))
    planned = worker._call(SectionTasks(worker.store).planned(job_id))
    return sections, sorted(planned.values(), key=lambda r: r.index)


def test_a_book_is_written_piece_by_piece(
    started: tuple[SectionWorker, LocalPublisher, RecordingHooks],
) -> None:
    worker, publisher, hooks = started
    pool = Pool(worker, publisher, threads=8)
    try:
        job_id = submit_book(worker, publisher, chapters=3)
        job = wait_for_job(worker, job_id, {"completed", "failed"})
    finally:
        pool.close()
    assert job.status == "completed", job.error
    sections, planned = rows(worker, job_id)
    assert [s.index for s in sections] == [0, 1, 2, 3, 4]
    assert [p.index for p in planned] == [OUTLINE_INDEX, 0, 1, 2, 3, 4]
    assert all(p.state == "done" and p.attempts == 1 for p in planned)
    assert job.outline == [{"title": p.title, "synopsis": p.synopsis} for p in planned[2:5]]
    assert hooks.finished == ["completed"]
    assert sorted(r.kind for r in hooks.runs) == sorted(
        ["outline", "introduction", "chapter", "chapter", "chapter", "epilogue"]
    )
    assert all(r.carrier["traceparent"].startswith("00-111") for r in hooks.runs)


def test_redelivered_messages_have_no_second_effect(
    started: tuple[SectionWorker, LocalPublisher, RecordingHooks],
) -> None:
    worker, publisher, _ = started
    pool = Pool(worker, publisher, threads=4)
    try:
        job_id = submit_book(worker, publisher, chapters=2)
        wait_for_job(worker, job_id, {"completed"})
        deadline = time.monotonic() + 10
        while len(pool.outcomes) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)  # the last run reports after its transaction completed the book
        # The broker delivers every piece again (e.g. Redis restoring unacked messages).
        before = len(pool.outcomes)
        assert before == 5
        for index in (OUTLINE_INDEX, 0, 1, 2, 3):
            publisher.publish_now(job_id, index, {})
        deadline = time.monotonic() + 10
        while len(pool.outcomes) < before + 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pool.close()
    assert pool.outcomes[before:] == ["duplicate"] * 5
    sections, _ = rows(worker, job_id)
    assert [s.index for s in sections] == [0, 1, 2, 3]


def test_a_dead_workers_piece_is_reaped_and_written_once(
    started: tuple[SectionWorker, LocalPublisher, RecordingHooks],
) -> None:
    worker, publisher, _ = started
    job_id = submit_book(worker, publisher, chapters=1)
    # Another worker took the introduction, then died (its lease is never renewed).
    assert worker.store is not None
    tasks = SectionTasks(worker.store)
    worker._call(tasks.claim(job_id, 0, "dead-worker", 1.5))
    killed_at = time.monotonic()
    pool = Pool(worker, publisher, threads=4)
    try:
        job = wait_for_job(worker, job_id, {"completed", "failed"})
    finally:
        pool.close()
    assert job.status == "completed"
    sections, planned = rows(worker, job_id)
    intro = next(p for p in planned if p.index == 0)
    assert intro.attempts == 2 and intro.state == "done"
    assert [s.index for s in sections] == [0, 1, 2]
    assert time.monotonic() - killed_at < 15


def test_a_piece_that_keeps_dying_fails_its_book(tmp_path: Path) -> None:
    hooks = RecordingHooks()
    publisher = LocalPublisher()
    worker = SectionWorker(
        tier_settings(tmp_path, section_max_runs=2), hooks, publisher, owner="worker-a"
    )
    worker.start()
    try:
        job_id = submit_book(worker, publisher, chapters=1)
        assert worker.store is not None
        tasks = SectionTasks(worker.store)
        for _ in range(2):  # two runs cut off by their workers dying
            worker._call(tasks.claim(job_id, 0, "doomed", 0.01))
            time.sleep(0.05)
        pool = Pool(worker, publisher, threads=4)
        try:
            job = wait_for_job(worker, job_id, {"completed", "failed"})
        finally:
            pool.close()
    finally:
        worker.close()
    assert job.status == "failed"
    assert job.error is not None and "introduction 0 was cut off 2 times" in job.error
    assert "gave_up" in pool.outcomes
    assert hooks.finished == ["failed"]


def test_a_stopping_worker_hands_running_pieces_back(tmp_path: Path) -> None:
    slow = tier_settings(tmp_path, sim={"tokens_per_second": 40.0, "time_to_first_token_s": 0.0})
    hooks = RecordingHooks()
    publisher = LocalPublisher()
    worker = SectionWorker(slow, hooks, publisher, owner="worker-a")
    worker.start()
    pool = Pool(worker, publisher, threads=4)
    try:
        job_id = submit_book(worker, publisher, chapters=1)
        deadline = time.monotonic() + 10
        while worker.running < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert worker.running >= 2
        worker.begin_shutdown()
        deadline = time.monotonic() + 10
        while worker.running and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        pool.close()
        sections, planned = rows(worker, job_id)
        worker.close()
    assert "handed_back" in pool.outcomes
    handed = [p for p in planned if p.state == "queued"]
    assert handed, "running pieces went back to the queue"
    assert all(p.attempts == 0 and p.lease_owner is None for p in handed)
    assert all((job_id, p.index) in publisher.sent for p in handed)
    assert sections == [] or all(s.index not in {p.index for p in handed} for s in sections)


def test_lost_messages_are_published_again_while_slots_are_free(tmp_path: Path) -> None:
    """Messages a worker received and died with (Redis keeps them until its visibility timeout):
    a worker with free slots publishes their sections again after `section_republish_idle_s`."""
    publisher = LocalPublisher()
    settings = tier_settings(tmp_path, section_republish_idle_s=0.5)
    worker = SectionWorker(settings, Hooks(), publisher, owner="worker-a")
    worker.start()
    pool = Pool(worker, publisher, threads=4)
    try:
        job_id = submit_book(worker, publisher, chapters=1)
        lost = []
        while not publisher.queue.empty():  # taken by a worker that died before claiming
            lost.append(publisher.queue.get_nowait())
        assert len(lost) == 3
        assert worker.store is not None
        tasks = SectionTasks(worker.store)
        worker._call(tasks.mark_published([(job_id, index) for _, index, _ in lost]))
        job = wait_for_job(worker, job_id, {"completed", "failed"})
    finally:
        pool.close()
        worker.close()
    assert job.status == "completed"
    assert publisher.sent.count((job_id, OUTLINE_INDEX)) == 2  # first sent, then sent again
