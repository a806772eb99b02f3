"""The Celery app: one task (write piece `index` of book `job_id`) on one queue, no results.

Correctness does not rest on the broker (see store/tasks.py); these settings make it a fast,
lossless transport for that design:
- acks late, and requeue when the pool loses a worker: a killed worker's message comes back;
- one message reserved per free slot (no prefetch hoarding behind a long section);
- no result backend: the store is the source of truth, and chords are not used;
- a visibility timeout (Redis) well above the section deadline, so Redis never hands a running
  section to a second worker; a worker killed outright is covered by the store's leases instead.
"""

from __future__ import annotations

from celery import Celery

from bookgen.service.settings import Settings

SECTION_TASK = "bookgen.section"
QUEUE = "sections"


def is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "redis+socket://"))


def make_celery(settings: Settings) -> Celery:
    if not settings.broker_url:
        raise ValueError("the worker tier needs BOOKGEN_BROKER_URL")
    app = Celery("bookgen", broker=settings.broker_url, set_as_current=False)
    transport: dict[str, object] = {}
    if is_redis(settings.broker_url):
        transport["visibility_timeout"] = int(2 * settings.section_deadline_s)
    app.conf.update(
        task_default_queue=QUEUE,
        task_routes={SECTION_TASK: {"queue": QUEUE}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        # Redis only (other brokers warn): fetch a message only when a slot is free.
        worker_disable_prefetch=is_redis(settings.broker_url),
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport,
        broker_pool_limit=10,
    )
    return app
