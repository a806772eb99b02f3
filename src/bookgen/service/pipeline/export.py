"""Assembling stored sections in order and exporting them as text, Markdown or DOCX."""

from __future__ import annotations

import asyncio
import functools
import io
import multiprocessing
import re
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
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
            if "\n" in paragraph or "\t" in paragraph:
                document.add_paragraph(paragraph)  # breaks and tabs: python-docx's own path
            else:
                # One <w:t> for the whole text: python-docx's `text=` walks it a character
                # at a time (~1.5 us each, holding the GIL), ~0.5 s for a 51,000-word book.
                document.add_paragraph().add_run()._r.add_t(paragraph)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


_renderer: ProcessPoolExecutor | None = None
_renderer_lock = threading.Lock()


def _import_docx() -> None:
    import docx  # noqa: F401


def start_renderer() -> ProcessPoolExecutor:
    """The DOCX renderer process (started once, then reused; `stop_renderer` ends it).

    python-docx is pure-Python CPU work: in a thread of the API process it holds the GIL
    against the event loop, so under load a 2,000-word book took ~250 ms to render (26 ms
    alone) and slowed every other request meanwhile. In a process of its own it runs beside
    the loop, on another core; the thread that waits for it lets go of the GIL.
    """
    global _renderer
    with _renderer_lock:
        if _renderer is None:
            _renderer = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            _renderer.submit(_import_docx)  # warm: the first book does not wait for the import
        return _renderer


def stop_renderer() -> None:
    global _renderer
    with _renderer_lock:
        pool, _renderer = _renderer, None
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


def _docx_elsewhere(character: str, sections: Sequence[Section]) -> bytes:
    """`to_docx` in the renderer process (blocking: call it from a worker thread)."""
    pool = start_renderer()
    try:
        return pool.submit(to_docx, character, list(sections)).result()
    except BrokenProcessPool:  # the renderer died: start another next time, render here now
        _forget(pool)
        return to_docx(character, sections)


async def render_async(fmt: str, character: str, sections: Sequence[Section]) -> bytes:
    """`render` for the event loop. Text and Markdown are string joins (a few ms for a
    51,000-word book, once per book: downloads are cached), done here; DOCX is awaited from the
    renderer process directly. Through a thread of this process each went through one more
    hand-off that waits for the GIL and for the loop's turn: up to 160 ms for a text download
    of 0.1 ms under load, and a DOCX of ~50 ms of rendering answered in 200+ ms."""
    if fmt != "docx":
        return render(fmt, character, sections)
    pool = start_renderer()
    try:
        return await asyncio.wrap_future(pool.submit(to_docx, character, list(sections)))
    except BrokenProcessPool:  # the renderer died: start another next time, render here now
        _forget(pool)
        return await asyncio.to_thread(to_docx, character, sections)


def _forget(pool: ProcessPoolExecutor) -> None:
    global _renderer
    with _renderer_lock:
        if _renderer is pool:
            _renderer = None


def render(fmt: str, character: str, sections: Sequence[Section]) -> bytes:
    if fmt == "md":
        return to_markdown(character, sections).encode()
    if fmt == "docx":
        return _docx_elsewhere(character, sections)
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
        self._rendering: dict[tuple[str, str], asyncio.Future[bytes]] = {}

    async def get_or_render(
        self, job_id: str, fmt: str, render: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        """The cached download, else the one render of it in progress, else `render()` (kept).

        A book's DOCX is rendered when it completes; a reader who asks while that render runs
        waits for it rather than starting another behind it in the one renderer process (which
        doubled that reader's wait and the renderer's work)."""
        content = self.get(job_id, fmt)
        if content is not None:
            return content
        key = (job_id, fmt)
        running = self._rendering.get(key)
        if running is None:
            running = self._rendering[key] = asyncio.ensure_future(render())
            running.add_done_callback(functools.partial(self._rendered, key))
        return await asyncio.shield(running)

    def _rendered(self, key: tuple[str, str], done: asyncio.Future[bytes]) -> None:
        del self._rendering[key]
        if not done.cancelled() and done.exception() is None:
            self.put(*key, done.result())

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
