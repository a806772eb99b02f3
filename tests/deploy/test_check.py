"""`bookgen deploy check`: one line per check, exit 1 on any failure; the rules check can fail."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from bookgen.cli.deploy import deploy
from bookgen.deploy import check

RULE = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PrometheusRule",
    "metadata": {"name": "bookgen"},
    "spec": {
        "groups": [
            {
                "name": "g",
                "interval": "1m",
                "rules": [{"alert": "Up", "expr": "up == 0", "for": "0s"}],
            }
        ]
    },
}


def write_tests(root: Path, expect_alert: bool) -> None:
    alerts = [{"exp_labels": {"job": "a", "instance": "i"}}] if expect_alert else []
    tests: dict[str, Any] = {
        "rule_files": ["../bookgen.rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": 'up{job="a",instance="i"}', "values": "0x5"}],
                "alert_rule_test": [{"eval_time": "2m", "alertname": "Up", "exp_alerts": alerts}],
            }
        ],
    }
    folder = root / "alerts" / "tests"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bookgen.rules.test.yml").write_text(yaml.safe_dump(tests))
    # Another profile's tests are not run against the default rules.
    (folder / "other.test.yml").write_text(yaml.safe_dump({**tests, "rule_files": ["x.yml"]}))


@pytest.fixture
def promtool() -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool (Debian prometheus) is not installed")


@pytest.mark.usefixtures("promtool")
def test_the_alerts_tests_run_against_the_prometheus_rule(tmp_path: Path) -> None:
    write_tests(tmp_path, expect_alert=True)
    work = tmp_path / "work"
    work.mkdir()
    seen: dict[str, str] = {}
    assert "1 test groups (bookgen.rules.test.yml)" in check.promtool_test_rules(
        tmp_path, [RULE], work, seen
    )
    assert "passed" in check.promtool_test_rules(tmp_path, [RULE], work, seen)


@pytest.mark.usefixtures("promtool")
def test_a_failed_expectation_fails_the_check_on_every_overlay(tmp_path: Path) -> None:
    write_tests(tmp_path, expect_alert=False)
    work = tmp_path / "work"
    work.mkdir()
    seen: dict[str, str] = {}
    for _ in range(2):
        with pytest.raises(AssertionError, match=r"bookgen\.rules\.test\.yml"):
            check.promtool_test_rules(tmp_path, [RULE], work, seen)


def test_the_command_prints_one_line_per_check_and_fails_on_a_broken_tree(
    tmp_path: Path,
) -> None:
    result = CliRunner().invoke(deploy, ["check", "--root", str(tmp_path)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith(("PASS", "FAIL"))]
    names = [line.split(":", 1)[0] for line in lines]
    assert "FAIL  generated deploy files are fresh" in names
    assert "FAIL  docker-compose config (compose + observability)" in names
    assert any(n.startswith("FAIL  kubectl kustomize overlays/") for n in names)
    assert "check(s) failed" in result.output


def test_the_collector_check_finds_a_pipeline_naming_an_undefined_exporter(
    tmp_path: Path,
) -> None:
    shipped = Path(__file__).resolve().parents[2] / check.OTELCOL_CONFIG
    config = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    assert "2 pipelines" in check.collector_wiring(shipped.parents[3])
    config["service"]["pipelines"]["traces"]["exporters"] = ["otlp_grpc/tempo"]
    target = tmp_path / check.OTELCOL_CONFIG
    target.parent.mkdir(parents=True)
    target.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(AssertionError, match=r"traces\.exporters\.otlp_grpc/tempo"):
        check.collector_wiring(tmp_path)
