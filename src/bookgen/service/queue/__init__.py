"""The queue between the API tier and the worker tier: a Celery app that carries section tasks."""

from bookgen.service.queue.celery_app import QUEUE, SECTION_TASK, make_celery
from bookgen.service.queue.publisher import Publisher

__all__ = ["QUEUE", "SECTION_TASK", "Publisher", "make_celery"]
