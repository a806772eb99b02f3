#!/usr/bin/env python3
"""Memory profile of BookGen's parts: RSS and tracemalloc figures, and leak detection by slope.

    python scripts/profile_memory.py                       # every test
    python scripts/profile_memory.py --test llm_client     # llm_client | pipeline | length | worker
    python scripts/profile_memory.py --test worker --concurrent-users 16

Each test repeats its work in rounds after a warm-up, samples RSS (psutil) and traced Python
memory (tracemalloc) after each round, and fits a line: a slope that would add more than
`--leak-mib` over the rounds is reported as a suspected leak (exit 1). The simulated model runs in
its own process so its memory is not counted. `worker` runs a real `bookgen serve` process with N
concurrent jobs and samples that process's RSS (tracemalloc does not reach into it). Every worker's
peak RSS is compared with slo.yaml's memory target.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bookgen.acceptance.clients import TRUSTED_PROXY, client_headers
from bookgen.acceptance.server import ServeProcess, SimProcess
from bookgen.service.hooks import Hooks, JobInfo
from bookgen.service.pipeline import length
from bookgen.service.settings import Settings
from bookgen.service.store.models import utcnow

MIB = 2**20
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Profile:
    test: str
    rounds: int
    unit: str
    rss_mib: list[float] = field(default_factory=list)
    traced_mib: list[float] = field(default_factory=list)
    peak_traced_mib: float = 0.0
    peak_rss_mib: float = 0.0
    rss_slope_mib_per_round: float = 0.0
    traced_slope_mib_per_round: float = 0.0
    leak_suspected: bool = False
    notes: str = ""

    def fit(self, leak_mib: float) -> None:
        """Slopes over the rounds; a leak if either would add more than `leak_mib` over them."""
        xs = [float(i) for i in range(len(self.rss_mib))]
        if len(xs) >= 3:
            self.rss_slope_mib_per_round = statistics.linear_regression(xs, self.rss_mib).slope
            if len(self.traced_mib) == len(xs):
                self.traced_slope_mib_per_round = statistics.linear_regression(
                    xs, self.traced_mib
                ).slope
        growth = max(self.rss_slope_mib_per_round, self.traced_slope_mib_per_round) * len(xs)
        self.leak_suspected = growth > leak_mib
        self.peak_rss_mib = max([self.peak_rss_mib, *self.rss_mib])


def rss_mib(pid: int | None = None) -> float:
    return float(psutil.Process(pid).memory_info().rss) / MIB


async def rounds_in_process(
    profile: Profile, work: Callable[[], Awaitable[None]], warmup: int = 2
) -> None:
    """Run `work` warm-up + `profile.rounds` times, sampling this process after each round."""
    for _ in range(warmup):
        await work()
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    for _ in range(profile.rounds):
        await work()
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        profile.traced_mib.append(current / MIB)
        profile.peak_traced_mib = max(profile.peak_traced_mib, peak / MIB)
        profile.rss_mib.append(rss_mib())
    tracemalloc.stop()


def sim_settings(sim_url: str, concurrency: int) -> Settings:
    return Settings(
        llm_base_url=f"{sim_url}/v1",
        llm_max_concurrency=max(8, concurrency),
        chapter_concurrency=max(4, concurrency),
    )


# --- tests ------------------------------------------------------------------------------------
async def profile_llm_client(sim_url: str, users: int, rounds: int) -> Profile:
    from bookgen.service.llm.client import LLMClient

    profile = Profile("llm_client", rounds, f"{users} concurrent chats of 300 words per round")
    client = LLMClient(sim_settings(sim_url, users), Hooks())
    messages = [{"role": "user", "content": "Write about Ada Lovelace.\nTarget length: 300 words."}]

    async def work() -> None:
        results = await asyncio.gather(*(client.chat(messages) for _ in range(users)))
        assert all(r.text for r in results)

    try:
        await rounds_in_process(profile, work)
    finally:
        await client.aclose()
    return profile


class _DiscardSink:
    """Counts what the pipeline stores and keeps nothing (so only the pipeline is measured)."""

    def __init__(self) -> None:
        self.sections = 0

    async def save_outline(self, outline: Any, usage: Any) -> None:
        return None

    async def save_section(self, section: Any, usage: Any) -> None:
        self.sections += 1


async def profile_pipeline(sim_url: str, users: int, rounds: int) -> Profile:
    from bookgen.service.llm.client import LLMClient
    from bookgen.service.pipeline.book import BookWriter
    from bookgen.service.pipeline.prompts import BookSpec
    from bookgen.service.pipeline.writer import LengthPolicy

    settings = sim_settings(sim_url, users)
    profile = Profile("pipeline", rounds, f"{users} books of 3 chapters / 1,500 words per round")
    client = LLMClient(settings, Hooks())
    writer = BookWriter(
        llm=client,
        hooks=Hooks(),
        policy=LengthPolicy(settings.length_tolerance, settings.length_max_attempts),
        chapter_concurrency=settings.chapter_concurrency,
    )

    async def one() -> None:
        spec = BookSpec(uuid.uuid4().hex, "Ada Lovelace", 3, 1500, settings.model)
        job = JobInfo(spec.job_id, spec.chapters, spec.total_words, spec.model, utcnow())
        sink = _DiscardSink()
        await writer.write(spec, job, sink)
        assert sink.sections == spec.chapters + 2

    async def work() -> None:
        await asyncio.gather(*(one() for _ in range(users)))

    try:
        await rounds_in_process(profile, work)
    finally:
        await client.aclose()
    return profile


async def profile_length(rounds: int) -> Profile:
    profile = Profile("length", rounds, "500 validations + trims of a 2,700-word chapter per round")
    sentence = "Ada studied the engine's plans with care, and wrote notes longer than the paper. "
    text = sentence * 200  # ~2,800 words

    async def work() -> None:
        low, high = length.bounds(2550, 0.05)
        for _ in range(500):
            words = length.count_words(text)
            if words > high:
                trimmed = length.trim_to_sentence(text, high, low)
                assert low <= length.count_words(trimmed) <= high
            length.deviation(words, 2550)

    await rounds_in_process(profile, work)
    return profile


def profile_worker(sim_url: str, users: int, rounds: int, run_dir: Path) -> Profile:
    """One `bookgen serve` worker process running `users` jobs at once, `rounds` times."""
    profile = Profile("worker", rounds, f"{users} concurrent jobs of 5 chapters / 5,000 words")
    env = {
        "BOOKGEN_JOB_CONCURRENCY": str(users),
        "BOOKGEN_MAX_QUEUE": str(max(200, users * 2)),
        "BOOKGEN_RATE_LIMIT": "100000/minute",
        "BOOKGEN_LLM_MAX_CONCURRENCY": str(max(64, users * 5)),
        # This script is the users' edge: each user's address, in X-Forwarded-For, keys its limits.
        "BOOKGEN_FORWARDED_ALLOW_IPS": TRUSTED_PROXY,
    }
    with ServeProcess(run_dir, 1, env, llm_url=f"{sim_url}/v1") as server:
        pid = server.pids()[-1]
        peak = rss_mib(pid)
        with httpx.Client(base_url=server.url, timeout=10.0) as http:
            for _ in range(rounds):
                ids = []
                for user in range(users):
                    response = http.post(
                        "/api/v1/biographies/generate",
                        json={"character": "Ada Lovelace", "chapters": 5, "total_words": 5000},
                        headers=client_headers(f"user-{user}"),
                    )
                    response.raise_for_status()
                    ids.append(response.json()["job_id"])
                pending = set(ids)
                for _ in range(1200):  # bounded: 10 minutes at most
                    peak = max(peak, rss_mib(pid))
                    for job_id in list(pending):
                        state = http.get(f"/api/v1/biographies/{job_id}/status").json()["status"]
                        if state in ("completed", "failed", "cancelled"):
                            pending.discard(job_id)
                    if not pending:
                        break
                    time.sleep(0.5)
                if pending:
                    raise RuntimeError(f"{len(pending)} jobs unfinished after 10 minutes")
                profile.rss_mib.append(rss_mib(pid))
        profile.peak_rss_mib = peak
        profile.notes = f"peak RSS {peak:.1f} MiB while {users} jobs ran"
    return profile


# --- main ------------------------------------------------------------------------------------
def memory_target_mib() -> float | None:
    try:
        from bookgen.slo.spec import load_spec

        return float(load_spec(ROOT / "slo.yaml").targets.memory.max_bytes) / MIB
    except Exception:  # the target is informative here; the profile stands without it
        return None


def report(profiles: list[Profile], target: float | None) -> str:
    lines = [
        f"{'test':<11} {'rounds':>6} {'RSS start':>9} {'RSS end':>8} {'RSS peak':>8} "
        f"{'traced peak':>11} {'RSS slope/round':>15} {'traced slope':>12}  verdict"
    ]
    for p in profiles:
        start = p.rss_mib[0] if p.rss_mib else 0.0
        end = p.rss_mib[-1] if p.rss_mib else 0.0
        verdict = "LEAK?" if p.leak_suspected else "ok"
        traced = bool(p.traced_mib)  # tracemalloc sees this process only, not a server's
        traced_peak = f"{p.peak_traced_mib:.2f}M" if traced else "-"
        traced_slope = f"{p.traced_slope_mib_per_round:+.4f}M" if traced else "-"
        if target is not None and p.peak_rss_mib >= target:
            verdict += " OVER-TARGET"
        lines.append(
            f"{p.test:<11} {p.rounds:>6} {start:>8.1f}M {end:>7.1f}M {p.peak_rss_mib:>7.1f}M "
            f"{traced_peak:>11} {p.rss_slope_mib_per_round:>+14.3f}M "
            f"{traced_slope:>12}  {verdict}"
        )
        lines.append(f"{'':<11} {p.unit}{'; ' + p.notes if p.notes else ''}")
    if target is not None:
        lines.append(f"memory target per worker (slo.yaml): {target:.0f} MiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--test", choices=["all", "llm_client", "pipeline", "length", "worker"], default="all"
    )
    parser.add_argument("--concurrent-users", type=int, default=8, help="concurrent work items")
    parser.add_argument("--rounds", type=int, default=8, help="measured rounds per test")
    parser.add_argument("--leak-mib", type=float, default=8.0, help="growth over the rounds")
    parser.add_argument(
        "--tokens-per-second", type=float, default=4000.0, help="sim speed per stream"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    wanted = ["llm_client", "pipeline", "length", "worker"] if args.test == "all" else [args.test]
    profiles: list[Profile] = []
    with (
        tempfile.TemporaryDirectory(prefix="bookgen-memory-") as tmp,
        SimProcess(Path(tmp) / "sim", tokens_per_second=args.tokens_per_second) as sim,
    ):
        for name in wanted:
            print(f"profiling {name} ...", file=sys.stderr, flush=True)
            users, rounds = args.concurrent_users, args.rounds
            if name == "llm_client":
                profile = asyncio.run(profile_llm_client(sim.url, users, rounds))
            elif name == "pipeline":
                profile = asyncio.run(profile_pipeline(sim.url, users, rounds))
            elif name == "length":
                profile = asyncio.run(profile_length(rounds))
            else:
                profile = profile_worker(sim.url, users, max(3, rounds // 2), Path(tmp) / "w")
            profile.fit(args.leak_mib)
            profiles.append(profile)
    target = memory_target_mib()
    print(report(profiles, target))
    if args.json:
        args.json.write_text(json.dumps([asdict(p) for p in profiles], indent=2))
    over = target is not None and any(p.peak_rss_mib >= target for p in profiles)
    return 1 if over or any(p.leak_suspected for p in profiles) else 0


if __name__ == "__main__":
    sys.exit(main())
