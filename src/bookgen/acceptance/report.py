"""One self-contained HTML report of a run: the targets with their verdicts, and charts.

The charts are inline SVG drawn here from Prometheus range queries over the run (and the alert
receiver's notifications), so the file opens offline, from a mail attachment or a CI artefact,
with no script and no CDN. The data the page is drawn from is saved beside it
(`NAME-data.json`), so a page can be redrawn, and tested, without a stack.

Charts: API latency p95 per route group against the latency bound, request and error rates,
books in flight and completed, resident memory per worker against its bound, and a timeline of
the alerts received.
"""

from __future__ import annotations

import html
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

API = 'job="bookgen"'
ERRORS_5XX = f'{API},status=~"5.."'
SCHEMA = 1
# Route templates as the middleware labels them -> the Locust route groups of the thresholds.
ROUTE_GROUPS: dict[str, str] = {
    "/health": "health",
    "/ready": "ready",
    "/api/v1/status": "status",
    "/api/v1/biographies/generate": "generate",
    "/api/v1/biographies/{job_id}/status": "job-status",
    "/api/v1/biographies/{job_id}/download": "download",
    "/api/v1/biographies": "list",
    "/api/v1/biographies/{job_id}/cancel": "cancel",
    "/api/v1/sources/validate": "sources",
    "/metrics": "metrics",
}
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
SEVERITY_COLOURS = {"critical": "#d62728", "warning": "#ff7f0e", "info": "#1f77b4"}


@dataclass(frozen=True)
class Query:
    legend: str  # a fixed name, or `{label}` to name each series by one of its labels
    promql: str  # `{w}` is replaced by the rate window
    since_start: bool = False  # a counter: plot its increase since the run began


@dataclass(frozen=True)
class Panel:
    key: str
    title: str
    unit: str
    queries: tuple[Query, ...]
    scale: float = 1.0  # Prometheus value x scale = the plotted value, in `unit`
    log: bool = False  # decades: milliseconds next to a 200 ms line stay readable
    limit: str = ""  # name of the limit drawn as a line (see `limits` in the report data)


PANELS: tuple[Panel, ...] = (
    Panel(
        "latency",
        "API latency p95 per route group",
        "ms",
        (
            Query(
                "{route}",
                "histogram_quantile(0.95, sum by (le, route) "
                f"(rate(bookgen_http_request_duration_seconds_bucket{{{API}}}[{{w}}])))",
            ),
        ),
        scale=1000.0,
        limit="api_p95_ms",
        log=True,
    ),
    Panel(
        "rates",
        "Request and error rates",
        "req/s",
        (
            Query("requests", f"sum(rate(bookgen_http_requests_total{{{API}}}[{{w}}]))"),
            Query(
                "5xx errors",
                f"sum(rate(bookgen_http_requests_total{{{ERRORS_5XX}}}[{{w}}])) or vector(0)",
            ),
            Query(
                "429 refused",
                f'sum(rate(bookgen_http_requests_total{{{API},status="429"}}[{{w}}])) or vector(0)',
            ),
        ),
    ),
    Panel(
        "books",
        "Books in flight and completed",
        "books",
        (
            Query("in flight", f"sum(bookgen_jobs_running{{{API}}})"),
            Query("queued", f"max(bookgen_jobs_queued{{{API}}})"),
            Query(
                "completed since start",
                f'sum(bookgen_jobs_finished_total{{{API},outcome="completed"}}) or vector(0)',
                since_start=True,
            ),
        ),
    ),
    Panel(
        "rss",
        "Resident memory per worker",
        "MiB",
        (Query("worker {worker}", f"bookgen_process_resident_memory_bytes{{{API}}}"),),
        scale=1.0 / 2**20,
        limit="max_rss_mib",
    ),
)


# --- collecting ------------------------------------------------------------------------------
def query_range(prom: str, promql: str, start: float, end: float, step: float) -> list[Any]:
    """A Prometheus range query's `result` (a matrix); [] when Prometheus cannot answer."""
    params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
    try:
        response = httpx.get(f"{prom.rstrip('/')}/api/v1/query_range", params=params, timeout=20)
        payload = response.json()
    except (httpx.HTTPError, ValueError):
        return []
    if payload.get("status") != "success":
        return []
    return list(payload["data"]["result"])


