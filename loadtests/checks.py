"""Body checks for every route group: a 200 with a wrong body is a failure.

Each check takes the HTTP status, the headers and the decoded body and returns None when the
answer is right, else a short reason that Locust records as the failure. Pure functions, so the
tests can run them without Locust.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

JOB_STATUSES = frozenset({"pending", "in_progress", "completed", "failed", "cancelled"})
FINISHED = frozenset({"completed", "failed", "cancelled"})


def parse_json(text: str | None) -> tuple[Any, str | None]:
    """The decoded body, or a reason why it is not JSON."""
    if not text:
        return None, "empty body"
    try:
        return json.loads(text), None
    except ValueError:
        return None, "body is not JSON"


def _expect(status: int, wanted: int) -> str | None:
    return None if status == wanted else f"HTTP {status}, expected {wanted}"


def check_health(status: int, body: Any) -> str | None:
    if reason := _expect(status, 200):
        return reason
    if not isinstance(body, dict) or body.get("status") != "healthy":
        return "health: status is not 'healthy'"
    if "timestamp" not in body:
        return "health: no timestamp"
    return None


def check_ready(status: int, body: Any) -> str | None:
    if reason := _expect(status, 200):
        return f"{reason} (not ready: {str(body)[:120]})"
    return None if isinstance(body, dict) else "ready: body is not an object"


def check_status(status: int, body: Any) -> str | None:
    if reason := _expect(status, 200):
        return reason
    if not isinstance(body, dict) or body.get("status") != "operational":
        return "status: not 'operational'"
    if body.get("api_version") != "v1":
        return "status: api_version is not 'v1'"
    config = body.get("configuration")
    if not isinstance(config, dict) or not {"chapters", "total_words", "model"} <= config.keys():
        return "status: configuration lacks chapters/total_words/model"
    return None


def check_generate(status: int, body: Any, character: str) -> str | None:
    if reason := _expect(status, 202):
        return reason
    if not isinstance(body, dict) or not isinstance(body.get("job_id"), str) or not body["job_id"]:
        return "generate: no job_id"
    if body.get("status") != "pending":
        return f"generate: status {body.get('status')!r}, expected 'pending'"
    if body.get("character") != character:
        return "generate: character not echoed"
    return None


def check_job_status(status: int, body: Any, job_id: str) -> str | None:
    if reason := _expect(status, 200):
        return reason
    if not isinstance(body, dict) or body.get("job_id") != job_id:
        return "job-status: wrong or missing job_id"
    if body.get("status") not in JOB_STATUSES:
        return f"job-status: unknown status {body.get('status')!r}"
    progress = body.get("progress")
    keys = {"chapters_completed", "total_chapters", "percentage"}
    if not isinstance(progress, dict) or not keys <= progress.keys():
        return "job-status: progress lacks chapters_completed/total_chapters/percentage"
    if body["status"] == "failed":
        return f"job-status: job failed: {str(body.get('error'))[:120]}"
    return None


def check_download(status: int, headers: Mapping[str, str], text: str | None) -> str | None:
    if reason := _expect(status, 200):
        return reason
    content_type = headers.get("content-type") or headers.get("Content-Type") or ""
    if not content_type.startswith("text/plain"):
        return f"download: content-type {content_type!r}, expected text/plain"
    disposition = headers.get("content-disposition") or headers.get("Content-Disposition") or ""
    if "filename" not in disposition:
        return "download: no file name in Content-Disposition"
    if not text or len(text.split()) < 50:
        return "download: book text missing or too short"
    return None


def job_items(body: Any) -> list[Any] | None:
    """The list of jobs in a list-route answer (a bare list or a page object)."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in ("items", "jobs", "results", "biographies", "data"):
            if isinstance(body.get(key), list):
                return list(body[key])
    return None


def check_list(status: int, body: Any) -> str | None:
    if reason := _expect(status, 200):
        return reason
    items = job_items(body)
    if items is None:
        return "list: no list of jobs in the body"
    for item in items:
        if not isinstance(item, dict) or "job_id" not in item or "status" not in item:
            return "list: an item lacks job_id/status"
    return None


def check_cancel(status: int, body: Any, job_id: str) -> str | None:
    if status == 409:  # finished before the cancel arrived: a legitimate answer
        return None
    if reason := _expect(status, 200):
        return reason
    if not isinstance(body, dict) or body.get("job_id") != job_id:
        return "cancel: wrong or missing job_id"
    if body.get("status") not in JOB_STATUSES:
        return f"cancel: unknown status {body.get('status')!r}"
    return None


def check_sources(status: int, body: Any, sent: int) -> str | None:
    if reason := _expect(status, 200):
        return reason
    if not isinstance(body, dict) or body.get("total_sources") != sent:
        return "sources: total_sources does not match the request"
    results = body.get("results")
    if not isinstance(results, list) or len(results) != sent:
        return "sources: results do not match the request"
    valid, invalid = body.get("valid_sources"), body.get("invalid_sources")
    if not isinstance(valid, int) or not isinstance(invalid, int) or valid + invalid != sent:
        return "sources: valid + invalid != total"
    return None


def check_metrics(status: int, text: str | None) -> str | None:
    if reason := _expect(status, 200):
        return reason
    if not text or "bookgen_http_requests_total" not in text:
        return "metrics: bookgen_http_requests_total missing"
    return None


def check_backpressure(status: int, headers: Mapping[str, str]) -> str | None:
    """A 429 is correct back-pressure only when it says when to come back."""
    if status != 429:
        return f"HTTP {status}, expected 429"
    if not (headers.get("retry-after") or headers.get("Retry-After")):
        return "429 without Retry-After"
    return None
