"""Durable storage of jobs and their finished sections."""

from bookgen.service.store.models import JobRow, SectionRow
from bookgen.service.store.repository import LeaseLost, NewSection, Store, Usage

__all__ = ["JobRow", "LeaseLost", "NewSection", "SectionRow", "Store", "Usage"]