def rate_window(scrape_s: float, step: float) -> str:
    """A rate window that always holds several scrapes (a shorter one gives gaps)."""
    return f"{math.ceil(max(4.0 * scrape_s, 2.0 * step))}s"


def collect(prom: str, start: float, end: float, scrape_s: float) -> dict[str, Any]:
    """Every panel's query results over [start, end], as Prometheus returned them."""
    step = max(1.0, math.ceil((end - start) / 240.0))
    window = rate_window(scrape_s, step)
    panels: dict[str, list[dict[str, Any]]] = {}
    for panel in PANELS:
        panels[panel.key] = []
        for q in panel.queries:
            promql = q.promql.replace("{w}", window)
            result = query_range(prom, promql, start, end, step)
            panels[panel.key].append(
                {
                    "legend": q.legend,
                    "query": promql,
                    "since_start": q.since_start,
                    "result": result,
                }
            )
    return {"prometheus": prom, "step_s": step, "rate_window": window, "panels": panels}


def read_notifications(path: Path) -> list[dict[str, Any]]:
    """The receiver's file: one Alertmanager notification per line (bad lines skipped)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(dict(json.loads(line)))
        except (ValueError, TypeError):
            continue
    return out


def report_data(
    *,
    title: str,
    verdict: str,
    rows: list[dict[str, Any]],
    start: float,
    end: float,
    limits: dict[str, float],
    series: dict[str, Any] | None = None,
    notifications: list[dict[str, Any]] | None = None,
    notes: list[str] | None = None,
    marks: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Everything a report page is drawn from (saved beside it); `series` is `collect(...)`."""
    return {
        "schema": SCHEMA,
        "title": title,
        "verdict": verdict,
        "generated_at": time.time(),
        "window": {"start": start, "end": end},
        "marks": marks or {},
        "rows": rows,
        "limits": limits,
        "series": series or {"panels": {}},
        "notifications": notifications or [],
        "notes": notes or [],
    }


# --- shaping the data ------------------------------------------------------------------------
@dataclass
class Line:
    name: str
    points: list[tuple[float, float | None]]  # (unix time, value or None for a gap)


def route_name(route: str) -> str:
    return ROUTE_GROUPS.get(route, route)


def _legend(template: str, labels: dict[str, str]) -> str:
    if "{" not in template:
        return template
    out = template
    for key, value in labels.items():
        shown = route_name(value) if key == "route" else value
        out = out.replace("{" + key + "}", shown)
    return out.replace("{route}", "?").replace("{worker}", "?")


def panel_lines(panel: Panel, entries: list[dict[str, Any]]) -> list[Line]:
    lines: list[Line] = []
    for entry in entries:
        for series in entry.get("result", []):
            points: list[tuple[float, float | None]] = []
            for t, raw in series.get("values", []):
                value = float(raw)
                ok = math.isfinite(value)
                points.append((float(t), value * panel.scale if ok else None))
            if entry.get("since_start"):
                first = next((v for _, v in points if v is not None), 0.0)
                points = [(t, None if v is None else v - first) for t, v in points]
            name = _legend(str(entry.get("legend", "?")), dict(series.get("metric", {})))
            if any(v is not None for _, v in points):
                lines.append(Line(name, points))
    return sorted(lines, key=lambda line: line.name)


@dataclass
class AlertSpan:
    name: str
    severity: str
    start: float
    end: float | None  # None: still firing at the end of the run


