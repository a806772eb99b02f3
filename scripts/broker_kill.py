"""What each broker does when a worker is SIGKILLed mid-chapter: redelivery, duplicates, rerun.

    python scripts/broker_kill.py [--redis-url URL] [--amqp-url URL] [--lease 30] [--watch 90]

For each broker: one worker starts a one-chapter book, a second idle worker joins, the first is
killed with SIGKILL while it streams. Printed per broker: when the broker itself handed the killed
worker's message to the survivor (seen as a no-op "duplicate" delivery on its metrics), when the
section really ran again (from the store: the lease reaper), and how many duplicate deliveries
arrived within the watch window. Needs PostgreSQL on 127.0.0.1:5432 and the two brokers.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bookgen.acceptance.fleet import Fleet, Host
from throwaway_db import throwaway_database

DUPLICATES = re.compile(r'^bookgen_section_tasks_total\{outcome="duplicate"\} (\S+)$', re.M)


def duplicates(url: str) -> float:
    try:
        match = DUPLICATES.search(httpx.get(url, timeout=2).text)
    except httpx.HTTPError:
        return 0.0
    return float(match.group(1)) if match else 0.0


def measure(broker: str, url: str, lease_s: float, watch_s: float) -> dict[str, object]:
    cleanup = contextlib.ExitStack()
    database = cleanup.enter_context(throwaway_database("bookgen_broker"))
    env = {
        "BOOKGEN_SECTION_LEASE_S": f"{lease_s:g}",
        "BOOKGEN_REAP_INTERVAL_S": "5",
        "BOOKGEN_ACCESS_LOG": "false",
    }
    run_dir = Path(tempfile.mkdtemp(prefix=f"broker-{broker}-"))
    fleet = Fleet(run_dir, url, database, env=env, tokens_per_second=20.0)
    try:
        fleet.start([Host("local")])
        (job_id,) = fleet.submit(books=1, chapters=1, total_words=3000)
        first = fleet.workers[0]
        deadline = time.monotonic() + 60
        pieces: list[tuple[str, int]] = []
        while not pieces and time.monotonic() < deadline:
            pieces = [p for p in fleet.running_pieces(first.owner_prefix) if p[1] == 1]
            time.sleep(0.2)
        survivor = fleet.add_worker(Host("local"), wait=True)
        prefix = first.owner_prefix
        first.component.kill()
        killed = time.time()
        redelivered: float | None = None
        rerun: float | None = None
        while time.time() - killed < watch_s:
            if redelivered is None and duplicates(survivor.metrics_url) > 0:
                redelivered = time.time() - killed
            if rerun is None:
                started = fleet.restarted_at(pieces, prefix)
                if started and all(v is not None for v in started.values()):
                    rerun = max(v.timestamp() for v in started.values() if v) - killed
            time.sleep(0.25)
        return {
            "broker": broker,
            "broker_redelivery_s": None if redelivered is None else round(redelivered, 1),
            "rerun_s": None if rerun is None else round(rerun, 1),
            "duplicate_deliveries": duplicates(survivor.metrics_url),
            "sections_killed": len(pieces),
            "job": job_id,
        }
    finally:
        fleet.stop()
        cleanup.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/7")
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--lease", type=float, default=30.0, help="section lease (s)")
    parser.add_argument("--watch", type=float, default=90.0, help="seconds watched after a kill")
    args = parser.parse_args()
    rows = [
        measure("redis", args.redis_url, args.lease, args.watch),
        measure("rabbitmq", args.amqp_url, args.lease, args.watch),
    ]
    print(f"\nSIGKILL mid-chapter, lease {args.lease:g} s, watched {args.watch:g} s:")
    print(f"{'broker':9} {'broker redelivery':>18} {'section ran again':>18} {'duplicates':>11}")
    for row in rows:
        redelivery = row["broker_redelivery_s"]
        shown = f"{redelivery} s" if redelivery is not None else f"none in {args.watch:g} s"
        print(
            f"{row['broker']:9} {shown:>18} {str(row['rerun_s']) + ' s':>18} "
            f"{row['duplicate_deliveries']:>11g}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
