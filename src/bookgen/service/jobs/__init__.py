"""Durable job execution: claiming, leases, recovery."""

from bookgen.service.jobs.executor import Executor
from bookgen.service.jobs.runtime import JobRuntime, RuntimeSnapshot

__all__ = ["Executor", "JobRuntime", "RuntimeSnapshot"]