def _iso(text: str | None) -> float | None:
    if not text or text.startswith("0001-"):
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def alert_spans(notifications: list[dict[str, Any]]) -> list[AlertSpan]:
    """One span per alert (name and labels): first firing to resolution, as received."""
    spans: dict[str, AlertSpan] = {}
    for note in notifications:
        received = float(note.get("received_at") or 0.0) or None
        for alert in note.get("alerts", []):
            labels = dict(alert.get("labels", {}))
            key = json.dumps(labels, sort_keys=True)
            name = labels.get("alertname", "?")
            rest = [f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname",)]
            shown = f"{name} {{{', '.join(r for r in rest if not r.startswith('severity='))}}}"
            shown = shown.replace(" {}", "")
            start = _iso(alert.get("startsAt")) or received
            if start is None:
                continue
            span = spans.setdefault(key, AlertSpan(shown, labels.get("severity", ""), start, None))
            span.start = min(span.start, start)
            if alert.get("status") == "resolved":
                span.end = _iso(alert.get("endsAt")) or received
            else:
                span.end = None
    return sorted(spans.values(), key=lambda s: (s.start, s.name))


# --- drawing ---------------------------------------------------------------------------------
WIDTH, HEIGHT = 600, 250  # one chart; the page sets two side by side
LEFT, RIGHT, TOP, BOTTOM = 62, 14, 14, 36
LEGEND_ROW = 16


class Scale:
    """Value -> pixel on the y axis: linear from 0, or logarithmic (decades) for latency."""

    def __init__(self, values: list[float], limit: float | None, log: bool) -> None:
        top = max([*values, *([limit * 1.1] if limit is not None else [])], default=0.0)
        self.log = log
        if log:
            positive = [v for v in values if v > 0] + ([limit] if limit else [])
            self.lo = float(10 ** math.floor(math.log10(min(positive, default=1.0))))
            self.hi = float(10 ** math.ceil(math.log10(max(top, self.lo * 10))))
            decades = round(math.log10(self.hi / self.lo))
            self.ticks = [self.lo * 10**i for i in range(decades + 1)]
        else:
            step = _nice_step(top / 4 if top > 0 else 0.25)
            self.lo, self.hi = 0.0, 4 * step
            self.ticks = [step * i for i in range(5)]

    def fraction(self, value: float) -> float:
        if self.log:
            value = max(value, self.lo)
            return min(1.0, math.log10(value / self.lo) / math.log10(self.hi / self.lo))
        return min(1.0, max(0.0, (value - self.lo) / (self.hi - self.lo)))


def _nice_step(value: float) -> float:
    power = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if m * power >= value:
            return float(m * power)
    return float(10 * power)


def _clock(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def _time_ticks(start: float, end: float, bottom: float, count: int = 5) -> list[str]:
    plot_w = WIDTH - LEFT - RIGHT
    span = max(1.0, end - start)
    return [
        f'<text x="{LEFT + plot_w * i / count:.1f}" y="{bottom + 14}" class="tick" '
        f'text-anchor="middle">{_clock(span * i / count)}</text>'
        for i in range(count + 1)
    ]


def line_chart(
    panel: Panel,
    lines: list[Line],
    start: float,
    end: float,
    limit: float | None,
    marks: dict[str, float],
) -> str:
    """An SVG line chart; each series one `<path class="series">`, the limit a dashed line."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    values = [v for line in lines for _, v in line.points if v is not None]
    scale = Scale(values, limit, panel.log)
    span = max(1.0, end - start)
    legend_rows = math.ceil(len(lines) / 2)
    height = HEIGHT + LEGEND_ROW * legend_rows

    def x(t: float) -> float:
        return LEFT + plot_w * min(1.0, max(0.0, (t - start) / span))

    def y(v: float) -> float:
        return TOP + plot_h - plot_h * scale.fraction(v)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" class="chart" data-panel="{panel.key}" '
        f'role="img" aria-label="{html.escape(panel.title)}">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="plot"/>',
    ]
    for tick in scale.ticks:
        ty = y(tick)
        out.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" class="grid"/>'
            f'<text x="{LEFT - 5}" y="{ty + 4:.1f}" class="tick" text-anchor="end">'
            f"{_fmt(tick)}</text>"
        )
    out += _time_ticks(start, end, TOP + plot_h)
    mid = TOP + plot_h / 2
    axis = html.escape(panel.unit + (" (log scale)" if panel.log else ""))
    out.append(
        f'<text x="14" y="{mid:.1f}" class="unit" transform="rotate(-90 14 {mid:.1f})" '
        f'text-anchor="middle">{axis}</text>'
    )
    for i, (label, at) in enumerate(sorted(marks.items(), key=lambda kv: kv[1])):
        if start < at < end:  # labels left of their line, one a row, so close marks stay legible
            out.append(
                f'<line x1="{x(at):.1f}" x2="{x(at):.1f}" y1="{TOP}" y2="{TOP + plot_h}" '
                f'class="mark"/><text x="{x(at) - 3:.1f}" y="{TOP + 11 + 12 * i}" class="tick" '
                f'text-anchor="end">{html.escape(label)}</text>'
            )
    if limit is not None:
        out.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" '
            f'class="limit"/><text x="{LEFT + plot_w - 4}" y="{y(limit) - 4:.1f}" '
            f'class="limit-text" text-anchor="end">limit {_fmt(limit)} '
            f"{html.escape(panel.unit)}</text>"
        )
    for i, line in enumerate(lines):
        colour = PALETTE[i % len(PALETTE)]
        parts: list[str] = []
        pen_down = False
        for t, v in line.points:
            if v is None:
                pen_down = False
                continue
            parts.append(f"{'L' if pen_down else 'M'}{x(t):.1f},{y(v):.1f}")
            pen_down = True
        if len(parts) == 1:  # a single point: a short tick so it shows
            parts.append("l3,0")
        peak = max(v for _, v in line.points if v is not None)
        unit = html.escape(panel.unit)
        out.append(
            f'<path d="{" ".join(parts)}" class="series" stroke="{colour}">'
            f"<title>{html.escape(line.name)}: max {_fmt(peak)} {unit}</title></path>"
        )
        lx = LEFT + (i % 2) * plot_w / 2
        ly = HEIGHT + LEGEND_ROW * (i // 2) - 4
        out.append(
            f'<line x1="{lx:.1f}" x2="{lx + 16:.1f}" y1="{ly - 4}" y2="{ly - 4}" '
            f'stroke="{colour}" stroke-width="3"/><text x="{lx + 21:.1f}" y="{ly}" '
            f'class="legend">{html.escape(line.name)} (max {_fmt(peak)} {unit})</text>'
        )
    if not lines:
        out.append(
            f'<text x="{LEFT + plot_w / 2:.1f}" y="{mid:.1f}" class="empty" '
            'text-anchor="middle">no data from Prometheus for this window</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def alert_timeline(spans: list[AlertSpan], start: float, end: float) -> str:
    """Alerts as bars from first firing to resolution (an open end: still firing)."""
    width, names_w = 2 * WIDTH, 440
    plot_w = width - LEFT - names_w
    row_h = 22
    height = TOP + BOTTOM + max(1, len(spans)) * row_h
    span_s = max(1.0, end - start)

    def x(t: float) -> float:
        return LEFT + plot_w * min(1.0, max(0.0, (t - start) / span_s))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" class="chart" data-panel="alerts" role="img" '
        'aria-label="Alerts received">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{height - TOP - BOTTOM}" '
        'class="plot"/>',
    ]
    for i in range(7):
        gx = LEFT + plot_w * i / 6
        out.append(
            f'<text x="{gx:.1f}" y="{height - BOTTOM + 14}" class="tick" text-anchor="middle">'
            f"{_clock(span_s * i / 6)}</text>"
        )
    if not spans:
        out.append(
            f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + 15}" class="empty" '
            'text-anchor="middle">no alert received during the run</text>'
        )
    for i, s in enumerate(spans):
        top = TOP + i * row_h + 4
        x0 = x(s.start)
        x1 = x(s.end if s.end is not None else end)
        colour = SEVERITY_COLOURS.get(s.severity, "#7f7f7f")
        state = "still firing at the end" if s.end is None else "resolved"
        out.append(
            f'<path d="M{x0:.1f},{top} H{max(x1, x0 + 3):.1f} V{top + row_h - 8} H{x0:.1f} Z" '
            f'fill="{colour}" class="alert"><title>{html.escape(s.name)} ({s.severity}): '
            f"fired at {_clock(s.start - start)}, {state}</title></path>"
            f'<text x="{width - names_w + 8}" y="{top + 11}" class="legend">'
            f"{html.escape(s.name)} · {html.escape(s.severity or '-')} · {state}</text>"
        )
    out.append("</svg>")
    return "\n".join(out)


CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
       color: #222; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 26px 0 6px; }
.verdict { display: inline-block; padding: 3px 10px; border-radius: 4px; color: #fff;
           font-weight: 600; }
.pass { background: #2ca02c; } .fail { background: #d62728; }
table { border-collapse: collapse; margin-top: 10px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.ok { color: #1a7f1a; font-weight: 600; }
td.bad { color: #c00; font-weight: 600; } td.note { color: #555; font-size: 12px; }
.meta { color: #555; font-size: 12px; }
svg.chart { display: block; max-width: 100%; height: auto; }
.charts { display: grid; grid-template-columns: repeat(2, minmax(0, 600px)); gap: 6px 24px; }
.charts h2 { margin-top: 14px; } .charts .meta { margin: 2px 0; word-break: break-all; }
.plot { fill: #fcfcfc; stroke: #bbb; } .grid { stroke: #e6e6e6; }
.tick, .legend { font-size: 11px; fill: #444; } .unit { font-size: 11px; fill: #666; }
.series { fill: none; stroke-width: 2; } .limit { stroke: #d62728; stroke-dasharray: 6 4;
  stroke-width: 1.5; } .limit-text { font-size: 11px; fill: #d62728; }
.mark { stroke: #999; stroke-dasharray: 2 3; } .empty { font-size: 13px; fill: #999; }
"""


def render_html(data: dict[str, Any]) -> str:
    """The report page for `report_data(...)`: one file, inline CSS and SVG, no script."""
    window = data.get("window", {})
    start = float(window.get("start", 0.0))
    end = float(window.get("end", start + 1.0))
    limits = dict(data.get("limits", {}))
    marks = {str(k): float(v) for k, v in dict(data.get("marks", {})).items()}
    verdict = str(data.get("verdict", ""))
    passed = verdict.endswith("PASS")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(start))
    body = [
        f"<h1>{html.escape(str(data.get('title', 'BookGen run')))}</h1>",
        f'<p><span class="verdict {"pass" if passed else "fail"}">{html.escape(verdict)}</span> '
        f'<span class="meta">run started {when}, {end - start:.0f} s</span></p>',
        "<h2>Targets</h2>",
        '<table id="targets"><tr><th>target</th><th>measured</th><th>goal</th>'
        "<th>result</th><th>notes</th></tr>",
    ]
    for row in data.get("rows", []):
        ok = bool(row.get("ok"))
        body.append(
            f"<tr><td>{html.escape(str(row.get('target', '')))}</td>"
            f"<td>{html.escape(str(row.get('measured', '')))}</td>"
            f"<td>{html.escape(str(row.get('goal', '')))}</td>"
            f'<td class="{"ok" if ok else "bad"}">{"PASS" if ok else "FAIL"}</td>'
            f'<td class="note">{html.escape(str(row.get("note", "")))}</td></tr>'
        )
    body.append("</table>")
    series = data.get("series", {})
    panels = series.get("panels", {})
    if panels:
        body.append(
            f'<p class="meta">Charts: Prometheus {html.escape(str(series.get("prometheus", "")))}'
            f", one point every {series.get('step_s', '?')} s, rates over "
            f"{html.escape(str(series.get('rate_window', '?')))}.</p>"
        )
    else:
        body.append('<p class="meta">No Prometheus for this run: no charts of the server side.</p>')
    body.append('<div class="charts">')
    for panel in PANELS:
        if panel.key not in panels:
            continue
        limit = limits.get(panel.limit) if panel.limit else None
        lines = panel_lines(panel, panels[panel.key])
        queries = "; ".join(str(e.get("query", "")) for e in panels[panel.key])
        body.append(
            f"<div><h2>{html.escape(panel.title)}</h2>"
            + line_chart(panel, lines, start, end, limit, marks)
            + f'<p class="meta" title="{html.escape(queries)}">PromQL: '
            f"<code>{html.escape(queries[:160])}{'…' if len(queries) > 160 else ''}</code></p>"
            "</div>"
        )
    body.append("</div>")
    body.append("<h2>Alerts received</h2>")
    body.append(alert_timeline(alert_spans(list(data.get("notifications", []))), start, end))
    for note in data.get("notes", []):
        body.append(f'<p class="meta">{html.escape(str(note))}</p>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(str(data.get('title', 'BookGen run')))}</title>"
        f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(folder: Path, name: str, data: dict[str, Any]) -> Path:
    """`name`.html and the data it is drawn from, `name`-data.json, in `folder`; the page's path.

    Not `report.html`: that is Locust's own report, which may share the folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}-data.json").write_text(json.dumps(data, indent=1) + "\n")
    page = folder / f"{name}.html"
    page.write_text(render_html(data), encoding="utf-8")
    return page
