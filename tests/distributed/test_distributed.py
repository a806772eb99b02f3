"""The worker tier on several hosts (network namespaces), workers SIGKILLed while books are
written; writes reports/distributed.json. Without namespaces it runs on loopback and says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bookgen.acceptance.distributed import run
from bookgen.acceptance.netns import why_unavailable

pytestmark = [pytest.mark.distributed, pytest.mark.postgres, pytest.mark.slow]

REPORT = Path(__file__).resolve().parents[2] / "reports" / "distributed.json"


def test_books_survive_killed_workers_across_hosts() -> None:
    reason = why_unavailable()
    if reason is not None:
        print(f"\n  no network namespaces ({reason}): the scenario runs on loopback")
    result = run(REPORT)
    print("\n" + json.dumps({k: v for k, v in result.items() if k != "kills_detail"}, indent=1))
    assert json.loads(REPORT.read_text())["books"] == result["books"]
    if reason is None:
        assert result["network"] == "netns" and result["hosts"] >= 4
        # Prometheus, on a host of its own, scraped every process across the network.
        assert result["prometheus_targets_up"] == {
            "bookgen": 1,
            "bookgen-llm": 1,
            "bookgen-worker": result["worker_processes"],
        }
    assert result["kills"] >= 5
    assert result["completed"] == result["books"] >= 6, result["errors"]
    assert result["duplicate_sections"] == 0
    assert result["missing_sections"] == 0
    assert result["max_rerun_delay_s"] is not None and result["max_rerun_delay_s"] <= 90
    assert 0 < result["worker_rss_max_mb"] < 2048
