"""Request and response bodies of the v1 API (field names compatible with BookGen v1 clients)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StrictBool,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

JobStatusName = Literal["pending", "in_progress", "completed", "failed", "cancelled"]


# What XML 1.0 (so DOCX) cannot carry, besides lone surrogates: C0 controls but tab, LF and CR
# (NUL included, which no database stores either), U+FFFE and U+FFFF.
_UNCARRIABLE = r"\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff"
_CONTROL = re.compile(f"[{_UNCARRIABLE}]")


def _storable(value: str) -> str:
    """Text every database and every export format can carry: no control characters (but tab
    and line breaks), no lone surrogates."""
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value.strip()


def _json_number(value: object) -> object:
    """A JSON number only: lax parsing would also take `true` or `"12"`, which the schema
    (type integer/number) does not allow."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    return value


@dataclass(frozen=True, slots=True)
class _SchemaPattern:
    """A `pattern` in the JSON schema only: the validators above enforce it (with clearer
    messages), the schema tells clients and generators the same rule."""

    pattern: str

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema["pattern"] = self.pattern
        return schema


# `_storable` as a pattern; a Name also has a character that is not white space. (Lone
# surrogates, also refused, cannot be written in a pattern every generator understands.)
_STORABLE = f"^[^{_UNCARRIABLE}]*$"
_NAMED = f"^[^{_UNCARRIABLE}]*[^\\s{_UNCARRIABLE}][^{_UNCARRIABLE}]*$"
Text = Annotated[str, AfterValidator(_storable), _SchemaPattern(_STORABLE)]
Name = Annotated[str, AfterValidator(_storable), AfterValidator(_not_blank), _SchemaPattern(_NAMED)]
# After the bounds: a validator before them would hide them from the schema.
JsonNumber = BeforeValidator(_json_number)


class SourceIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: Text | None = Field(default=None, max_length=2048)
    title: Name = Field(min_length=1, max_length=500)
    author: Text | None = Field(default=None, max_length=300)
    publication_date: Text | None = Field(default=None, max_length=50)
    source_type: Text = Field(default="web", max_length=50)


class GenerateRequest(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        # `_manual_needs_sources`, as a schema: automatic (the default), or a non-empty sources.
        json_schema_extra={
            "anyOf": [
                {"properties": {"mode": {"const": "automatic"}}},
                {
                    "required": ["sources"],
                    "properties": {"sources": {"type": "array", "minItems": 1}},
                },
            ]
        },
    )

    character: Name = Field(min_length=1, max_length=200, examples=["Ada Lovelace"])
    chapters: Annotated[int, Field(ge=1, le=50), JsonNumber] | None = Field(
        default=None, description="default 20"
    )
    total_words: Annotated[int, Field(ge=1_000, le=200_000), JsonNumber] | None = Field(
        default=None, description="default 51000"
    )
    model: Name | None = Field(default=None, max_length=200)
    temperature: Annotated[float, Field(ge=0, le=2), JsonNumber] | None = None
    language: Name = Field(default="English", min_length=1, max_length=40)
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
    # The principal that submitted it: an API key's name, or `ip:<address>` without a key;
    # null for a book written from the command line.
    owner: str | None
    status: JobStatusName
    character: str
    chapters: int
    total_words: int
    model: str
    progress: Progress
    words_written: int
    # Sections stored short of the ±tolerance length band after all their attempts.
    sections_out_of_band: int = 0
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
    check_accessibility: StrictBool = False


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
