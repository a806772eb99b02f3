"""amtool validates the generated Alertmanager configs and their routing."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bookgen.slo import alertmanager
from bookgen.slo import conventions as names
from bookgen.slo.spec import Spec
from bookgen.slo.yamlio import dump_yaml


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("profile", names.PROFILES)
def test_amtool_check_config(root: Path, profile: str, amtool: str) -> None:
    result = _amtool(amtool, "check-config", str(root / names.ALERTMANAGER_FILES[profile]))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("profile", names.PROFILES)
def test_amtool_routes(root: Path, profile: str, amtool: str) -> None:
    cases = json.loads((root / names.ALERTMANAGER_TESTS_FILE).read_text(encoding="utf-8"))
    config = str(root / names.ALERTMANAGER_FILES[profile])
    assert len(cases["cases"]) >= 20
    for case in cases["cases"]:
        labels = [f"{k}={v}" for k, v in case["labels"].items()]
        result = _amtool(
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={config}",
            f"--verify.receivers={case['receiver']}",
            *labels,
        )
        assert result.returncode == 0, (case, result.stdout, result.stderr)


def _walk(node: Any) -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [(k, v) for k, v in node.items()] + [p for v in node.values() for p in _walk(v)]
    if isinstance(node, list):
        return [p for v in node for p in _walk(v)]
    return []


def test_secrets_only_from_files(spec: Spec) -> None:
    config = alertmanager.render(spec)
    keys = {k for k, _ in _walk(config)}
    for secret in ("api_url", "routing_key", "service_key", "auth_password", "auth_secret"):
        assert secret not in keys, secret
    assert {"api_url_file", "routing_key_file", "auth_password_file"} <= keys
    assert "${" not in dump_yaml(config)  # Alertmanager expands no environment variables


def test_webhook_url_and_fast_timings(spec: Spec) -> None:
    config = alertmanager.render(spec, "http://127.0.0.1:1234/x", "fast")
    urls = {v for k, v in _walk(config) if k == "url"}
    assert urls == {"http://127.0.0.1:1234/x"}
    assert config["route"]["group_wait"] == "1s"
    assert alertmanager.render(spec)["route"]["group_wait"] == "30s"
    assert all(
        c["send_resolved"] for r in config["receivers"] for c in r.get("webhook_configs", [])
    )


def test_inhibitions(spec: Spec) -> None:
    rules = alertmanager.render(spec)["inhibit_rules"]
    assert {
        "source_matchers": ['severity="critical"'],
        "target_matchers": ['severity="warning"'],
        "equal": ["alertname", "slo"],
    } in rules
    down = next(r for r in rules if "TargetDown" in r["source_matchers"][0])
    assert "Watchdog" in down["target_matchers"][0] and "!~" in down["target_matchers"][0]


def _matches(matchers: list[str], labels: dict[str, str]) -> bool:
    for matcher in matchers:
        parsed = re.fullmatch(r'(\w+)(=~|!~|!=|=)"(.*)"', matcher)
        assert parsed is not None, matcher
        name, op, value = parsed.groups()
        actual = labels.get(name, "")
        ok = {
            "=": actual == value,
            "!=": actual != value,
            "=~": re.fullmatch(value, actual) is not None,
            "!~": re.fullmatch(value, actual) is None,
        }[op]
        if not ok:
            return False
    return True


def _inhibits(spec: Spec, source: dict[str, str], target: dict[str, str]) -> bool:
    return any(
        _matches(rule["source_matchers"], source)
        and _matches(rule["target_matchers"], target)
        and all(source.get(k, "") == target.get(k, "") for k in rule.get("equal", []))
        for rule in alertmanager.render(spec)["inhibit_rules"]
    )


def test_no_worker_page_inhibits_the_missing_worker_ticket(spec: Spec) -> None:
    page = {"alertname": "BookGenWorkersMissing", "severity": "critical"}
    ticket = {"alertname": "BookGenWorkersMissing", "severity": "warning"}
    backlog = {"alertname": "BookGenSectionWaitingTooLong", "severity": "warning"}
    assert _inhibits(spec, page, ticket)
    assert not _inhibits(spec, ticket, page)
    assert not _inhibits(spec, page, backlog)  # users waiting stays visible on its own
