"""The worker tier: Celery workers that write books piece by piece, sharing the store."""

from bookgen.service.worker.runtime import SectionWorker

__all__ = ["SectionWorker"]
