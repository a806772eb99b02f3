from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bookgen.stack import binaries
from bookgen.stack.prometheus import Intervals, dump, render, seconds


def config(rule_file: str) -> dict[str, object]:
    return render(
        worker_targets=["127.0.0.1:9100", "127.0.0.1:9101"],
        llm_target="127.0.0.1:8081",
        alertmanager_target="127.0.0.1:9093",
        rule_files=[rule_file],
        intervals=Intervals(scrape="1s", evaluation="1s"),
    )


def test_each_worker_is_a_target_of_job_bookgen_with_its_worker_label() -> None:
    rendered = config("rules.yml")
    jobs = {job["job_name"]: job for job in rendered["scrape_configs"]}  # type: ignore[attr-defined]
    assert jobs["bookgen"]["static_configs"] == [
        {"targets": ["127.0.0.1:9100"], "labels": {"worker": "0"}},
        {"targets": ["127.0.0.1:9101"], "labels": {"worker": "1"}},
    ]
    assert jobs["bookgen-llm"]["static_configs"] == [{"targets": ["127.0.0.1:8081"]}]
    assert rendered["global"] == {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }


def test_the_scrape_timeout_never_exceeds_ten_seconds() -> None:
    assert Intervals(scrape="15s", evaluation="15s").scrape_timeout == "10s"


@pytest.mark.parametrize(
    ("text", "expected"), [("1m30s", 90.0), ("500ms", 0.5), ("0s", 0.0), ("2h", 7200.0), (3, 3.0)]
)
def test_durations(text: str, expected: float) -> None:
    assert seconds(text) == expected


def test_promtool_accepts_the_config(tmp_path: Path) -> None:
    try:
        promtool = binaries.find("promtool")
    except binaries.MissingBinaryError:
        pytest.skip("promtool is not installed")
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": []}]}))
    path = tmp_path / "prometheus.yml"
    path.write_text(dump(config(str(rules))))
    result = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def celery_config(scrape: str) -> dict[str, Any]:
    return render(
        worker_targets=["127.0.0.1:9100"],
        llm_target="127.0.0.1:8081",
        alertmanager_target="127.0.0.1:9093",
        rule_files=[],
        intervals=Intervals(scrape=scrape, evaluation=scrape),
        celery_workers=["127.0.0.1:9200", "127.0.0.1:9201"],
        broker_target="127.0.0.1:9121",
        store_target="127.0.0.1:9187",
        celery_target="127.0.0.1:9808",
    )


def test_the_celery_engine_adds_one_job_per_tier_with_a_target_per_worker() -> None:
    jobs = {job["job_name"]: job for job in celery_config("1s")["scrape_configs"]}
    assert list(jobs) == [
        "bookgen",
        "bookgen-llm",
        "bookgen-worker",
        "bookgen-broker",
        "bookgen-store",
        "bookgen-celery",
    ]
    assert jobs["bookgen-worker"]["static_configs"] == [
        {"targets": ["127.0.0.1:9200"], "labels": {"worker": "0"}},
        {"targets": ["127.0.0.1:9201"], "labels": {"worker": "1"}},
    ]
    assert jobs["bookgen-store"]["static_configs"] == [{"targets": ["127.0.0.1:9187"]}]


@pytest.mark.parametrize(
    ("scrape", "interval", "timeout"), [("1s", "5s", "5s"), ("15s", "15s", "10s")]
)
def test_celery_exporter_gets_time_for_its_two_broadcasts(
    scrape: str, interval: str, timeout: str
) -> None:
    jobs = {job["job_name"]: job for job in celery_config(scrape)["scrape_configs"]}
    assert jobs["bookgen-celery"]["scrape_interval"] == interval
    assert jobs["bookgen-celery"]["scrape_timeout"] == timeout


def test_promtool_accepts_the_celery_config(tmp_path: Path) -> None:
    try:
        promtool = binaries.find("promtool")
    except binaries.MissingBinaryError:
        pytest.skip("promtool is not installed")
    path = tmp_path / "prometheus.yml"
    path.write_text(dump(celery_config("1s")))
    result = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
