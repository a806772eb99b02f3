"""Request and response bodies of the v1 API (field names compatible with BookGen v1 clients)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

JobStatusName = Literal["pending", "in_progress", "completed", "failed", "cancelled"]


def _storable(value: str) -> str:
    """Text every database can store: no NUL, no lone surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value.strip()


Text = Annotated[str, AfterValidator(_storable)]
Name = Annotated[str, AfterValidator(_storable), AfterValidator(_not_blank)]


class SourceIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: Text | None = Field(default=None, max_length=2048)
    title: Name = Field(min_length=1, max_length=500)
    author: Text | None = Field(default=None, max_length=300)
    publication_date: Text | None = Field(default=None, max_length=50)
    source_type: Text = Field(default="web", max_length=50)


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    character: Name = Field(min_length=1, max_length=200, examples=["Ada Lovelace"])
    chapters: int | None = Field(default=None, ge=1, le=50, description="default 20")
    total_words: int | None = Field(default=None, ge=1_000, le=200_000, description="default 51000")
    model: Name | None = Field(default=None, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    language: Name = Field(default="English", max_length=40)
    mode: Literal["automatic", "manual"] = "automatic"
    sources: list[SourceIn] | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _manual_needs_sources(self) -> GenerateRequest:
        if self.mode == "manual" and not self.sources:
            raise ValueError("mode 'manual' needs at least one source")
        return self


class JobCreated(BaseModel):
    job_id: str
    status: JobStatusName
    character: str
    chapters: int
    total_words: int
    model: str
    created_at: datetime
    estimated_completion_time: datetime
    status_url: str
    download_url: str


class Progress(BaseModel):
    chapters_completed: int
    total_chapters: int
    percentage: float


class Tokens(BaseModel):
    input: int
    output: int
    total: int


class JobStatus(BaseModel):
    job_id: str
    status: JobStatusName
    character: str
    chapters: int
    total_words: int
    model: str
    progress: Progress
    words_written: int
    tokens: Tokens
    cost_usd: float
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error: str | None
    download_url: str | None


class JobPage(BaseModel):
    items: list[JobStatus]
    total: int
    page: int
    page_size: int
    pages: int


class ValidateRequest(BaseModel):
    # Items are checked one by one (a bad item is reported, not a 422 for the whole request).
    sources: list[dict[str, Any]] = Field(min_length=1, max_length=100)
    check_accessibility: bool = False


class SourceResult(BaseModel):
    index: int
    url: str | None
    title: str | None
    valid: bool
    errors: list[str]
    warnings: list[str]
    trusted_domain: bool
    accessible: bool | None = None
    status_code: int | None = None


class ValidateSummary(BaseModel):
    trusted: int
    untrusted: int
    accessible: int
    inaccessible: int
    checked_accessibility: bool


class ValidateResponse(BaseModel):
    total_sources: int
    valid_sources: int
    invalid_sources: int
    results: list[SourceResult]
    summary: ValidateSummary
