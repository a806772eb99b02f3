"""The HTML run report: drawn from recorded Prometheus results, opened in headless Chromium.

`data/acceptance-data.json` is what a real `bookgen verify` saved beside its page (Prometheus
range-query results, the receiver's notifications, the six rows), so the page is tested without
a stack. Chromium is Debian's (`scripts/setup.sh` installs it where apt-get exists).
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Any

import pytest

from bookgen.acceptance.report import PALETTE, PANELS, alert_spans, render_html, write_report

DATA = Path(__file__).with_name("data") / "acceptance-data.json"
CHROMIUM = "/usr/bin/chromium"
SIX = (
    "book time",
    "API p95",
    "users served",
    "memory per worker",
    "throughput",
    "error rate",
)
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,2000",
]  # fmt: skip


def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DATA.read_text())
    return data


def series_paths(page: str) -> dict[str, list[str]]:
    """The `d` of every series path, per chart (`data-panel`)."""
    found: dict[str, list[str]] = {}
    for panel, svg in re.findall(r'<svg[^>]*data-panel="([^"]+)"[^>]*>(.*?)</svg>', page, re.S):
        found[panel] = re.findall(r'<path d="([^"]*)" class="series"', svg)
    return found


def test_page_from_recorded_data_is_complete_and_offline() -> None:
    data = recorded()
    page = render_html(data)
    rows = re.findall(r"<tr><td>([^<]*)</td>", page)
    assert len(rows) == 6 and all(any(r.startswith(s) for r in rows) for s in SIX), rows
    paths = series_paths(page)
    for panel in PANELS:
        assert paths.get(panel.key), f"chart {panel.key} has no series"
        assert all(re.match(r"M[\d.]+,[\d.]+ L", d) for d in paths[panel.key]), panel.key
    # The bounds are drawn: 200 ms on latency, 2 GiB on memory.
    assert page.count('class="limit"') == 2
    assert 'data-panel="alerts"' in page
    # Self-contained: nothing fetched (no script, no remote or local reference).
    assert "<script" not in page and not re.search(r'(src|href)="', page)
    assert not re.search(r"https?://(?!127\.0\.0\.1|www\.w3\.org)", page)


def test_alert_spans_follow_firing_and_resolution() -> None:
    notes = [
        {
            "received_at": 100.0,
            "alerts": [{"status": "firing", "labels": {"alertname": "A", "severity": "warning"}}],
        },
        {
            "received_at": 160.0,
            "alerts": [{"status": "resolved", "labels": {"alertname": "A", "severity": "warning"}}],
        },
        {"received_at": 130.0, "alerts": [{"status": "firing", "labels": {"alertname": "B"}}]},
    ]
    spans = alert_spans(notes)
    assert [(s.name, s.start, s.end) for s in spans] == [("A", 100.0, 160.0), ("B", 130.0, None)]


# --- Chromium -------------------------------------------------------------------------------
def png_pixels(path: Path) -> tuple[int, int, set[tuple[int, int, int]]]:
    """Width, height and the set of colours of an 8-bit RGB(A) non-interlaced PNG."""
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = depth = colour = 0
    while pos < len(raw):
        (length,) = struct.unpack(">I", raw[pos : pos + 4])
        chunk, body = raw[pos + 4 : pos + 8], raw[pos + 8 : pos + 8 + length]
        if chunk == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
        elif chunk == b"IDAT":
            idat += body
        pos += 12 + length
    assert depth == 8 and colour in (2, 6), (depth, colour)
    bpp = 3 if colour == 2 else 4
    data = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    colours: set[tuple[int, int, int]] = set()
    for row in range(height):
        start = row * (stride + 1)
        kind, line = data[start], bytearray(data[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        colours.update(
            (line[i], line[i + 1], line[i + 2]) for i in range(0, stride, bpp * 2)
        )  # every other pixel: a 2 px stroke still shows
        prev = line
    return width, height, colours


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def chromium(page: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="bookgen-chromium-") as profile:
        return subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )


@pytest.mark.timeout(240)
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (scripts/setup.sh installs it)")
    page = write_report(tmp_path, "acceptance", recorded())
    shot = tmp_path / "report.png"
    run = chromium(page, f"--screenshot={shot}", "--enable-logging=stderr", "--v=0")
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    # Page errors (a broken SVG, a blocked fetch) are logged as CONSOLE lines at error level.
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
    assert not [c for c in console if "ERROR" in c.upper()], console
    width, height, colours = png_pixels(shot)
    assert (width, height) == (1280, 2000)
    # The series strokes are painted: the first colours of the palette are on the screenshot.
    drawn = [c for c in PALETTE[:3] if hex_rgb(c) in colours]
    assert len(drawn) == 3, f"series colours on the screenshot: {drawn}"
    assert hex_rgb("#d62728") in colours, "the limit lines are not painted"
    # The DOM Chromium built holds every chart with non-empty series paths.
    dom = chromium(page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    paths = series_paths(dom.stdout)
    assert all(paths.get(p.key) for p in PANELS), {k: len(v) for k, v in paths.items()}
    print(
        f"\nreport screenshot {shot}: {width}x{height}, {len(colours)} colours, "
        f"{sum(len(v) for v in paths.values())} series paths in {len(paths)} charts"
    )
    assert shot.stat().st_size > 20_000  # a blank page compresses to a few kB


def test_loadtest_page_from_the_gate_report(tmp_path: Path) -> None:
    """`bookgen loadtest` writes loadtest.html from gate.json (no Prometheus: no charts)."""
    from bookgen.acceptance.locust_run import LocustRun
    from bookgen.acceptance.project import find_project
    from bookgen.cli.loadtest import write_page

    run = LocustRun("acceptance", "http://127.0.0.1:1", tmp_path)
    verdicts = [
        {"check": "p95 health", "measured": 4.0, "target": "< 200 ms", "ok": True, "note": ""},
        {"check": "fail ratio", "measured": 0.02, "target": "<= 0.01", "ok": False, "note": ""},
    ]
    gate = {
        "passed": False,
        "window": {"start": 1000.0, "end": 1060.0},
        "thresholds": {"p95_ms": {"health": 200.0}},
        "verdicts": verdicts,
        "requests": 600,
        "rps": 10.0,
    }
    run.gate_report.write_text(json.dumps(gate))
    page = write_page(run, find_project(), "")
    assert page == tmp_path / "loadtest.html" and (tmp_path / "loadtest-data.json").is_file()
    text = page.read_text()
    assert "GATE FAIL" in text and text.count("<tr><td>") == 2 and ">FAIL<" in text
    assert "No Prometheus for this run" in text and 'data-panel="alerts"' in text
