"""The load generator's HTTP client, figures and the capacity criterion (no server needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bookgen.acceptance.capacity import capacity_goal_rps, knee_verdict, step_breach
from bookgen.acceptance.loadgen import (
    Connection,
    GroupStats,
    Mix,
    Plan,
    build,
    quantile,
    summarise,
)
from bookgen.acceptance.project import Project


async def test_connection_reads_sized_chunked_and_closing_answers() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
    ]
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = Connection("127.0.0.1", port)
    try:
        assert await conn.request(build("GET", "/a", "h")) == (200, b"hello")
        assert await conn.request(build("POST", "/b", "h", b"{}", client="c")) == (202, b"abcde")
        assert await conn.request(build("GET", "/c", "h")) == (503, b"no")
        assert conn.writer is None  # the server said close: the next request reconnects
    finally:
        conn.close()
        server.close()
        await server.wait_closed()
    assert seen[0].startswith(b"GET /a HTTP/1.1\r\nHost: h\r\n")
    assert b"X-Client-Id: c\r\n" in seen[1] and b"Content-Length: 2\r\n" in seen[1]


def test_quantile_and_summary() -> None:
    assert quantile([0.1, 0.2, 0.3, 0.4], 0.95) == 0.4
    assert quantile([float(i) for i in range(1, 101)], 0.95) == 95.0
    stats = {"a": GroupStats([0.01] * 19 + [0.5]), "b": GroupStats([0.02, 0.02])}
    stats["b"].error("HTTP 500")
    report = summarise(stats, elapsed=2.0)
    assert report["count"] == 22 and report["errors"] == 1 and report["rps"] == 11.0
    assert report["groups"]["a"]["p95_ms"] == 10.0 and report["groups"]["a"]["max_ms"] == 500.0
    assert report["groups"]["b"]["error_samples"] == ["HTTP 500"]
    assert report["worst_group_p95_ms"] == 20.0


def test_a_step_breaks_on_p95_or_errors_only() -> None:
    def step(p95: float, errors: int = 0) -> dict[str, object]:
        group = {"p95_ms": p95, "errors": errors, "error_samples": ["HTTP 503"] * errors}
        return {"errors": errors, "groups": {"list": group, "health": {**group, "errors": 0}}}

    assert step_breach(step(199.9), 200.0) == ""
    assert step_breach(step(200.0), 200.0).startswith("p95 200 ms (list)")
    assert step_breach(step(5.0, errors=1), 200.0).startswith("1 errors")


def test_the_knee_is_said_against_slo_yaml_s_goal_either_way() -> None:
    goal = capacity_goal_rps(Project(Path(__file__).resolve().parents[2]))
    assert goal == 3000
    assert "NOT MET, knee / goal = 0.49" in knee_verdict(1475, goal)
    assert ": met, knee / goal = 1.10" in knee_verdict(3300, goal)


def test_the_mix_holds_few_of_its_books_uncancelled() -> None:
    # Submitting and cancelling at equal weights is a random walk: unbounded, the mix would hold
    # tens of books after a few thousand picks (they take the job slots of the measured books).
    plan = Plan("http://h", 1.0, mix={"generate": 1, "cancel": 1}, held_books=4)
    mix = Mix(plan, "h")
    sent = {"generate": 0, "cancel": 0}
    most = 0
    for n in range(4000):
        group, _, check = mix.request(mix.pick())
        sent[group] += 1
        if group == "generate":
            assert check(202, b'{"job_id": "j%d"}' % n) is None
        most = max(most, len(mix.mine))
    assert most == 4
    assert sent["generate"] - sent["cancel"] == len(mix.mine) <= 4
