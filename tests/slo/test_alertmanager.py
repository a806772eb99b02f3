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


SERVICE = {"service": "bookgen"}


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


def test_every_inhibition_has_an_equal_list(spec: Spec) -> None:
    rules = alertmanager.render(spec)["inhibit_rules"]
    assert len(rules) >= 3
    for rule in rules:
        assert rule["equal"], rule  # without one, a source silences every matching alert
    down = next(r for r in rules if "TargetDown" in r["source_matchers"][0])
    assert set(down["equal"]) == {"namespace", "job", "instance"}
    assert "Watchdog" in down["target_matchers"][0] and "!~" in down["target_matchers"][0]


def test_pages_tickets_and_the_watchdog_have_their_own_receivers(spec: Spec) -> None:
    for profile in names.PROFILES:
        route = alertmanager.render(spec, profile=profile)["route"]
        by_receiver = {r["receiver"]: r for r in route["routes"]}
        assert by_receiver["page"]["matchers"] == ['severity="critical"']
        assert by_receiver["ticket"]["matchers"] == ['severity="warning"']
        watchdog = by_receiver["watchdog"]
        assert watchdog["matchers"] == ['alertname="Watchdog"']
        heartbeat = spec.profile(profile).watchdog_repeat_interval
        assert names.parse_duration(watchdog["repeat_interval"]) == heartbeat
        assert names.parse_duration(watchdog["group_interval"]) == heartbeat
        # A dead man's switch needs the heartbeat far more often than the default repeat.
        assert heartbeat * 10 <= spec.profile(profile).repeat_interval
        assert route["routes"][0] is watchdog  # before severity routes: it must not be a ticket
    assert spec.profile("default").watchdog_repeat_interval <= 60


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


def test_no_worker_page_hides_only_its_own_ticket(spec: Spec) -> None:
    ticket = {**SERVICE, "alertname": "BookGenWorkersMissing", "severity": "warning"}
    page = {**ticket, "severity": "critical"}
    assert _inhibits(spec, page, ticket)
    assert not _inhibits(
        spec, {**SERVICE, "alertname": "BookGenStoreDown", "severity": "critical"}, ticket
    )


def test_an_slo_page_hides_the_tickets_of_that_slo_only(spec: Spec) -> None:
    page = {
        **SERVICE,
        "alertname": "BookGenAvailabilityErrorBudgetBurn",
        "severity": "critical",
        "slo": "availability",
    }
    burn_ticket = {**page, "severity": "warning"}
    ratio_ticket = {
        **SERVICE,
        "alertname": "BookGenAPIErrorRateHigh",
        "severity": "warning",
        "slo": "availability",
    }
    llm_ticket = {
        **SERVICE,
        "alertname": "BookGenLLMErrorsHigh",
        "severity": "warning",
        "slo": "llm",
    }
    latency = {**SERVICE, "alertname": "BookGenAPILatencyHigh", "severity": "warning"}
    assert _inhibits(spec, page, burn_ticket)
    assert _inhibits(spec, page, ratio_ticket)
    assert not _inhibits(spec, page, llm_ticket)
    assert not _inhibits(spec, page, latency)  # no slo label: not the same SLI
    assert not _inhibits(spec, burn_ticket, page)


def test_a_down_target_hides_only_the_alerts_of_that_target(spec: Spec) -> None:
    worker1 = {"job": "bookgen", "instance": "127.0.0.1:9101", "worker": "1"}
    down = {**SERVICE, **worker1, "alertname": "BookGenTargetDown", "severity": "critical"}
    its_memory = {
        **SERVICE,
        **worker1,
        "alertname": "BookGenWorkerMemoryHigh",
        "severity": "critical",
    }
    other = {**its_memory, "instance": "127.0.0.1:9100", "worker": "0"}
    burn = {
        **SERVICE,
        "alertname": "BookGenBooksErrorBudgetBurn",
        "severity": "critical",
        "slo": "books",
    }
    llm_down = {**down, "job": "bookgen-llm", "instance": "127.0.0.1:9200", "worker": ""}
    watchdog = {**SERVICE, "alertname": "Watchdog", "severity": "info"}
    assert _inhibits(spec, down, its_memory)
    assert not _inhibits(spec, down, other)
    assert not _inhibits(spec, down, burn)
    assert not _inhibits(spec, llm_down, burn)
    assert not _inhibits(spec, down, watchdog)
    assert not _inhibits(spec, down, {**down, "instance": "127.0.0.1:9100", "worker": "0"})


def test_the_local_stack_still_receives_every_alert(spec: Spec) -> None:
    """`bookgen up` gives every receiver its own webhook URL; a renamed receiver must stay in."""
    config = alertmanager.render(spec, "http://127.0.0.1:1234/alerts", "fast")
    routed = {config["route"]["receiver"]} | {r["receiver"] for r in config["route"]["routes"]}
    hooked = {r["name"] for r in config["receivers"] if r.get("webhook_configs")}
    assert routed <= hooked
    assert {"page", "ticket", "watchdog"} <= routed


def test_one_namespace_never_hides_or_joins_another(spec: Spec) -> None:
    """Staging and production in one Alertmanager: a staging page hides no production ticket,
    and their alerts are notified apart."""
    page = {
        **SERVICE,
        "alertname": "BookGenAvailabilityErrorBudgetBurn",
        "severity": "critical",
        "slo": "availability",
        "job": "bookgen",
        "namespace": "bookgen-staging",
    }
    ticket = {**page, "alertname": "BookGenAPIErrorRateHigh", "severity": "warning"}
    assert _inhibits(spec, page, ticket)
    assert not _inhibits(spec, page, {**ticket, "namespace": "bookgen"})
    down = {**SERVICE, "alertname": "BookGenTargetDown", "severity": "critical"}
    target = {"job": "bookgen", "instance": "10.0.0.7:9100", "namespace": "bookgen-staging"}
    memory = {**SERVICE, **target, "alertname": "BookGenWorkerMemoryHigh", "severity": "critical"}
    assert not _inhibits(spec, {**down, **target, "namespace": "bookgen"}, memory)
    assert "namespace" in alertmanager.render(spec)["route"]["group_by"]
