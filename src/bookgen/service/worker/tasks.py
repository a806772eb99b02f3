"""The Celery task: a thin wrapper that hands each delivery to this process's `SectionWorker`."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.signals import worker_shutting_down

from bookgen.service.queue.celery_app import SECTION_TASK
from bookgen.service.queue.publisher import TRACE_HEADERS
from bookgen.service.worker.runtime import SectionWorker


def register(app: Celery, worker: SectionWorker) -> None:
    """Bind the section task and the warm-shutdown signal to `worker`."""

    @app.task(name=SECTION_TASK, bind=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def section(task: Task[Any, Any], job_id: str, index: int) -> str:
        request = task.request
        carrier = {k: v for k in TRACE_HEADERS if isinstance(v := request.get(k), str)}
        return worker.run(job_id, index, carrier)

    def on_shutdown(**_: Any) -> None:
        worker.begin_shutdown()

    # weak=False: the closure must outlive this function.
    worker_shutting_down.connect(on_shutdown, weak=False)
