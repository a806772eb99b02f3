"""Assembling stored sections in order and exporting them as text, Markdown or DOCX."""

from __future__ import annotations

import io
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

FORMATS = {
    "txt": "text/plain; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


@dataclass(frozen=True, slots=True)
class Section:
    index: int
    kind: str
    title: str
    text: str


def heading(section: Section) -> str:
    if section.kind == "chapter":
        return f"Chapter {section.index}: {section.title}"
    return section.title


def book_title(character: str) -> str:
    return f"{character}: A Biography"


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def to_text(character: str, sections: Sequence[Section]) -> str:
    parts = [book_title(character)]
    for section in sorted(sections, key=lambda s: s.index):
        parts.append(heading(section))
        parts.extend(_paragraphs(section.text))
    return "\n\n".join(parts) + "\n"


def to_markdown(character: str, sections: Sequence[Section]) -> str:
    parts = [f"# {book_title(character)}"]
    for section in sorted(sections, key=lambda s: s.index):
        parts.append(f"## {heading(section)}")
        parts.extend(_paragraphs(section.text))
    return "\n\n".join(parts) + "\n"


def to_docx(character: str, sections: Sequence[Section]) -> bytes:
    """Blocking (python-docx); call it in a worker thread from async code."""
    from docx import Document

    document = Document()
    document.add_heading(book_title(character), level=0)
    for section in sorted(sections, key=lambda s: s.index):
        document.add_heading(heading(section), level=1)
        for paragraph in _paragraphs(section.text):
            document.add_paragraph(paragraph)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def render(fmt: str, character: str, sections: Sequence[Section]) -> bytes:
    if fmt == "md":
        return to_markdown(character, sections).encode()
    if fmt == "docx":
        return to_docx(character, sections)
    return to_text(character, sections).encode()


def file_name(character: str, job_id: str, fmt: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", character).strip("_")[:60] or "biography"
    return f"{slug}_{job_id[:8]}.{fmt}"


class RenderedBooks:
    """LRU of rendered downloads: a completed book never changes, and DOCX costs CPU to build."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def get(self, job_id: str, fmt: str) -> bytes | None:
        content = self.entries.get((job_id, fmt))
        if content is not None:
            self.entries.move_to_end((job_id, fmt))
        return content

    def put(self, job_id: str, fmt: str, content: bytes) -> None:
        if len(content) > self.max_bytes or (job_id, fmt) in self.entries:
            return
        self.entries[(job_id, fmt)] = content
        self.size += len(content)
        while self.size > self.max_bytes:
            _, evicted = self.entries.popitem(last=False)
            self.size -= len(evicted)
