"""Assembly in order and the three export formats."""

from __future__ import annotations

import io

from docx import Document

from bookgen.service.pipeline.export import (
    Section,
    file_name,
    render,
    to_markdown,
    to_text,
)

SECTIONS = [
    Section(2, "chapter", "Later", "Second chapter text."),
    Section(3, "epilogue", "Epilogue", "The end."),
    Section(0, "introduction", "Introduction", "Intro one.\n\nIntro two."),
    Section(1, "chapter", "Early", "First chapter text."),
]


def test_text_is_in_book_order() -> None:
    text = to_text("Ada Lovelace", SECTIONS)
    order = ["Introduction", "Chapter 1: Early", "Chapter 2: Later", "Epilogue"]
    positions = [text.index(h) for h in order]
    assert positions == sorted(positions)
    assert text.startswith("Ada Lovelace: A Biography")
    assert "Intro one.\n\nIntro two." in text


def test_markdown_headings() -> None:
    md = to_markdown("Ada Lovelace", SECTIONS)
    assert md.startswith("# Ada Lovelace: A Biography")
    assert "## Chapter 1: Early\n\nFirst chapter text." in md
    assert md.count("\n## ") == 4


def test_docx_opens_with_headings_and_paragraphs() -> None:
    document = Document(io.BytesIO(render("docx", "Ada Lovelace", SECTIONS)))
    texts = [p.text for p in document.paragraphs]
    assert "Chapter 2: Later" in texts
    assert "Intro two." in texts
    headings = [
        p.text
        for p in document.paragraphs
        if p.style is not None and p.style.name.startswith("Heading")
    ]
    assert headings == ["Introduction", "Chapter 1: Early", "Chapter 2: Later", "Epilogue"]


def test_file_name_is_safe() -> None:
    name = file_name('../Ada "Countess" Lovelace/\r\n', "0123456789abcdef", "md")
    assert name == "Ada_Countess_Lovelace_01234567.md"
    assert file_name("漢字", "abcdef0123", "txt") == "biography_abcdef01.txt"


def test_rendered_books_evict_least_recent_by_size() -> None:
    from bookgen.service.pipeline.export import RenderedBooks

    books = RenderedBooks(max_bytes=10)
    books.put("a", "txt", b"12345")
    books.put("b", "txt", b"12345")
    assert books.get("a", "txt") == b"12345"  # a is now the most recent
    books.put("c", "txt", b"123")
    assert books.get("b", "txt") is None and books.get("a", "txt") is not None
    books.put("huge", "txt", b"x" * 11)
    assert books.get("huge", "txt") is None and books.size <= 10


async def test_a_download_asked_while_it_renders_waits_for_that_render() -> None:
    import asyncio

    from bookgen.service.pipeline.export import RenderedBooks

    books = RenderedBooks()
    started = 0
    release = asyncio.Event()

    async def render() -> bytes:
        nonlocal started
        started += 1
        await release.wait()
        return b"PK-docx"

    first = asyncio.create_task(books.get_or_render("job", "docx", render))
    second = asyncio.create_task(books.get_or_render("job", "docx", render))
    await asyncio.sleep(0)
    release.set()
    assert await first == await second == b"PK-docx"
    assert started == 1
    assert await books.get_or_render("job", "docx", render) == b"PK-docx" and started == 1

    async def broken() -> bytes:
        raise RuntimeError("renderer died")

    try:
        await books.get_or_render("other", "docx", broken)
    except RuntimeError:
        pass
    else:
        raise AssertionError("the render's failure reaches the reader")
    assert books.get("other", "docx") is None  # not cached: the next reader renders again
    assert await books.get_or_render("other", "docx", render) == b"PK-docx" and started == 2
